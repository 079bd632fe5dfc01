"""The training loss through ``torch.compile`` (``TrainConfig.compile``, ``iflow train --compile``).

Only the loss of the training step is compiled, forward and backward (the spline's
hand-written backward is traced as it is): one graph for the fixed batch shape,
since every epoch drops its last short batch. Validation, encodes, refits and
sampling stay eager; their row counts vary and each new shape would compile again.

Compiling costs tens of seconds on the first run of a model and batch shape;
inductor caches its work on disk (torch's default ``/tmp/torchinductor_<user>``,
or ``$TORCHINDUCTOR_CACHE_DIR``), so later runs start in a few seconds.
``benchmarks/speedup.py`` measures when that pays.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import TrainConfig
from ..protocols import Model
from .distributed import LossModule


def training_loss(model: Model, config: TrainConfig) -> nn.Module:
    """The module the training steps call, ``module(x, u) = model.loss(x, u)``: compiled when
    ``config.compile``; under torchrun the trainer wraps it in DDP
    (:func:`~iflow.training.distributed.loss_module`), so the compiled graph syncs gradients too."""
    module = LossModule(model)
    return torch.compile(module, dynamic=False) if config.compile else module
