"""A normalizing-flow posterior for the VAE family: q(z | x, u) beyond the diagonal Gaussian.

The Gaussian encoder gives a centre and a scale per component, ``mean, var: (batch, n)``;
a conditional flow T bends standard-normal noise before that affine map,

    z = mean + sqrt(var) * T(eps; c),        eps ~ N(0, I),        c = (x, mean, log var),

    log q(z | x, u) = log N(eps; 0, I) - log |det dT/d eps| - 1/2 sum_i log var_i.

T is a stack of rational-quadratic spline couplings (:class:`~iflow.flows.splines.RationalQuadraticCoupling`,
linear tails) whose conditioner networks read the context c, so the shape of q (skew, curved
dependence between components) changes from point to point; u enters through the encoder's
mean and variance (the iVAE encoder sees u; the baselines' does not). T starts as the identity,
so an untrained flow posterior is the Gaussian one. Sampling and the density come out of one
pass (eps -> z); :meth:`FlowPosterior.log_prob` inverts T for a given z (tests, diagnostics).

Shapes: ``x: (batch, d)``; ``eps, z: (..., batch, n)`` with any leading sample axes.
"""

from __future__ import annotations

import torch
from nflows.transforms import CompositeTransform
from torch import Tensor, nn

from ..flows.build import alternating_mask, residual_net_factory, spline_identity_bias
from ..flows.splines import RationalQuadraticCoupling
from ..priors import LOG_2PI


class FlowPosterior(nn.Module):
    """T(eps; c): ``depth`` conditional spline couplings with alternating masks on ``latent_dim`` components.

    Args:
        latent_dim: n (at least 2: a coupling needs two halves).
        x_dim: d, the observed dimension (part of the context).
        hidden: width of the conditioner networks.
        depth: number of coupling layers.
        bins: spline bins; ``tail_bound``: the spline's interval [-B, B] in units of the Gaussian's scale.
    """

    def __init__(self, latent_dim: int, x_dim: int, hidden: int = 64, depth: int = 2, bins: int = 8,
                 tail_bound: float = 4.0) -> None:  # fmt: skip
        super().__init__()
        if latent_dim < 2:
            raise ValueError(f"a flow posterior needs at least 2 latent dimensions, got {latent_dim}")
        net = residual_net_factory(
            hidden, identity_bias=spline_identity_bias(bins), context_features=x_dim + 2 * latent_dim
        )
        self.transform = CompositeTransform(
            [RationalQuadraticCoupling(alternating_mask(latent_dim, i % 2), net, num_bins=bins, tail_bound=tail_bound)
             for i in range(depth)]
        )  # fmt: skip

    @staticmethod
    def context(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
        """c = (x, mean, log var): ``(batch, d + 2 n)``."""
        return torch.cat([x, mean, torch.log(var)], dim=-1)

    def forward(self, x: Tensor, mean: Tensor, var: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """z = mean + sqrt(var) T(eps; c) and log q(z | x, u), for ``eps: (..., batch, n)``:
        ``z: (..., batch, n)``, ``log_q: (..., batch)``."""
        lead, (batch, n) = eps.shape[:-2], eps.shape[-2:]
        context = self.context(x, mean, var).expand(*lead, batch, -1)
        bent, log_det = self.transform(eps.reshape(-1, n), context.reshape(-1, context.shape[-1]))
        bent, log_det = bent.reshape(eps.shape), log_det.reshape(*lead, batch)
        log_q = -0.5 * (eps**2 + LOG_2PI).sum(-1) - log_det - 0.5 * torch.log(var).sum(-1)
        return mean + var.sqrt() * bent, log_q

    def log_prob(self, z: Tensor, x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
        """log q(z | x, u) of given ``z: (batch, n)`` (T inverted): ``(batch,)``."""
        eps, log_det = self.transform.inverse((z - mean) / var.sqrt(), self.context(x, mean, var))
        return -0.5 * (eps**2 + LOG_2PI).sum(-1) + log_det - 0.5 * torch.log(var).sum(-1)

    def centre(self, x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
        """z at eps = 0, the image of the Gaussian's centre (a deterministic latent): ``(batch, n)``."""
        return self(x, mean, var, torch.zeros_like(mean))[0]

    @torch.no_grad()
    def moments(self, x: Tensor, mean: Tensor, var: Tensor, samples: int = 32) -> tuple[Tensor, Tensor]:
        """Monte-Carlo mean and variance of q(z | x, u) from ``samples`` draws: each ``(batch, n)``."""
        z, _ = self(x, mean, var, torch.randn((samples, *mean.shape), dtype=mean.dtype, device=mean.device))
        return z.mean(0), z.var(0)
