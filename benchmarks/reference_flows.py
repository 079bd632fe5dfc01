"""Minimal hand-written pure-torch flows of the same architectures as iflow's presets.

The yardstick of ``benchmarks/throughput.py``: each class here is the architecture
``iflow.flows.build`` builds (same layers in the same order, same coupling masks,
the same residual conditioner, the same rational-quadratic spline with linear
tails, the same conditional Gaussian prior), written out plainly in torch with
autograd for every gradient: no nflows, no hand-written backward pass. The
parameters are registered in the order and with the shapes of iflow's model, so
:func:`copy_parameters` maps one onto the other and the tests check that both
compute the same log-likelihood (tests/test_reference_flows.py).

Direction: ``forward`` maps data to latents, as in iflow.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MIN_BIN = 1e-3  # nflows' minimum bin width and height, and minimum derivative
MIN_NEG_PARAM = 1e-4  # the Gaussian prior's eta2 <= -MIN_NEG_PARAM (iflow.priors)
LOG_2PI = math.log(2 * math.pi)


class ResidualNet(nn.Module):
    """Linear, two residual blocks (relu, linear, relu, linear, plus the input), linear."""

    def __init__(self, n_in: int, n_out: int, hidden: int, blocks: int = 2) -> None:
        super().__init__()
        self.first = nn.Linear(n_in, hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                                  nn.Linear(hidden, hidden)) for _ in range(blocks))  # fmt: skip
        self.last = nn.Linear(hidden, n_out)

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, n_in) -> (batch, n_out)``."""
        h = self.first(x)
        for block in self.blocks:
            h = h + block(h)
        return self.last(h)


