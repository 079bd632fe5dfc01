"""The identifiable flow followed by Gaussian observation noise: a VAE whose decoder is a flow.

    z ~ p(z | u),        x = f(z) + N(0, sigma^2 I),        f = g^{-1},

with g an iflow flow (``x -> z``, as in :class:`~iflow.models.identifiable_flow.IdentifiableFlow`)
and p(z | u) the shared conditional prior. The posterior is a Gaussian around the flow's own
answer g(x), corrected by an MLP of (x, u) and scaled by the noise,

    q(z | x, u) = N(g(x) + delta(x, u), sigma^2 diag exp(h(x, u))),     delta = h = 0 at the start,

optionally bent by a flow posterior (:mod:`iflow.models.flow_posterior`). The model is a
:class:`~iflow.models.vae.VAE` with these parts, so it trains on the same bounds (the ELBO, or the
importance-weighted bound with K samples) and ELBO <= IW_K <= log p(x | u). As sigma -> 0 the
marginal tends to the identifiable flow's exact log p(g(x) | u) + log |det J_g(x)|, and so does the
IW bound (q then concentrates at g(x)). :func:`warm_start_from_flow` starts it at a trained
identifiable flow (fit the flow on the noisy x first, then the noisy model).

Shapes: ``x: (batch, d)``, ``u: (batch,)`` labels or ``(batch, aux_dim)`` floats,
``z: (..., batch, d)`` with any leading sample axes; latent and observed dimensions are equal.
"""

from __future__ import annotations

import torch
from nflows.transforms import Transform
from torch import Tensor, nn

from ..data.dataset import AuxSpec
from ..flows.build import inverse_map
from ..protocols import ConditionalPrior
from .decoders import GaussianObservation
from .flow_posterior import FlowPosterior
from .identifiable_flow import IdentifiableFlow
from .vae import VAE, GaussianEncoder


class FlowDecoder(nn.Module):
    """The decoder mean f(z) = g^{-1}(z) of the flow g: ``(..., batch, d) -> (..., batch, d)``."""

    def __init__(self, flow: Transform) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, z: Tensor) -> Tensor:
        return inverse_map(self.flow, z.reshape(-1, z.shape[-1])).reshape(z.shape)


class FlowEncoder(nn.Module):
    """q's Gaussian: mean g(x) + delta(x, u), variance sigma^2 exp(h(x, u)), each ``(batch, d)``.

    ``correction`` is a :class:`~iflow.models.vae.GaussianEncoder` giving (delta, exp h); its last
    layer starts at zero, so q starts at N(g(x), sigma^2 I). sigma^2 is the observation's variance
    (learned with it when the observation learns it).
    """

    def __init__(self, flow: Transform, observation: GaussianObservation, correction: GaussianEncoder) -> None:
        super().__init__()
        self.flow = flow  # the decoder's flow (shared parameters)
        self.observation = observation
        self.correction = correction
        with torch.no_grad():
            correction.net[-1].weight.zero_()
            correction.net[-1].bias.zero_()

    def forward(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        delta, scale = self.correction(x, u)
        return self.flow(x)[0] + delta, scale * torch.exp(self.observation.log_var)


def noisy_flow(
    flow: Transform,
    prior: ConditionalPrior,
    observation: GaussianObservation,
    aux: AuxSpec,
    hidden: int,
    layers: int,
    posterior_flow: FlowPosterior | None = None,
    iw_samples: int = 100,
    train_samples: int = 1,
) -> VAE:
    """The VAE with decoder mean g^{-1}, posterior around g(x) (MLP correction of ``hidden`` x ``layers``
    reading x and u) and Gaussian noise ``observation``; ``dim`` of x = that of z = ``prior.dim``."""
    correction = GaussianEncoder(prior.dim, prior.dim, aux, hidden, layers)
    return VAE(
        FlowEncoder(flow, observation, correction),
        FlowDecoder(flow),
        observation,
        prior,
        iw_samples=iw_samples,
        train_samples=train_samples,
        posterior_flow=posterior_flow,
    )


def warm_start_from_flow(model: VAE, trained: IdentifiableFlow) -> VAE:
    """``model`` (from :func:`noisy_flow`) with the flow and prior of a trained identifiable flow of the
    same configuration; returns ``model``."""
    model.decoder.flow.load_state_dict(trained.flow.state_dict())
    model.prior.load_state_dict(trained.prior.state_dict())
    return model
