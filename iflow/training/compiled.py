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

from collections.abc import Iterator

import torch
from torch import nn

from ..config import TrainConfig
from ..protocols import Model


class CompiledLoss:
    """What a training step uses of ``model`` (``loss`` and ``parameters``), with ``loss`` compiled."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.loss = torch.compile(model.loss, dynamic=False)

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.model.parameters()


def training_loss(model: Model, config: TrainConfig) -> Model | CompiledLoss:
    """What the training steps call: ``model`` itself, or its compiled loss when ``config.compile``."""
    return CompiledLoss(model) if config.compile else model
