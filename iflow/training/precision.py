"""Training precision (``--precision``): what runs in a lower precision while training.

- ``fp32`` (default): everything in the data's dtype.
- ``tf32``: CUDA matmuls and convolutions of float32 tensors in TensorFloat-32
  (Ampere and later GPUs); CUDA only: on the CPU it would change nothing, so it is refused.
- ``bf16``: the flows' conditioner networks (the networks computing each coupling's
  parameters) under bfloat16 autocast, on the CPU or CUDA; log-determinants, the
  spline's bin arithmetic and the prior stay in float32 (:mod:`iflow.flows.autocast`).

Both apply to the training steps only: validation, the per-epoch refits and every
evaluation after training run in full precision.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..config import TrainConfig
from ..errors import UserError, param
from ..flows.autocast import conditioner_networks, set_autocast


def check_precision(model: nn.Module, config: TrainConfig) -> None:
    """:class:`UserError` when ``config.precision`` cannot apply to ``model``."""
    if config.precision == "bf16" and not conditioner_networks(model):
        raise UserError(
            f"{param('precision')} bf16 runs the conditioner networks of coupling flows in bfloat16, and this "
            f"model has none (coupling flows: {param('flow')} realnvp, glow or spline); use fp32"
        )


@contextmanager
def training_precision(model: nn.Module, precision: str) -> Iterator[None]:
    """Train ``model`` in the block at ``precision``; full precision again afterwards."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    previous = matmul.fp32_precision, conv.fp32_precision
    if precision == "tf32":
        matmul.fp32_precision = conv.fp32_precision = "tf32"
    set_autocast(model, torch.bfloat16 if precision == "bf16" else None)
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = previous
        set_autocast(model, None)
