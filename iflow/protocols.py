"""The contracts between the models, the trainer and the evaluator.

The trainer, the evaluator and the encoder call models and priors only through
these methods and attributes; nothing asks a model what it is. A new model is
one file with a class that has these members, plus one entry in
:data:`iflow.models.build.MODELS`.

Shapes: ``x: (batch, d)``; ``u: (batch,)`` integer labels or ``(batch, aux_dim)``
floats; ``z: (batch, n)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .flows.build import LULinear
    from .priors import ExpFamily, FactorizedExpFamily

EXACT = "exact"  # Model.likelihood of a model whose log_prob is exact (the flows)
NO_LIKELIHOOD = "none"  # Model.likelihood of a model without one (TCL, FastICA, x itself)


class ConditionalPrior(Protocol):
    """p(z | u), factorized over the ``dim`` components, in the exponential ``family``."""

    dim: int
    family: ExpFamily
    n_labels: int | None  # integer labels 0..n_labels-1, or None for float u (or no u at all)

    @property
    def fits_labels(self) -> bool:
        """Whether :meth:`fit_labels` (the closed-form M-step on integer labels) applies."""
        ...

    def __call__(self, u: Tensor) -> FactorizedExpFamily:
        """The distribution p(z | u) of each row: ``log_prob(z) -> (batch,)``, ``sample(generator)``."""
        ...

    def natural_params(self, u: Tensor) -> Tensor:
        """lambda(u): ``(batch, dim, n_stats)``."""
        ...

    def log_prob(self, z: Tensor, u: Tensor) -> Tensor:
        """``(batch,)`` nats."""
        ...

    def sample(self, u: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One z per row of u: ``(batch, dim)``."""
        ...

    def fit_labels(self, z: Tensor, u: Tensor) -> None:
        """Set each label's parameters to their maximum-likelihood values given ``z``."""
        ...

    def fit_label_stats(self, stats: Tensor, u: Tensor) -> None:
        """The same from per-sample (expected) sufficient statistics ``(n, dim, n_stats)``."""
        ...


class Model(Protocol):
    """What every model offers the trainer (``loss``, ``log_prob``, ``fit_prior``, ``final_linear``),
    the evaluator (``log_prob``, ``likelihood``) and the encoder and sampler (``encode``, ``decode``,
    ``prior``)."""

    prior: ConditionalPrior
    likelihood: str  # what log_prob is: EXACT, the bound it computes (eval prints it), or NO_LIKELIHOOD
    encode_kind: str  # what encode returns, for messages
    sample_kind: str  # what decode(prior draws) is, for messages

    def loss(self, x: Tensor, u: Tensor) -> Tensor:
        """The scalar training objective of a batch (minimised)."""
        ...

    def log_prob(self, x: Tensor, u: Tensor) -> Tensor:
        """log p(x | u) per sample, or the bound named by ``likelihood``: ``(batch,)``.

        With ``likelihood == NO_LIKELIHOOD``: the held-out criterion the trainer validates on
        (TCL: log p(u | x)), never reported as a likelihood; a model fitted in closed form only
        raises :class:`~iflow.errors.UserError`.
        """
        ...

    def encode(self, x: Tensor, u: Tensor) -> Tensor:
        """The recovered latents: ``(batch, n)``."""
        ...

    def decode(self, z: Tensor) -> Tensor:
        """x given z (a flow's inverse, a decoder's mean): ``(batch, d)``."""
        ...

    def fit_prior(self, x: Tensor, u: Tensor, z: Tensor | None = None) -> None:
        """The prior's closed-form M-step at the current model, on integer labels ``u``.

        ``z``: the model's latents of ``x`` when the caller has them already (a flow
        fits its prior to them; a VAE reads its posteriors from ``x`` instead).
        """
        ...

    def final_linear(self) -> LULinear | None:
        """The last linear layer of a flow whose Gaussian label prior allows the linear refit
        (:mod:`iflow.training.unmixing`), else None."""
        ...



class ClosedFormModel(Model, Protocol):
    """A model with a closed-form fit (its registry entry has ``closed_form=True``): run on the
    training rows after gradient training, or instead of it when the entry has ``trained=False``
    (FastICA and x itself; TCL's optional FastICA of its features)."""

    def fit_closed_form(self, x: Tensor, u: Tensor, seed: int) -> None:
        """Fit in place on ``x: (n, d)``, ``u: (n,)``; ``seed`` fixes any randomness."""
        ...


def trains_on_a_bound(model: Model) -> bool:
    """Whether ``model`` is of the VAE family, its ``log_prob`` a bound (neither exact nor absent): what
    the registry's ``ModelEntry.variational`` says of its name, read from a built model."""
    return model.likelihood not in (EXACT, NO_LIKELIHOOD)
