"""Conditional factorized exponential-family priors p(z | u).

    p(z | u) = prod_i Q(z_i) exp( T(z_i) . lambda_i(u) - A(lambda_i(u)) )

One module serves every model in iflow (identifiable flow, iVAE, baselines).
A *family* knows the sufficient statistics T, the base measure Q, the
log-normalizer A and how to map unconstrained network outputs onto valid
natural parameters. A *prior* maps the auxiliary variable u to natural
parameters, through an embedding table (integer labels) or an MLP (float u).

Shapes: ``z: (batch, dim)``; ``u: (batch,)`` integer labels or
``(batch, aux_dim)`` floats; natural parameters ``(batch, dim, n_stats)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .networks import mlp

LOG_2PI = math.log(2 * math.pi)
# Smallest magnitude of a negative natural parameter: bounds the variance
# (Gaussian) or scale (Laplace) from above, so log-normalizers stay finite.
MIN_NEG_PARAM = 1e-4
# Smallest variance a closed-form M-step may set (a segment whose latents collapse).
MIN_VARIANCE = 1e-4


def negative(raw: Tensor) -> Tensor:
    """Smooth map R -> (-inf, -MIN_NEG_PARAM) for coefficients that must be negative."""
    return -(F.softplus(raw) + MIN_NEG_PARAM)


def negative_inverse(value: Tensor) -> Tensor:
    """Inverse of :func:`negative`, for initialising raw parameters."""
    positive = (-value - MIN_NEG_PARAM).clamp_min(1e-12)
    return positive + torch.log(-torch.expm1(-positive))


class ExpFamily:
    """A one-dimensional exponential family, applied componentwise.

    Subclasses define ``n_stats``, the statistics ``T``, ``log_base`` (log Q),
    ``log_normalizer`` A(eta), ``constrain`` (raw -> valid eta) and ``sample``.
    """

    name: str = ""
    n_stats: int = 0
    gaussian: bool = False  # the density is Gaussian: :meth:`moments` gives its mean and variance
    centered: bool = False  # every component has location 0 whatever eta is
    unit_params: tuple[float, ...] = ()  # eta of the standard member (zero location, unit variance)

    def stats(self, z: Tensor) -> Tensor:
        """T(z): (..., dim) -> (..., dim, n_stats)."""
        raise NotImplementedError

    def log_base(self, z: Tensor) -> Tensor:
        """log Q(z), elementwise: (..., dim) -> (..., dim)."""
        return torch.zeros_like(z)

    def log_normalizer(self, eta: Tensor) -> Tensor:
        """A(eta): (..., dim, n_stats) -> (..., dim)."""
        raise NotImplementedError

    def constrain(self, raw: Tensor) -> Tensor:
        """Unconstrained (..., n_stats) -> valid natural parameters."""
        raise NotImplementedError

    def unconstrain(self, eta: Tensor) -> Tensor:
        """Inverse of :meth:`constrain`."""
        raise NotImplementedError

    def sample(self, eta: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One draw per component: (..., dim, n_stats) -> (..., dim)."""
        raise NotImplementedError

    def log_prob(self, z: Tensor, eta: Tensor) -> Tensor:
        """Elementwise log-density: (..., dim) -> (..., dim)."""
        return (self.stats(z) * eta).sum(-1) + self.log_base(z) - self.log_normalizer(eta)

    def from_mean_stats(self, mean_stats: Tensor) -> Tensor:
        """Maximum-likelihood eta given the sample mean of T(z): (..., dim, n_stats) -> same.

        The exponential-family M-step: solves grad A(eta) = mean T(z) in closed form.
        """
        raise NotImplementedError

    def gaussian_expected_stats(self, mean: Tensor, var: Tensor) -> Tensor:
        """E[T(z)] for z ~ N(mean, var) elementwise: (..., dim) -> (..., dim, n_stats).

        What a VAE's posterior q(z | x, u) contributes to the prior's M-step.
        """
        raise NotImplementedError

    def moments(self, eta: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance (..., dim) of a Gaussian family (``gaussian`` is True)."""
        raise TypeError(f"the {self.name!r} family is not Gaussian")


class Gaussian(ExpFamily):
    """Mean and variance modulated: T(z) = (z, z^2), eta = (m / v, -1 / (2 v)).

    A(eta) = -eta1^2 / (4 eta2) - log(-2 eta2) / 2 + log(2 pi) / 2.
    eta1 is free; eta2 < 0 through a softplus.
    """

    name = "gauss"
    n_stats = 2
    gaussian = True
    unit_params = (0.0, -0.5)

    def stats(self, z: Tensor) -> Tensor:
        return torch.stack([z, z * z], dim=-1)

    def log_normalizer(self, eta: Tensor) -> Tensor:
        eta1, eta2 = eta[..., 0], eta[..., 1]
        return -eta1 * eta1 / (4 * eta2) - 0.5 * torch.log(-2 * eta2) + 0.5 * LOG_2PI

    def constrain(self, raw: Tensor) -> Tensor:
        return torch.stack([raw[..., 0], negative(raw[..., 1])], dim=-1)

    def unconstrain(self, eta: Tensor) -> Tensor:
        return torch.stack([eta[..., 0], negative_inverse(eta[..., 1])], dim=-1)

    def from_mean_stats(self, mean_stats: Tensor) -> Tensor:
        mean = mean_stats[..., 0]
        variance = (mean_stats[..., 1] - mean * mean).clamp_min(MIN_VARIANCE)
        return torch.stack([mean / variance, -0.5 / variance], dim=-1)

    def gaussian_expected_stats(self, mean: Tensor, var: Tensor) -> Tensor:
        return torch.stack([mean, mean * mean + var], dim=-1)

    def moments(self, eta: Tensor) -> tuple[Tensor, Tensor]:
        variance = -0.5 / eta[..., 1]
        return eta[..., 0] * variance, variance

    def sample(self, eta: Tensor, generator: torch.Generator | None = None) -> Tensor:
        mean, variance = self.moments(eta)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + variance.sqrt() * noise


class CenteredGaussian(ExpFamily):
    """Variance only, mean 0: T(z) = z^2, eta = -1 / (2 v) < 0."""

    name = "gauss-var"
    n_stats = 1
    gaussian = True
    centered = True
    unit_params = (-0.5,)

    def stats(self, z: Tensor) -> Tensor:
        return (z * z).unsqueeze(-1)

    def log_normalizer(self, eta: Tensor) -> Tensor:
        return -0.5 * torch.log(-2 * eta[..., 0]) + 0.5 * LOG_2PI

    def constrain(self, raw: Tensor) -> Tensor:
        return negative(raw)

    def unconstrain(self, eta: Tensor) -> Tensor:
        return negative_inverse(eta)

    def from_mean_stats(self, mean_stats: Tensor) -> Tensor:
        return -0.5 / mean_stats.clamp_min(MIN_VARIANCE)

    def gaussian_expected_stats(self, mean: Tensor, var: Tensor) -> Tensor:
        return (mean * mean + var).unsqueeze(-1)

    def moments(self, eta: Tensor) -> tuple[Tensor, Tensor]:
        variance = -0.5 / eta[..., 0]
        return torch.zeros_like(variance), variance

    def sample(self, eta: Tensor, generator: torch.Generator | None = None) -> Tensor:
        std = (-0.5 / eta[..., 0]).sqrt()
        return std * torch.randn(std.shape, generator=generator, dtype=std.dtype, device=std.device)


class Laplace(ExpFamily):
    """Scale modulated, location 0: T(z) = |z|, eta = -1 / b < 0, A = log(2 / -eta)."""

    name = "laplace"
    n_stats = 1
    centered = True
    unit_params = (-(2**0.5),)  # scale 1 / sqrt 2: unit variance

    def stats(self, z: Tensor) -> Tensor:
        return z.abs().unsqueeze(-1)

    def log_normalizer(self, eta: Tensor) -> Tensor:
        return math.log(2.0) - torch.log(-eta[..., 0])

    def constrain(self, raw: Tensor) -> Tensor:
        return negative(raw)

    def unconstrain(self, eta: Tensor) -> Tensor:
        return negative_inverse(eta)

    def from_mean_stats(self, mean_stats: Tensor) -> Tensor:
        return -1.0 / mean_stats.clamp_min(MIN_VARIANCE**0.5)

    def gaussian_expected_stats(self, mean: Tensor, var: Tensor) -> Tensor:
        """E|z| for z ~ N(m, v): the folded normal's mean, s sqrt(2 / pi) exp(-m^2 / 2v) + m erf(m / s sqrt 2)."""
        std = var.sqrt()
        folded = std * math.sqrt(2 / math.pi) * torch.exp(-0.5 * mean * mean / var) + mean * torch.erf(
            mean / (std * math.sqrt(2))
        )
        return folded.unsqueeze(-1)

    def sample(self, eta: Tensor, generator: torch.Generator | None = None) -> Tensor:
        scale = -1.0 / eta[..., 0]
        uniform = torch.rand(scale.shape, generator=generator, dtype=scale.dtype, device=scale.device)
        uniform = uniform.clamp(1e-12, 1 - 1e-12) - 0.5
        return -scale * uniform.sign() * torch.log1p(-2 * uniform.abs())


FAMILIES: dict[str, ExpFamily] = {f.name: f for f in (Gaussian(), CenteredGaussian(), Laplace())}


def get_family(name: str) -> ExpFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown prior family {name!r}; choose from {sorted(FAMILIES)}") from None


def repeat_condition(n: int, u: Tensor | int, device: torch.device | None = None) -> Tensor:
    """The auxiliary input for ``n`` draws.

    One label (an int or 0-d tensor) or one float vector ``(aux_dim,)`` is repeated
    ``n`` times; a batch (``(n,)`` integer labels or ``(n, aux_dim)`` floats) is kept.
    """
    u = torch.as_tensor(u, device=device)
    single = u.dim() == 0 or (u.dim() == 1 and u.is_floating_point())
    if single:
        return u.expand(n, *u.shape)
    if u.shape[0] != n:
        raise ValueError(f"u has {u.shape[0]} rows for {n} draws")
    return u


class LabelEmbedding(nn.Module):
    """Integer labels -> unconstrained parameters, one row per label.

    ``u: (batch,)`` long in [0, n_labels) -> ``(batch, out_features)``.
    """

    def __init__(self, n_labels: int, out_features: int) -> None:
        super().__init__()
        self.n_labels = n_labels
        self.table = nn.Parameter(torch.zeros(n_labels, out_features))

    def forward(self, u: Tensor) -> Tensor:
        return self.table[u]


class FactorizedExpFamily:
    """The distribution p(z | u) for a fixed batch of natural parameters.

    ``eta: (batch, dim, n_stats)``; this is what ``prior(u)`` returns.
    """

    def __init__(self, family: ExpFamily, eta: Tensor) -> None:
        self.family = family
        self.eta = eta

    def log_prob(self, z: Tensor) -> Tensor:
        """``z: (batch, dim)`` -> ``(batch,)``."""
        return self.family.log_prob(z, self.eta).sum(-1)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """One draw per row of ``eta``: ``(batch, dim)``."""
        return self.family.sample(self.eta, generator)


class ConditionalExpFamilyPrior(nn.Module):
    """p(z | u): factorized exponential family whose natural parameters depend on u.

    Args:
        dim: number of latent components.
        family: ``"gauss"`` (mean and variance), ``"gauss-var"`` (variance only)
            or ``"laplace"`` (scale).
        n_labels: number of integer labels; builds an embedding table.
        aux_dim: dimension of continuous u; builds an MLP. Give exactly one.

    Example:
        >>> prior = ConditionalExpFamilyPrior(5, "gauss", n_labels=40)
        >>> u = torch.randint(0, 40, (8,))
        >>> prior(u).log_prob(torch.randn(8, 5)).shape
        torch.Size([8])
    """

    def __init__(
        self,
        dim: int,
        family: str = "gauss",
        n_labels: int | None = None,
        aux_dim: int | None = None,
        hidden: int = 64,
    ) -> None:
        super().__init__()
        if (n_labels is None) == (aux_dim is None):
            raise ValueError("give exactly one of n_labels (integer u) or aux_dim (float u)")
        self.dim = dim
        self.family = get_family(family)
        self.n_labels = n_labels
        self.aux_dim = aux_dim
        out = dim * self.family.n_stats
        if n_labels is not None:
            self.net: nn.Module = LabelEmbedding(n_labels, out)
        else:
            self.net = mlp(aux_dim, out, hidden)
        self.reset_to_standard_normal()

    @torch.no_grad()
    def reset_to_standard_normal(self) -> None:
        """Start every p(z_i | u) near unit variance (and zero mean)."""
        raw = self.family.unconstrain(torch.tensor(self.family.unit_params))
        last = self.net.table if isinstance(self.net, LabelEmbedding) else self.net[-1].bias
        last.copy_(raw.repeat(self.dim).expand_as(last))
        if not isinstance(self.net, LabelEmbedding):
            self.net[-1].weight.mul_(0.01)

    @property
    def fits_labels(self) -> bool:
        """Whether the closed-form M-step (:meth:`fit_labels`) applies: a prior on integer labels."""
        return self.n_labels is not None

    @torch.no_grad()
    def fit_labels(self, z: Tensor, u: Tensor) -> None:
        """Closed-form M-step: set each label's natural parameters to their MLE given ``z``.

        ``z: (n, dim)``, ``u: (n,)`` integer labels. Only for label priors (an embedding
        table); labels absent from ``u`` keep their parameters.
        """
        self.fit_label_stats(self.family.stats(z), u)

    @torch.no_grad()
    def fit_label_stats(self, stats: Tensor, u: Tensor) -> None:
        """The M-step from per-sample (expected) sufficient statistics ``stats: (n, dim, n_stats)``.

        Sets each label's eta so that grad A(eta) = the label's mean of ``stats``: the
        maximiser over the prior of sum_i E[log p(z_i | u_i)] when ``stats`` are E[T(z_i)]
        (for a VAE, under q(z | x_i, u_i): the ELBO's exact M-step).
        """
        if not self.fits_labels:
            raise TypeError("fit_labels needs a prior on integer labels (an embedding table)")
        stats = stats.reshape(stats.shape[0], -1)
        counts = torch.bincount(u, minlength=self.n_labels).to(stats.dtype)
        sums = stats.new_zeros(self.n_labels, stats.shape[1]).index_add_(0, u, stats)
        seen = counts > 0  # kept as a mask (no boolean indexing: that reads the count back to the host)
        mean_stats = (sums / counts.clamp_min(1)[:, None]).view(-1, self.dim, self.family.n_stats)
        raw = self.family.unconstrain(self.family.from_mean_stats(mean_stats)).reshape(self.net.table.shape)
        self.net.table.copy_(torch.where(seen[:, None], raw.to(self.net.table.dtype), self.net.table))

    def natural_params(self, u: Tensor) -> Tensor:
        """lambda(u): ``(batch, dim, n_stats)``, always valid for the family."""
        raw = self.net(u).view(u.shape[0], self.dim, self.family.n_stats)
        return self.family.constrain(raw)

    def forward(self, u: Tensor) -> FactorizedExpFamily:
        return FactorizedExpFamily(self.family, self.natural_params(u))

    def log_prob(self, z: Tensor, u: Tensor) -> Tensor:
        """``z: (batch, dim)``, ``u: (batch,)|(batch, aux_dim)`` -> ``(batch,)``."""
        return self(u).log_prob(z)

    def sample(self, u: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One z per row of u: ``(batch, dim)``."""
        return self(u).sample(generator)


class StandardNormalPrior(nn.Module):
    """N(0, I), ignoring u: the non-identifiable baseline behind the same interface."""

    family = FAMILIES["gauss"]
    n_labels = None
    fits_labels = False  # nothing to fit: the prior has no parameters

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("_anchor", torch.zeros(()))  # follows .to(device/dtype)

    def natural_params(self, u: Tensor) -> Tensor:
        eta = self._anchor.new_tensor(self.family.unit_params)
        return eta.expand(u.shape[0], self.dim, self.family.n_stats)

    def forward(self, u: Tensor) -> FactorizedExpFamily:
        return FactorizedExpFamily(self.family, self.natural_params(u))

    def log_prob(self, z: Tensor, u: Tensor | None = None) -> Tensor:
        return -0.5 * (z * z).sum(-1) - 0.5 * self.dim * LOG_2PI

    def sample(self, u: Tensor, generator: torch.Generator | None = None) -> Tensor:
        n = u.shape[0]
        return torch.randn(n, self.dim, generator=generator, dtype=self._anchor.dtype, device=self._anchor.device)
