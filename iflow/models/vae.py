"""The identifiable VAE (Khemakhem et al. 2020) and its non-identifiable baselines.

    p(x, z | u) = p(x | z) p(z | u),      q(z | x, u) = N(mu(x, u), diag sigma^2(x, u))

    ELBO(x, u) = E_q[log p(x | z)] - KL(q(z | x, u) || p(z | u))       <= log p(x | u)

The prior p(z | u) is the shared :class:`~iflow.priors.ConditionalExpFamilyPrior`
(iVAE) or :class:`~iflow.priors.StandardNormalPrior` with an encoder that
ignores u (VAE, beta-VAE, beta-TC-VAE). With ``product_posterior`` the
posterior is a label-free factor times the prior (pi-VAE, Zhou & Wei 2020),

    q(z | x, u)  ∝  N(z; m(x), diag v(x)) p(z | u),

Gaussian in closed form for the Gaussian prior families, so u enters q
through Bayes' rule and moves with the prior. The KL term is analytic for the
Gaussian prior families and a one-sample Monte-Carlo estimate otherwise.
:meth:`VAE.log_prob` is the importance-weighted bound with K samples
(Burda et al. 2016), ELBO <= IW_K <= log p(x | u), tighter as K grows.

Shapes: ``x: (batch, d)``, ``u: (batch,)`` labels or ``(batch, aux_dim)``
floats, ``z: (batch, n)``; sample axes come first, ``(K, batch, n)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..data.dataset import AuxSpec
from ..networks import mlp
from ..priors import LOG_2PI
from ..protocols import ConditionalPrior
from ..runtime import batched
from .flow_posterior import FlowPosterior

LOG_VAR_RANGE = (-12.0, 8.0)  # keeps exp(log_var) finite early in training
INITIAL_LOG_VAR = -6.0  # posteriors start narrow, so early decoders see informative z (less collapse)
IW_CHUNK = 10  # importance samples per decoder pass in log_prob (bounds memory)


class GaussianEncoder(nn.Module):
    """q(z | x, u) = N(mean, diag var), an MLP on x with u added at the first layer.

    Integer labels enter through an embedding table, float u through a linear
    map; with ``aux=None`` the encoder is q(z | x) (the VAE baselines).
    """

    def __init__(self, x_dim: int, latent_dim: int, aux: AuxSpec | None, hidden: int = 64, layers: int = 3) -> None:
        super().__init__()
        self.net = mlp(x_dim, 2 * latent_dim, hidden, layers)
        with torch.no_grad():
            self.net[-1].bias[latent_dim:] = INITIAL_LOG_VAR
        width = self.net[0].out_features
        self.aux: nn.Module | None = None
        if aux is not None and aux.kind == "labels":
            self.aux = nn.Embedding(aux.n_labels, width)
            nn.init.zeros_(self.aux.weight)
        elif aux is not None:
            self.aux = nn.Linear(aux.aux_dim, width, bias=False)

    def forward(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and variance, each ``(batch, n)``."""
        h = self.net[0](x)
        if self.aux is not None:
            h = h + self.aux(u)
        mean, log_var = self.net[1:](h).chunk(2, dim=-1)
        return mean, torch.exp(log_var.clamp(*LOG_VAR_RANGE))


