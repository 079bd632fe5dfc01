"""Conditional priors beyond the exponential family: Student-t and learned-shape label priors.

Both are factorized over the latent components and indexed by integer labels u,
with one row of parameters per label (the conditional independence of the sources
given u that identifiability needs; Hyvärinen, Sasaki and Turner, AISTATS 2019,
prove it without an exponential family, given sufficient variability over u).

- ``student-t``: z_i | u ~ t(nu_i; m_{u,i}, s_{u,i}), a free location and scale per
  label and a tail index nu_i per component shared by the labels, for mean-modulated
  heavy-tailed sources (``nu -> inf`` is the Gaussian prior). A location-scale t is not an exponential family, so its
  per-epoch M-step is the t's EM (weights w = (nu + 1) / (nu + r^2), then weighted
  mean and variance) at the current nu; nu is learned by gradient with the flow.
- ``shape``: z_i | u = m_{u,i} + s_{u,i} e_i, the standardised e_i with a learned density
  (a K-Gaussian mixture per component shared by the labels): a location-scale family whose
  shape is learned, so Gaussian, Laplace, Student-t, uniform (approximately) and skewed
  sources, each mean- and scale-modulated, are all near members. Its M-step is ECM: each
  label's location and scale given the shape, then the shape's mixture EM.

Both M-steps start from the current parameters and take ``em_steps`` iterations,
so they do not decrease the prior's likelihood of the latents given; between them
every parameter also gets gradient steps. They need latents, not sufficient
statistics, so the VAE family (whose M-step uses E_q[T(z)]) does not take them.

Shapes: ``z: (batch, dim)``; ``u: (batch,)`` integer labels; parameters ``(batch, dim, n_params)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import UserError, param
from .priors import MIN_VARIANCE, ExpFamily

MIN_DOF = 0.5  # smallest tail index nu of the Student-t prior (nu = 1 is the Cauchy)
START_DOF = 5.0  # nu at the start: heavier tails than a Gaussian, finite fourth moment
SHAPE_COMPONENTS = 5
EM_STEPS = 10


class DensityFamily(ExpFamily):
    """The facts the trainer reads of a prior that is not an exponential family.

    Not Gaussian (no linear refit, no product posterior) and not centered; it has no
    sufficient statistics, so the exponential-family methods are not available.
    """

    unit_params = ()

    def __init__(self, name: str, n_params: int) -> None:
        self.name, self.n_stats = name, n_params


def label_sums(values: Tensor, u: Tensor, n_labels: int) -> Tensor:
    """Per-label sums of ``values: (n, ...)`` over rows with label ``u: (n,)``: ``(n_labels, ...)``."""
    flat = values.reshape(values.shape[0], -1)
    sums = flat.new_zeros(n_labels, flat.shape[1]).index_add_(0, u, flat)
    return sums.view(n_labels, *values.shape[1:])


def student_t_log_prob(z: Tensor, loc: Tensor, log_scale: Tensor, dof: Tensor) -> Tensor:
    """Elementwise log-density of t(dof; loc, exp(log_scale)) at ``z`` (all broadcast)."""
    r = (z - loc) * torch.exp(-log_scale)
    return (
        torch.lgamma((dof + 1) / 2)
        - torch.lgamma(dof / 2)
        - 0.5 * torch.log(dof * math.pi)
        - log_scale
        - (dof + 1) / 2 * torch.log1p(r * r / dof)
    )


def standard_student_t(dof: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One t(dof) draw per entry of ``dof``, by Bailey's polar method (exact; acceptance pi / 4)."""
    out = torch.full_like(dof, math.nan)
    missing = torch.ones_like(dof, dtype=torch.bool)
    while missing.any():
        n = int(missing.sum())
        a, b = (2 * torch.rand(2, n, generator=generator, dtype=dof.dtype, device=dof.device) - 1).unbind(0)
        w = a * a + b * b
        ok = (w <= 1) & (w > 0)
        nu = dof[missing][ok]
        draws = a[ok] * torch.sqrt(nu * (w[ok] ** (-2 / nu) - 1) / w[ok])
        index = missing.nonzero(as_tuple=True)
        chosen = tuple(i[ok] for i in index)
        out[chosen] = draws
        missing[chosen] = False
    return out


