"""Observation models p(x | z) for the VAE family: Gaussian, Bernoulli, Poisson.

Each model reads the decoder network's output ``params: (..., d)`` (the mean,
the logits or the log-rate) and gives the log-likelihood of ``x: (..., d)``
summed over dimensions, the mean of p(x | z), and a draw from it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError, param
from ..priors import LOG_2PI


class GaussianObservation(nn.Module):
    """x ~ N(params, v I): v fixed (``noise_var``) or learned per dimension, started at ``noise_var``."""

    name = "gaussian"

    def __init__(self, dim: int, noise_var: float = 0.01, learn: bool = False) -> None:
        super().__init__()
        log_var = torch.full((dim,), math.log(noise_var))
        if learn:
            self.log_var = nn.Parameter(log_var)
        else:
            self.register_buffer("log_var", log_var)

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        """``(..., d)`` -> ``(...)``."""
        return -0.5 * ((x - params) ** 2 * torch.exp(-self.log_var) + self.log_var + LOG_2PI).sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        return params

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(params.shape, generator=generator, dtype=params.dtype, device=params.device)
        return params + torch.exp(0.5 * self.log_var) * noise


class BernoulliObservation(nn.Module):
    """x in {0, 1}^d ~ Bernoulli(sigmoid(params)); ``params`` are logits."""

    name = "bernoulli"

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return -F.binary_cross_entropy_with_logits(params, x.expand_as(params), reduction="none").sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.bernoulli(torch.sigmoid(params), generator=generator)


class PoissonObservation(nn.Module):
    """x in {0, 1, 2, ...}^d ~ Poisson(exp(params)); ``params`` is the log-rate."""

    name = "poisson"

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return (x * params - torch.exp(params) - torch.lgamma(x + 1)).sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        return torch.exp(params)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.poisson(torch.exp(params), generator=generator)


OBSERVATIONS = ("gaussian", "bernoulli", "poisson")


def build_observation(name: str, dim: int, noise_var: float = 0.01, learn_noise: bool = False) -> nn.Module:
    """The observation model named ``name`` for ``dim``-dimensional x."""
    if name == "gaussian":
        return GaussianObservation(dim, noise_var, learn_noise)
    if name == "bernoulli":
        return BernoulliObservation()
    if name == "poisson":
        return PoissonObservation()
    raise UserError(f"unknown {param('obs')} {name!r}; choose from {list(OBSERVATIONS)}")


def check_observations(x: np.ndarray, name: str, source: str) -> None:
    """Raise :class:`UserError` when ``x`` cannot come from the observation model ``name``."""
    if name == "bernoulli" and not np.all((x == 0) | (x == 1)):
        raise UserError(
            f"{source}: {param('obs')} bernoulli needs x in {{0, 1}}, found values such as {x[(x != 0) & (x != 1)][0]}"
        )
    if name == "poisson" and not np.all((x >= 0) & (x == np.round(x))):
        bad = x[(x < 0) | (x != np.round(x))][0]
        raise UserError(f"{source}: {param('obs')} poisson needs non-negative integer counts in x, found {bad}")