class Coupling(nn.Module):
    """The components where ``mask`` is 1 are transformed, conditioned on the others."""

    def __init__(self, mask: Tensor, per_feature: int, hidden: int) -> None:
        super().__init__()
        self.register_buffer("kept", torch.nonzero(mask <= 0).flatten())
        self.register_buffer("changed", torch.nonzero(mask > 0).flatten())
        self.register_buffer("order", torch.argsort(torch.cat([self.kept, self.changed])))
        self.net = ResidualNet(len(self.kept), per_feature * len(self.changed), hidden)

    def _run(self, x: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        kept, changed = x[:, self.kept], x[:, self.changed]
        params = self.net(kept).reshape(x.shape[0], len(self.changed), -1)
        y, logdet = self.transform(changed, params, inverse)
        return torch.cat([kept, y], dim=1)[:, self.order], logdet.sum(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._run(x, inverse=False)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._run(z, inverse=True)

    def transform(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class AffineCoupling(Coupling):
    """y = x exp(s) + t with s = 3 tanh(raw / 3); the net gives all shifts t, then all raw (nflows' layout)."""

    def __init__(self, mask: Tensor, hidden: int) -> None:
        super().__init__(mask, 2, hidden)

    def transform(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        flat = params.reshape(x.shape[0], -1)  # nflows' affine layout: all shifts, then all raw scales
        shift, raw = flat[:, : x.shape[1]], flat[:, x.shape[1] :]
        log_scale = 3 * torch.tanh(raw / 3)
        if inverse:
            return (x - shift) * torch.exp(-log_scale), -log_scale
        return x * torch.exp(log_scale) + shift, log_scale


def knots(sizes: Tensor, bound: float) -> Tensor:
    """The K + 1 knots -B, ..., B of bins of relative ``sizes: (..., K)`` (summing to 1)."""
    inner = 2 * bound * torch.cumsum(sizes[..., :-1], -1) - bound
    return F.pad(F.pad(inner, (1, 0), value=-bound), (0, 1), value=bound)


def rq_spline(x: Tensor, params: Tensor, bound: float, scale: float, inverse: bool) -> tuple[Tensor, Tensor]:
    """Monotone RQ spline on [-B, B], identity outside (Durkan et al. 2019), plainly on autograd.

    ``x: (batch, f)``, ``params: (batch, f, 3K - 1)``: K widths, K heights (divided by
    ``scale`` before the softmax), K - 1 inner derivatives. Returns ``(y, log|dy/dx|)``.
    """
    bins = (params.shape[-1] + 1) // 3
    widths = MIN_BIN + (1 - MIN_BIN * bins) * torch.softmax(params[..., :bins] / scale, -1)
    heights = MIN_BIN + (1 - MIN_BIN * bins) * torch.softmax(params[..., bins : 2 * bins] / scale, -1)
    end = math.log(math.expm1(1 - MIN_BIN))  # slope 1 at both ends, matching the tails
    slopes = MIN_BIN + F.softplus(F.pad(params[..., 2 * bins :], (1, 1), value=end))
    xs, ys = knots(widths, bound), knots(heights, bound)
    inside = (x >= -bound) & (x <= bound)
    clamped = x.clamp(-bound, bound)
    search = ys if inverse else xs
    k = (clamped.unsqueeze(-1) >= search[..., 1:-1]).sum(-1, keepdim=True)  # bin index
    x0, x1, y0, y1 = (t.gather(-1, i).squeeze(-1) for t in (xs, ys) for i in (k, k + 1))
    d0, d1 = (slopes.gather(-1, i).squeeze(-1) for i in (k, k + 1))
    w, h = x1 - x0, y1 - y0
    delta = h / w
    if inverse:
        a = (clamped - y0) * (d0 + d1 - 2 * delta) + h * (delta - d0)
        b = h * d0 - (clamped - y0) * (d0 + d1 - 2 * delta)
        c = -delta * (clamped - y0)
        theta = 2 * c / (-b - (b * b - 4 * a * c).clamp_min(0).sqrt())
        y = x0 + theta * w
    else:
        theta = (clamped - x0) / w
        y = y0 + h * (delta * theta**2 + d0 * theta * (1 - theta)) / (delta + (d0 + d1 - 2 * delta) * theta * (1 - theta))
    t = theta * (1 - theta)
    den = delta + (d0 + d1 - 2 * delta) * t
    logdet = torch.log(delta**2 * (d1 * theta**2 + 2 * delta * t + d0 * (1 - theta) ** 2)) - 2 * torch.log(den)
    logdet = -logdet if inverse else logdet
    return torch.where(inside, y, x), torch.where(inside, logdet, torch.zeros_like(logdet))


class SplineCoupling(Coupling):
    """The transformed components go through :func:`rq_spline`."""

    def __init__(self, mask: Tensor, hidden: int, bins: int, bound: float) -> None:
        super().__init__(mask, 3 * bins - 1, hidden)
        self.bound, self.scale = bound, math.sqrt(hidden)

    def transform(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        return rq_spline(x, params, self.bound, self.scale, inverse)


class LULinear(nn.Module):
    """y = L U x + b, L unit lower-triangular, diag(U) = softplus + 1e-3."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.bias = nn.Parameter(torch.zeros(dim))
        self.lower_entries = nn.Parameter(torch.zeros(dim * (dim - 1) // 2))
        self.upper_entries = nn.Parameter(torch.zeros(dim * (dim - 1) // 2))
        self.upper_diag_raw = nn.Parameter(torch.full((dim,), math.log(math.expm1(1 - 1e-3))))
        self.register_buffer("below", torch.tril_indices(dim, dim, -1))
        self.register_buffer("above", torch.triu_indices(dim, dim, 1))

    def factors(self) -> tuple[Tensor, Tensor, Tensor]:
        """L, U and diag(U)."""
        diag = F.softplus(self.upper_diag_raw) + 1e-3
        eye = torch.eye(self.dim, dtype=diag.dtype, device=diag.device)
        lower = eye.index_put((self.below[0], self.below[1]), self.lower_entries)
        upper = torch.diag(diag).index_put((self.above[0], self.above[1]), self.upper_entries)
        return lower, upper, diag

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        lower, upper, diag = self.factors()
        return torch.addmm(self.bias, x, (lower @ upper).t()), torch.log(diag).sum().expand(x.shape[0])

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        lower, upper, diag = self.factors()
        rhs = (z - self.bias).t()
        x = torch.linalg.solve_triangular(upper, torch.linalg.solve_triangular(lower, rhs, upper=False), upper=True)
        return x.t(), -torch.log(diag).sum().expand(z.shape[0])


class ActNorm(nn.Module):
    """y = exp(log_scale) x + shift (initialised from the first training batch, as nflows does)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("initialized", torch.tensor(False))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and not self.initialized:
            with torch.no_grad():
                std = x.std(0)
                self.log_scale.copy_(-torch.log(std))
                self.shift.copy_(-x.mean(0) / std)
                self.initialized.fill_(True)
        return torch.exp(self.log_scale) * x + self.shift, self.log_scale.sum().expand(x.shape[0])

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return (z - self.shift) * torch.exp(-self.log_scale), -self.log_scale.sum().expand(z.shape[0])


class GaussianLabelPrior(nn.Module):
    """p(z | u) = prod_i N(z_i; m_i(u), v_i(u)) in natural parameters, one table row per label."""

    def __init__(self, dim: int, n_labels: int) -> None:
        super().__init__()
        raw2 = math.log(math.expm1(0.5 - MIN_NEG_PARAM))  # eta2 = -1/2: unit variance
        self.table = nn.Parameter(torch.tensor([0.0, raw2]).repeat(n_labels, dim))

    def natural(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """eta1, eta2: ``(batch, dim)`` each."""
        raw = self.table[u].reshape(u.shape[0], -1, 2)
        return raw[..., 0], -(F.softplus(raw[..., 1]) + MIN_NEG_PARAM)

    def log_prob(self, z: Tensor, u: Tensor) -> Tensor:
        eta1, eta2 = self.natural(u)
        log_normalizer = -eta1 * eta1 / (4 * eta2) - 0.5 * torch.log(-2 * eta2) + 0.5 * LOG_2PI
        return (eta1 * z + eta2 * z * z - log_normalizer).sum(-1)

    def sample(self, u: Tensor) -> Tensor:
        eta1, eta2 = self.natural(u)
        variance = -0.5 / eta2
        return eta1 * variance + variance.sqrt() * torch.randn_like(eta1)


class ReferenceFlow(nn.Module):
    """log p(x | u) = log p(g(x) | u) + log|det J_g(x)| over a list of layers."""

    def __init__(self, layers: list[nn.Module], prior: GaussianLabelPrior) -> None:
        super().__init__()
        self.flow = nn.ModuleList(layers)
        self.prior = prior

    def forward(self, x: Tensor, u: Tensor) -> Tensor:
        """``x: (batch, dim)``, ``u: (batch,)`` -> log p(x | u): ``(batch,)``."""
        logdet = x.new_zeros(x.shape[0])
        for layer in self.flow:
            x, ld = layer(x)
            logdet = logdet + ld
        return self.prior.log_prob(x, u) + logdet

    def loss(self, x: Tensor, u: Tensor) -> Tensor:
        return -self(x, u).mean()

    def log_prob(self, x: Tensor, u: Tensor) -> Tensor:
        return self(x, u)

    @torch.no_grad()
    def sample(self, n: int, u: Tensor) -> Tensor:
        """One draw of x per row of ``u`` (``n == len(u)``, IdentifiableFlow.sample's signature)."""
        z = self.prior.sample(u)
        for layer in reversed(self.flow):
            z = layer.inverse(z)[0]
        return z


def mask(dim: int, parity: int) -> Tensor:
    return (torch.arange(dim) + parity) % 2


def spline(dim: int, n_labels: int, depth: int = 6, hidden: int = 64, bins: int = 8, bound: float = 4.0) -> ReferenceFlow:
    """iflow's ``spline``: (LU, RQ spline coupling) x depth, then LU."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [LULinear(dim), SplineCoupling(mask(dim, i % 2), hidden, bins, bound)]
    return ReferenceFlow([*layers, LULinear(dim)], GaussianLabelPrior(dim, n_labels))


def realnvp(dim: int, n_labels: int, depth: int = 6, hidden: int = 64) -> ReferenceFlow:
    """iflow's ``realnvp``: affine couplings with alternating masks."""
    layers = [AffineCoupling(mask(dim, i % 2), hidden) for i in range(depth)]
    return ReferenceFlow(layers, GaussianLabelPrior(dim, n_labels))


def glow(dim: int, n_labels: int, depth: int = 6, hidden: int = 64) -> ReferenceFlow:
    """iflow's ``glow``: (actnorm, LU, affine coupling) x depth."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [ActNorm(dim), LULinear(dim), AffineCoupling(mask(dim, i % 2), hidden)]
    return ReferenceFlow(layers, GaussianLabelPrior(dim, n_labels))


REFERENCES = {"spline": spline, "realnvp": realnvp, "glow": glow}


@torch.no_grad()
def copy_parameters(source: nn.Module, target: nn.Module) -> None:
    """Copy ``source``'s parameters into ``target``'s, in registration order (shapes must agree)."""
    ours, theirs = list(source.parameters()), list(target.parameters())
    if len(ours) != len(theirs) or any(a.shape != b.shape for a, b in zip(ours, theirs, strict=True)):
        raise ValueError("the two models do not have the same parameters")
    for a, b in zip(ours, theirs, strict=True):
        b.copy_(a)
