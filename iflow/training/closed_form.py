"""Closed-form fits through the same :func:`iflow.runs.train` as every other model.

A model whose registry entry has ``closed_form=True`` gets :meth:`fit_closed_form` on the
training rows after gradient training (its result extended by the seconds it took), or
instead of it when the entry has ``trained=False``: then the history is one record.
"""

from __future__ import annotations

import time

import numpy as np

from ..config import TrainConfig
from ..data.dataset import Dataset
from ..metrics import mcc
from ..protocols import ClosedFormModel
from ..runtime import as_tensors, batched, resolve_device, seed_everything
from .trainer import TrainResult


def fit_closed_form(
    model: ClosedFormModel,
    data: Dataset,
    config: TrainConfig,
    split: tuple[np.ndarray, np.ndarray],
    result: TrainResult | None = None,
) -> TrainResult:
    """Fit ``model`` in place on the training rows of (standardised) ``data``; ``result``: that of
    the gradient training before it, or None when there was none."""
    started = time.perf_counter()
    device = resolve_device(config.device)
    seed_everything(config.seed)
    model.to(device).eval()
    model.fit_closed_form(*as_tensors(data.x[split[0]], data.u[split[0]], device), config.seed)
    seconds = time.perf_counter() - started
    if result is not None:
        result.seconds += seconds
        return result
    record = {"epoch": 1, "seconds": seconds}
    if data.s is not None:
        latents = batched(model.encode, *as_tensors(data.x, data.u, device)).cpu().numpy()
        record["mcc"] = mcc(latents, data.s).mcc
    return TrainResult(history=[record], best_epoch=1, seconds=seconds)