def normal_log_prob(z: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """Elementwise log N(z; mean, var) (broadcasting)."""
    return -0.5 * ((z - mean) ** 2 / var + torch.log(var) + LOG_2PI)


def gaussian_kl(mean_q: Tensor, var_q: Tensor, mean_p: Tensor, var_p: Tensor) -> Tensor:
    """KL(N(mean_q, diag var_q) || N(mean_p, diag var_p)) summed over the last axis."""
    return 0.5 * (torch.log(var_p / var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1).sum(-1)


def prior_moments(prior: ConditionalPrior, u: Tensor) -> tuple[Tensor, Tensor] | None:
    """Mean and variance ``(batch, n)`` of a Gaussian prior p(z | u); None for other families."""
    if not prior.family.gaussian:
        return None
    return prior.family.moments(prior.natural_params(u))


def gaussian_product(mean_a: Tensor, var_a: Tensor, mean_b: Tensor, var_b: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of N(mean_a, var_a) N(mean_b, var_b), normalised (elementwise, broadcasting).

    Precisions add and the means are precision-weighted: written with the sum of
    the variances, so a tiny variance on either side stays finite.
    """
    total = var_a + var_b
    return (mean_a * var_b + mean_b * var_a) / total, var_a * var_b / total


def aggregate_log_densities(z: Tensor, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
    """Minibatch-weighted-sampling estimates (Chen et al. 2018) of log q(z_i) and of sum_k log q(z_ik),
    q(z) being the aggregate posterior, per sample: each ``(M,)``.

    log q(z_i) ~ logsumexp_j log q(z_i | x_j) - log(N M), likewise per component.
    The data-set size N only adds constants, which have no gradient; we take N = M,
    so the values are shifted, their gradients are not.
    """
    log_q = normal_log_prob(z.unsqueeze(1), mean.unsqueeze(0), var.unsqueeze(0))  # (M, M, n)
    log_norm = 2 * math.log(z.shape[0])
    return torch.logsumexp(log_q.sum(-1), dim=1) - log_norm, (torch.logsumexp(log_q, dim=1) - log_norm).sum(-1)


def total_correlation(z: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """TC = KL(q(z) || prod_k q(z_k)) per sample, from :func:`aggregate_log_densities` (shifted by a constant)."""
    log_joint, log_marginals = aggregate_log_densities(z, mean, var)
    return log_joint - log_marginals


def weighted_elbo(
    log_px: Tensor, log_q: Tensor, log_prior: Tensor, z: Tensor, mean: Tensor, var: Tensor,
    weights: tuple[float, float, float, float],
) -> Tensor:  # fmt: skip
    """The ELBO's terms re-weighted as in the iVAE authors' code, per sample ``(M,)``:

        a log p(x | z) - b [log q(z | x, u) - log q(z)] - c [log q(z) - sum_k log q(z_k)]
                       - d [sum_k log q(z_k) - log p(z | u)]

    (reconstruction, index-code mutual information, total correlation, dimension-wise KL;
    ``weights`` = (a, b, c, d), all 1 the one-sample ELBO). ``log_px, log_q, log_prior: (M,)`` at
    the draw ``z: (M, n)`` of the Gaussian q with ``mean, var: (M, n)``.
    """
    a, b, c, d = weights
    log_joint, log_marginals = aggregate_log_densities(z, mean, var)
    mutual_information, tc, dimension_kl = log_q - log_joint, log_joint - log_marginals, log_marginals - log_prior
    return a * log_px - b * mutual_information - c * tc - d * dimension_kl


class VAE(nn.Module):
    """A VAE with a (conditional) prior; the iVAE when ``prior`` is conditional.

    Args:
        encoder: q(z | x, u), returns mean and variance.
        decoder: network z -> parameters of p(x | z).
        observation: one of :mod:`iflow.models.decoders`.
        prior: ``prior(u)`` -> distribution over z with ``natural_params``.
        beta: weight of the KL term (beta-VAE), or of the TC term when ``tc``.
        tc: beta-TC-VAE objective: ELBO - (beta - 1) TC.
        anneal_steps: the KL weight rises linearly from 0 to 1 over this many
            training steps (0: no annealing); counted in the ``step`` buffer.
        iw_samples: K of the importance-weighted bound in :meth:`log_prob`.
        train_samples: K of the training objective: 1 for the (beta-weighted, annealed)
            ELBO, K > 1 for the importance-weighted bound (IWAE, Burda et al. 2016), which
            is tighter, so it penalises posteriors that are not Gaussian less; it has no
            beta, TC or annealing weights.
        product_posterior: q(z | x, u) is the encoder's (label-free) Gaussian times the
            prior p(z | u), normalised (:func:`gaussian_product`); needs a Gaussian prior.
            The M-step then moves q with the prior, so it is an EM step, not the exact
            maximiser over the prior: with one factor variance v, its fixed point is a
            prior variance of Var(m) - v per label (m: the factor means), and 0 (the
            posterior collapses onto the prior) where v exceeds that spread.
        posterior_flow: a conditional flow bending the Gaussian q (:mod:`iflow.models.flow_posterior`);
            its KL is a one-sample Monte-Carlo estimate. None: q is the Gaussian.
        objective_weights: (a, b, c, d) of :func:`weighted_elbo`, the iVAE authors' re-weighted
            objective, in place of the ELBO (Gaussian q, train_samples 1, no TC); None: the ELBO.
    """

    sample_kind = "decoder mean E[x | z] at prior draws z ~ p(z | u)"

    def __init__(
        self,
        encoder: GaussianEncoder,
        decoder: nn.Module,
        observation: nn.Module,
        prior: ConditionalPrior,
        beta: float = 1.0,
        tc: bool = False,
        anneal_steps: int = 0,
        iw_samples: int = 100,
        train_samples: int = 1,
        product_posterior: bool = False,
        posterior_flow: FlowPosterior | None = None,
        objective_weights: tuple[float, float, float, float] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.observation = observation
        self.prior = prior
        self.beta = beta
        self.tc = tc
        self.anneal_steps = anneal_steps
        self.iw_samples = iw_samples
        self.train_samples = train_samples
        if train_samples > 1 and (beta != 1.0 or tc or anneal_steps > 0):
            raise ValueError("the importance-weighted objective (train_samples > 1) needs beta 1, no TC and no annealing")
        if product_posterior and not prior.family.gaussian:
            raise ValueError(f"a product posterior needs a Gaussian prior, not {prior.family.name!r}")
        if posterior_flow is not None and (tc or objective_weights is not None):
            raise ValueError("the total-correlation terms need a Gaussian posterior, not a flow posterior")
        if objective_weights is not None and (train_samples > 1 or tc):
            raise ValueError("objective weights replace the ELBO: they need train_samples 1 and no TC")
        self.product_posterior = product_posterior
        self.posterior_flow = posterior_flow
        self.objective_weights = objective_weights
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def encode_kind(self) -> str:
        if self.posterior_flow is None:
            return "posterior mean E[z | x, u]"
        return "the flow posterior's z at the centre of its Gaussian noise (eps = 0)"

    @property
    def likelihood(self) -> str:
        return f"importance-weighted lower bound, K = {self.iw_samples}"

    def posterior(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance ``(batch, n)`` of q(z | x, u): the encoder's, or with
        ``product_posterior`` the encoder's times p(z | u). Every use of q goes through here."""
        mean, var = self.encoder(x, u)
        if self.product_posterior:
            return gaussian_product(mean, var, *prior_moments(self.prior, u))
        return mean, var

    def draw(self, x: Tensor, mean: Tensor, var: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """z ~ q(z | x, u) from standard-normal ``eps: (..., batch, n)`` and log q(z | x, u):
        ``(..., batch, n)``, ``(..., batch)``; q has the Gaussian's ``mean, var`` (bent by the flow, if any)."""
        if self.posterior_flow is not None:
            return self.posterior_flow(x, mean, var, eps)
        z = mean + var.sqrt() * eps
        return z, normal_log_prob(z, mean, var).sum(-1)

    def kl(self, mean: Tensor, var: Tensor, z: Tensor, u: Tensor, log_q: Tensor | None = None) -> Tensor:
        """KL(q(z | x, u) || p(z | u)) per sample: analytic for a Gaussian q and prior, else one-sample MC
        at the draw ``z`` with density ``log_q`` (default: that of the Gaussian ``mean, var``)."""
        moments = prior_moments(self.prior, u)
        if moments is not None and self.posterior_flow is None:
            return gaussian_kl(mean, var, *moments)
        if log_q is None:
            log_q = normal_log_prob(z, mean, var).sum(-1)
        return log_q - self.prior(u).log_prob(z)

    def elbo(self, x: Tensor, u: Tensor) -> Tensor:
        """One-sample ELBO per sample: ``(batch,)``."""
        mean, var = self.posterior(x, u)
        z, log_q = self.draw(x, mean, var, torch.randn_like(mean))
        return self.observation.log_prob(x, self.decoder(z)) - self.kl(mean, var, z, u, log_q)

    def kl_weight(self) -> Tensor | float:
        """Annealing factor in [0, 1], a ``()`` float64 tensor on the model's device (no host read; 1.0
        without annealing); advances one step per training call of :meth:`loss`."""
        if self.training:
            self.step += 1
        if self.anneal_steps <= 0:
            return 1.0
        return (self.step.double() / self.anneal_steps).clamp(max=1.0)

    def loss(self, x: Tensor, u: Tensor) -> Tensor:
        """Mean negative training objective of a batch: the (beta-weighted, annealed) ELBO, or
        the importance-weighted bound with K = ``train_samples`` when that is above 1."""
        if self.train_samples > 1:
            return -self.iw_bound(x, u, self.train_samples).mean()
        mean, var = self.posterior(x, u)
        z, log_q = self.draw(x, mean, var, torch.randn_like(mean))
        reconstruction = self.observation.log_prob(x, self.decoder(z))
        if self.objective_weights is not None:
            log_prior = self.prior(u).log_prob(z)
            return -weighted_elbo(reconstruction, log_q, log_prior, z, mean, var, self.objective_weights).mean()
        kl = self.kl(mean, var, z, u, log_q)
        weight = self.kl_weight()
        if self.tc:
            penalty = weight * kl + (self.beta - 1) * total_correlation(z, mean, var)
        else:
            penalty = weight * self.beta * kl
        return (penalty - reconstruction).mean()

    def log_weights(self, x: Tensor, u: Tensor, samples: int) -> Tensor:
        """log p(x | z_k) + log p(z_k | u) - log q(z_k | x, u) for z_k ~ q: ``(samples, batch)``."""
        mean, var = self.posterior(x, u)
        prior = self.prior(u)
        out = []
        for start in range(0, samples, IW_CHUNK):
            k = min(IW_CHUNK, samples - start)
            z, log_q = self.draw(x, mean, var, torch.randn((k, *mean.shape), dtype=mean.dtype, device=mean.device))
            out.append(self.observation.log_prob(x, self.decoder(z)) + prior.log_prob(z) - log_q)
        return torch.cat(out)

    def iw_bound(self, x: Tensor, u: Tensor, samples: int) -> Tensor:
        """Importance-weighted lower bound on log p(x | u) with K = ``samples``: ``(batch,)``."""
        return torch.logsumexp(self.log_weights(x, u, samples), dim=0) - math.log(samples)

    def log_prob(self, x: Tensor, u: Tensor) -> Tensor:
        """Importance-weighted lower bound on log p(x | u) with K = ``iw_samples``: ``(batch,)``."""
        return self.iw_bound(x, u, self.iw_samples)

    def expected_prior_stats(self, x: Tensor, u: Tensor) -> Tensor:
        """E_q[T(z)] under q(z | x, u) for the prior's family: ``(batch, n, n_stats)``.

        Their per-label means give the prior that maximises the ELBO (the M-step,
        :meth:`~iflow.priors.ConditionalExpFamilyPrior.fit_label_stats`).
        """
        mean, var = self.posterior(x, u)
        if self.posterior_flow is not None:  # moments of the flow posterior (Monte Carlo), as if Gaussian
            mean, var = self.posterior_flow.moments(x, mean, var)
        return self.prior.family.gaussian_expected_stats(mean, var)

    def encode(self, x: Tensor, u: Tensor) -> Tensor:
        """Posterior mean E_q[z | x, u], or with a flow posterior its z at eps = 0: ``(batch, n)``."""
        mean, var = self.posterior(x, u)
        if self.posterior_flow is not None:
            return self.posterior_flow.centre(x, mean, var)
        return mean

    def decode(self, z: Tensor) -> Tensor:
        """Mean of p(x | z): ``(batch, d)``."""
        return self.observation.mean(self.decoder(z))

    @torch.no_grad()
    def fit_prior(self, x: Tensor, u: Tensor, z: Tensor | None = None) -> None:
        """The ELBO's M-step: each label's prior from the posteriors' expected statistics E_q[T(z)]
        (``z`` is not used; with ``product_posterior`` an EM step, since q moves with the prior)."""
        self.prior.fit_label_stats(batched(self.expected_prior_stats, x, u), u)

    def final_linear(self) -> None:
        """A VAE has no flow, so no linear refit."""
        return None
