"""What happens after each epoch's steps, assembled once from the config: the linear refit,
the prior's M-step, and recovery tracking (MCC) when true sources are known.

The refits change the latents only through the flow's last linear layer, by a known
matrix, so one full-data encode serves the refits and MCC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..config import TrainConfig
from ..errors import UserError, param
from ..metrics import mcc
from ..protocols import Model
from ..runtime import batched
from .unmixing import refit_final_linear


@dataclass
class TrainingTensors:
    """The tensors one :func:`~iflow.training.trainer.fit` call trains on, made once.

    ``x_fit``: the training rows as the closed-form refits see them (discrete data: one
    fixed dequantisation draw; otherwise ``x_train`` itself). ``s``: true sources or None.
    """

    x: Tensor
    u: Tensor
    train_idx: np.ndarray
    x_train: Tensor
    u_train: Tensor
    x_val: Tensor
    u_val: Tensor
    x_fit: Tensor
    s: np.ndarray | None
    dequantize: float | np.ndarray

    @property
    def labels(self) -> bool:
        return self.u.dtype == torch.long


class EpochLatents:
    """Latents at the end of one epoch, encoded at most once and moved along by the refits."""

    def __init__(self, model: Model, tensors: TrainingTensors) -> None:
        self.model, self.tensors = model, tensors
        self._all: Tensor | None = None
        self._fit: Tensor | None = None

    def all_rows(self) -> Tensor:
        """``(N, n)`` latents of every row, in input order."""
        if self._all is None:
            self._all = batched(self.model.encode, self.tensors.x, self.tensors.u)
        return self._all

    def fit_rows(self) -> Tensor:
        """Latents of ``x_fit``: a slice of :meth:`all_rows` when that is computed and x_fit is x_train."""
        if self._fit is None:
            t = self.tensors
            shared = self._all is not None and t.x_fit is t.x_train
            self._fit = self._all[t.train_idx] if shared else batched(self.model.encode, t.x_fit, t.u_train)
        return self._fit

    def cached_fit_rows(self) -> Tensor | None:
        return self._fit if self._fit is not None or self._all is None else self.fit_rows()

    def transform(self, matrix: Tensor) -> None:
        """The latents went through z -> z M^T."""
        if self._all is not None:
            self._all = self._all @ matrix.t()
        if self._fit is not None:
            self._fit = self._fit @ matrix.t()


class LinearRefit:
    """Refit the flow's last linear layer with the Gaussian label prior profiled out."""

    def __init__(self, model: Model, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer

    def __call__(self, latents: EpochLatents) -> None:
        layer = self.model.final_linear()
        applied = refit_final_linear(layer, self.model.prior, latents.fit_rows(), latents.tensors.u_train)
        if applied is None:
            return
        for parameter in layer.parameters():
            self.optimizer.state.pop(parameter, None)  # Adam's moments belong to the old factorisation
        latents.transform(applied)


class PriorStep:
    """The prior's closed-form M-step on the training rows."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def __call__(self, latents: EpochLatents) -> None:
        t = latents.tensors
        self.model.fit_prior(t.x_fit, t.u_train, latents.cached_fit_rows())


def uses_linear_fit(model: Model, config: TrainConfig) -> bool:
    """Whether training refits the flow's last linear layer each epoch (``linear_fit``)."""
    eligible = model.final_linear() is not None
    if config.linear_fit == "epoch" and not eligible:
        raise UserError(
            f"{param('linear_fit')} epoch needs a flow that ends in a linear layer ({param('flow')} spline or mlp) "
            f"and a Gaussian prior on labels ({param('prior')} gauss or gauss-var)"
        )
    return eligible and config.linear_fit != "none" and config.prior_fit == "epoch"


def refits_for(model: Model, optimizer: torch.optim.Optimizer, tensors: TrainingTensors, config: TrainConfig) -> list:
    """The per-epoch refits the config asks for and the model allows, in the order they run."""
    if config.prior_fit != "epoch" or not (tensors.labels and model.prior.fits_labels):
        return []
    linear = [LinearRefit(model, optimizer)] if uses_linear_fit(model, config) else []
    return [*linear, PriorStep(model)]


def source_mcc(latents: EpochLatents) -> float:
    """MCC of the epoch's latents against the true sources."""
    return mcc(latents.all_rows().cpu().numpy(), latents.tensors.s).mcc