class LabelDensity:
    """p(z | u) for a batch of labels: what a flexible prior's ``prior(u)`` returns."""

    def __init__(self, prior: LabelPrior, u: Tensor) -> None:
        self.prior, self.u = prior, u

    def log_prob(self, z: Tensor) -> Tensor:
        """``z: (batch, dim)`` -> ``(batch,)``."""
        return self.prior.log_prob(z, self.u)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """One draw per label: ``(batch, dim)``."""
        return self.prior.sample(self.u, generator)


class LabelPrior(nn.Module):
    """What the flexible label priors share: labels only, an EM M-step on latents, no statistics."""

    family: DensityFamily
    fits_labels = True  # the EM M-step on latents (fit_labels)

    def __init__(self, dim: int, n_labels: int | None, aux_dim: int | None = None) -> None:
        super().__init__()
        if n_labels is None or aux_dim is not None:
            raise UserError(f"{param('prior')} {self.family.name} needs integer labels u (one row of parameters each)")
        self.dim, self.n_labels = dim, n_labels

    def forward(self, u: Tensor) -> LabelDensity:
        return LabelDensity(self, u)

    def fit_label_stats(self, stats: Tensor, u: Tensor) -> None:
        raise TypeError(f"the {self.family.name!r} prior is not an exponential family: fit it to latents (fit_labels)")

    @torch.no_grad()
    def fit_labels(self, z: Tensor, u: Tensor, em_steps: int = EM_STEPS) -> None:
        """``em_steps`` EM iterations from the current parameters, given latents ``z: (n, dim)``.

        Labels absent from ``u`` keep their parameters (those of :class:`ConditionalShapePrior`
        follow the shared shape's re-standardisation, so that their density is that of the new shape).
        """
        z = z.to(self.table_dtype)
        counts = torch.bincount(u, minlength=self.n_labels).to(z.dtype)
        seen = counts > 0
        for _ in range(em_steps):
            self.em_step(z, u, counts, seen)

    @property
    def table_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def em_step(self, z: Tensor, u: Tensor, counts: Tensor, seen: Tensor) -> None:
        raise NotImplementedError


class ConditionalStudentTPrior(LabelPrior):
    """z_i | u ~ t(nu_i; loc[u, i], scale[u, i]): mean- and scale-modulated heavy-tailed sources.

    Example:
        >>> prior = ConditionalStudentTPrior(5, n_labels=40)
        >>> prior.log_prob(torch.randn(8, 5), torch.randint(0, 40, (8,))).shape
        torch.Size([8])
    """

    family = DensityFamily("student-t", 3)

    def __init__(self, dim: int, n_labels: int | None = None, aux_dim: int | None = None) -> None:
        super().__init__(dim, n_labels, aux_dim)
        self.loc = nn.Parameter(torch.zeros(n_labels, dim))
        unit_scale = 0.5 * math.log((START_DOF - 2) / START_DOF)  # unit variance at the starting nu
        self.log_scale = nn.Parameter(torch.full((n_labels, dim), unit_scale))
        raw_dof = math.log(math.expm1(START_DOF - MIN_DOF))  # softplus^-1
        self.raw_dof = nn.Parameter(torch.full((dim,), raw_dof))

    @property
    def dof(self) -> Tensor:
        """nu per component: ``(dim,)``, > MIN_DOF."""
        return F.softplus(self.raw_dof) + MIN_DOF

    def natural_params(self, u: Tensor) -> Tensor:
        """Not natural parameters (the t is not exponential): (loc, log scale, nu), ``(batch, dim, 3)``."""
        return torch.stack([self.loc[u], self.log_scale[u], self.dof.expand(u.shape[0], self.dim)], dim=-1)

    def log_prob(self, z: Tensor, u: Tensor) -> Tensor:
        """``z: (batch, dim)``, ``u: (batch,)`` -> ``(batch,)``."""
        return student_t_log_prob(z, self.loc[u], self.log_scale[u], self.dof).sum(-1)

    def sample(self, u: Tensor, generator: torch.Generator | None = None) -> Tensor:
        dof = self.dof.detach().expand(u.shape[0], self.dim).contiguous()
        return self.loc[u].detach() + self.log_scale[u].detach().exp() * standard_student_t(dof, generator)

    def em_step(self, z: Tensor, u: Tensor, counts: Tensor, seen: Tensor) -> None:
        """The t's EM at fixed nu: weights (nu + 1) / (nu + r^2), weighted location and scale."""
        dof = self.dof
        loc, scale = self.loc[u], self.log_scale[u].exp()
        r = (z - loc) / scale
        w = (dof + 1) / (dof + r * r)
        new_loc = label_sums(w * z, u, self.n_labels) / label_sums(w, u, self.n_labels).clamp_min(1e-12)
        resid = z - new_loc[u]
        var = label_sums(w * resid * resid, u, self.n_labels) / counts.clamp_min(1)[:, None]
        self.loc[seen] = new_loc[seen]
        self.log_scale[seen] = 0.5 * torch.log(var[seen].clamp_min(MIN_VARIANCE))


