"""Conditioner networks that can train under autocast (``--precision bf16``).

Only the networks computing a coupling's parameters run in the lower precision: their
output comes back in the input's dtype, so the couplings' log-determinants, the
spline's bin arithmetic and the prior stay in full precision. Evaluation (eval mode)
always runs in full precision.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


class Autocasting(nn.Module):
    """Mixed into a conditioner network: with ``autocast_dtype`` set (by
    :func:`iflow.training.precision.training_precision`) and in training mode,
    :meth:`autocast` runs the network's body under ``torch.autocast`` to that dtype."""

    autocast_dtype: torch.dtype | None = None  # a run-time setting of training, not state (never saved)

    def autocast(self, body: Callable[..., Tensor], inputs: Tensor, *args: object) -> Tensor:
        """``body(inputs, *args)``, under autocast when set and training; the output in ``inputs``' dtype."""
        if self.autocast_dtype is None or not self.training:
            return body(inputs, *args)
        with torch.autocast(inputs.device.type, dtype=self.autocast_dtype):
            outputs = body(inputs, *args)
        return outputs.to(inputs.dtype)


def conditioner_networks(model: nn.Module) -> list[Autocasting]:
    """The networks of ``model`` that can train under autocast."""
    return [module for module in model.modules() if isinstance(module, Autocasting)]


def set_autocast(model: nn.Module, dtype: torch.dtype | None) -> None:
    """Set ``autocast_dtype`` on every conditioner network of ``model`` (None: full precision)."""
    for network in conditioner_networks(model):
        network.autocast_dtype = dtype
