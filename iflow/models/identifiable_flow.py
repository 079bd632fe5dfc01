"""The identifiable flow: a normalizing flow with a conditional prior.

    z = g(x),   log p(x | u) = log p(g(x) | u) + log |det J_g(x)|

With :class:`~iflow.priors.ConditionalExpFamilyPrior` the latents are
identifiable up to per-component transformations; with
:class:`~iflow.priors.StandardNormalPrior` it is the plain (non-identifiable)
flow baseline.
"""

from __future__ import annotations

import torch
from nflows.transforms import CompositeTransform
from torch import Tensor, nn

from ..priors import repeat_condition


class IdentifiableFlow(nn.Module):
    """``x: (batch, dim)``, ``u: (batch,)`` labels or ``(batch, aux_dim)`` floats."""

    exact_likelihood = True

    def __init__(self, flow: CompositeTransform, prior: nn.Module):
        super().__init__()
        self.flow = flow
        self.prior = prior

    def forward(self, x: Tensor, u: Tensor) -> Tensor:
        """log p(x | u): ``(batch,)``. Call the module (not ``log_prob``) under DDP."""
        z, logabsdet = self.flow(x)
        return self.prior.log_prob(z, u) + logabsdet

    def log_prob(self, x: Tensor, u: Tensor) -> Tensor:
        """Exact log-likelihood per sample, in nats: ``(batch,)``."""
        return self(x, u)

    def loss(self, x: Tensor, u: Tensor) -> Tensor:
        """Mean negative log-likelihood of a batch (the training objective)."""
        return -self(x, u).mean()

    def encode(self, x: Tensor, u: Tensor | None = None) -> Tensor:
        """Recovered latents z = g(x): ``(batch, dim)``."""
        return self.flow(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        """x = g^{-1}(z): ``(batch, dim)``."""
        return self.flow.inverse(z)[0]

    @torch.no_grad()
    def sample(self, n: int, u: Tensor | int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws of x from p(x | u): ``(n, dim)``; ``u`` is one condition or ``n`` of them."""
        device = next(self.parameters()).device
        return self.decode(self.prior.sample(repeat_condition(n, u, device), generator))