class ConditionalShapePrior(LabelPrior):
    """z_i | u = loc[u, i] + scale[u, i] e_i, e_i ~ sum_k pi[i, k] N(mu[i, k], sigma[i, k]^2).

    A location-scale family per component whose standardised shape is learned (a K-Gaussian
    mixture shared by the labels, kept at zero mean and unit variance): Gaussian, Laplace,
    Student-t, uniform or skewed sources, each mean- and scale-modulated, are all close members.
    The M-step is ECM: (1) each label's location and scale given the shape (the root of a
    quadratic), (2) the shape's mixture EM on the standardised latents of every label, then
    the shape re-standardised (its mean and standard deviation moved into location and scale).

    Example:
        >>> prior = ConditionalShapePrior(5, n_labels=40)
        >>> prior.log_prob(torch.randn(8, 5), torch.randint(0, 40, (8,))).shape
        torch.Size([8])
    """

    family = DensityFamily("shape", 2 + 3 * SHAPE_COMPONENTS)

    def __init__(
        self, dim: int, n_labels: int | None = None, aux_dim: int | None = None, components: int = SHAPE_COMPONENTS
    ) -> None:
        super().__init__(dim, n_labels, aux_dim)
        self.components = components
        # start as a unit Gaussian: equal weights, means spread over [-0.5, 0.5], total variance 1
        spread = 0.5 * torch.linspace(-1, 1, components) if components > 1 else torch.zeros(1)
        self.loc = nn.Parameter(torch.zeros(n_labels, dim))
        self.log_scale = nn.Parameter(torch.zeros(n_labels, dim))
        self.shape_logits = nn.Parameter(torch.zeros(dim, components))
        self.shape_loc = nn.Parameter(spread.repeat(dim, 1))
        shape_var = 1 - (spread * spread).mean()
        self.shape_log_scale = nn.Parameter(torch.full((dim, components), 0.5 * math.log(shape_var)))

    def natural_params(self, u: Tensor) -> Tensor:
        """Not natural parameters: (loc, log scale, shape logits, means, log scales), ``(batch, dim, 2 + 3 K)``."""
        shape = torch.cat([self.shape_logits, self.shape_loc, self.shape_log_scale], -1).expand(u.shape[0], -1, -1)
        return torch.cat([self.loc[u].unsqueeze(-1), self.log_scale[u].unsqueeze(-1), shape], dim=-1)

    def shape_log_probs(self, e: Tensor) -> Tensor:
        """log pi_k + log N(e_i; mu_k, sigma_k^2) of standardised latents ``e: (batch, dim)``: ``(batch, dim, K)``."""
        r = (e.unsqueeze(-1) - self.shape_loc) * torch.exp(-self.shape_log_scale)
        log_normal = -0.5 * r * r - self.shape_log_scale - 0.5 * math.log(2 * math.pi)
        return torch.log_softmax(self.shape_logits, dim=-1) + log_normal

    def standardized(self, z: Tensor, u: Tensor) -> Tensor:
        return (z - self.loc[u]) * torch.exp(-self.log_scale[u])

    def log_prob(self, z: Tensor, u: Tensor) -> Tensor:
        """``z: (batch, dim)``, ``u: (batch,)`` -> ``(batch,)``."""
        log_shape = torch.logsumexp(self.shape_log_probs(self.standardized(z, u)), dim=-1)
        return (log_shape - self.log_scale[u]).sum(-1)

    def sample(self, u: Tensor, generator: torch.Generator | None = None) -> Tensor:
        weights = torch.softmax(self.shape_logits.detach(), dim=-1).expand(u.shape[0], -1, -1)
        uniform = torch.rand(weights.shape[:-1], generator=generator, dtype=weights.dtype, device=weights.device)
        k = (weights.cumsum(-1) < uniform.unsqueeze(-1)).sum(-1).clamp_max(self.components - 1)
        mu = self.shape_loc.detach().expand_as(weights).gather(-1, k.unsqueeze(-1)).squeeze(-1)
        sigma = self.shape_log_scale.detach().exp().expand_as(weights).gather(-1, k.unsqueeze(-1)).squeeze(-1)
        e = mu + sigma * torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        return self.loc[u].detach() + self.log_scale[u].detach().exp() * e

    def em_step(self, z: Tensor, u: Tensor, counts: Tensor, seen: Tensor) -> None:
        self.fit_location_scale(z, u, counts, seen)
        self.fit_shape(self.standardized(z, u))

    def fit_location_scale(self, z: Tensor, u: Tensor, counts: Tensor, seen: Tensor) -> None:
        """Each label's (loc, scale) maximising the expected log-likelihood given the responsibilities.

        With t = 1 / scale and b = -loc / scale the objective is concave; b is linear in t and t
        the positive root of A t^2 - B t - N = 0.
        """
        resp = torch.softmax(self.shape_log_probs(self.standardized(z, u)), dim=-1)
        w = resp * torch.exp(-2 * self.shape_log_scale)  # r_k / sigma_k^2: (n, dim, K)
        zk = z.unsqueeze(-1)
        sums = [label_sums(v.sum(-1), u, self.n_labels) for v in (w, w * zk, w * zk * zk, w * self.shape_loc,
                                                                   w * zk * self.shape_loc)]  # fmt: skip
        total, wz, wzz, wmu, wzmu = sums
        a = (wzz - wz * wz / total).clamp_min(1e-12)
        b = wzmu - wmu * wz / total
        n = counts[:, None]
        t = (b + torch.sqrt(b * b + 4 * a * n)) / (2 * a)
        offset = (wmu - t * wz) / total
        self.loc[seen] = (-offset / t)[seen]
        self.log_scale[seen] = (-torch.log(t)).clamp_min(0.5 * math.log(MIN_VARIANCE))[seen]

    def fit_shape(self, e: Tensor) -> None:
        """The shape's mixture EM step on standardised latents of all labels, then re-standardised."""
        resp = torch.softmax(self.shape_log_probs(e), dim=-1)  # (n, dim, K)
        mass = resp.sum(0) + 1e-12
        mu = (resp * e.unsqueeze(-1)).sum(0) / mass
        var = (resp * (e.unsqueeze(-1) - mu) ** 2).sum(0) / mass
        weights = mass / mass.sum(-1, keepdim=True)
        var = var.clamp_min(MIN_VARIANCE)
        mean = (weights * mu).sum(-1)  # (dim,)
        std = torch.sqrt((weights * (var + mu * mu)).sum(-1) - mean * mean)
        self.shape_logits.copy_(torch.log(weights))
        self.shape_loc.copy_((mu - mean[:, None]) / std[:, None])
        self.shape_log_scale.copy_(0.5 * torch.log(var) - torch.log(std)[:, None])
        self.loc.add_(self.log_scale.exp() * mean)
        self.log_scale.add_(torch.log(std))


FLEXIBLE_PRIORS: dict[str, type[LabelPrior]] = {
    "student-t": ConditionalStudentTPrior,
    "shape": ConditionalShapePrior,
}
