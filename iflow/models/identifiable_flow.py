"""The identifiable flow: a normalizing flow with a conditional prior.

    z = g(x),   log p(x | u) = log p(g(x) | u) + log |det J_g(x)|

With :class:`~iflow.priors.ConditionalExpFamilyPrior` the latents are
identifiable up to per-component transformations; with
:class:`~iflow.priors.StandardNormalPrior` it is the plain (non-identifiable)
flow baseline.
"""

from __future__ import annotations

import torch
from nflows.transforms import Transform
from torch import Tensor, nn

from ..flows.build import LULinear, inverse_map, last_step
from ..protocols import EXACT, ConditionalPrior
from ..runtime import batched


class IdentifiableFlow(nn.Module):
    """``x: (batch, dim)``, ``u: (batch,)`` labels or ``(batch, aux_dim)`` floats."""

    likelihood = EXACT
    encode_kind = "z = g(x)"
    sample_kind = "draws from p(x | u)"

    def __init__(self, flow: Transform, prior: ConditionalPrior) -> None:
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
        return inverse_map(self.flow, z)

    @torch.no_grad()
    def fit_prior(self, x: Tensor, u: Tensor, z: Tensor | None = None) -> None:
        """The prior's maximum-likelihood parameters given the latents ``z = g(x)`` (computed if not given)."""
        self.prior.fit_labels(batched(self.encode, x) if z is None else z, u)

    def final_linear(self) -> LULinear | None:
        """The flow's last step when it is an LU linear layer and the prior a Gaussian label prior."""
        step = last_step(self.flow)
        if not isinstance(step, LULinear) or not (self.prior.fits_labels and self.prior.family.gaussian):
            return None
        return step
