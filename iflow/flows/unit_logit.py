"""The fixed logit map that opens a flow on bounded (dequantised) data."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from nflows.transforms import Transform
from torch import Tensor


class UnitLogit(Transform):
    """Fixed map [0, 1)^d -> R^d: y = logit(alpha + (1 - 2 alpha) x) (RealNVP's preprocessing).

    log|dy/dx| = log(1 - 2 alpha) - log s - log(1 - s), s = alpha + (1 - 2 alpha) x.
    Works on any shape ``(batch, ...)``; no parameters.
    """

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        s = self.alpha + (1 - 2 * self.alpha) * inputs
        outputs = torch.log(s) - torch.log1p(-s)
        logabsdet = math.log(1 - 2 * self.alpha) - torch.log(s) - torch.log1p(-s)
        return outputs, logabsdet.reshape(inputs.shape[0], -1).sum(-1)

    def inverse(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        s = torch.sigmoid(inputs)
        outputs = (s - self.alpha) / (1 - 2 * self.alpha)
        logabsdet = F.logsigmoid(inputs) + F.logsigmoid(-inputs) - math.log(1 - 2 * self.alpha)
        return outputs, logabsdet.reshape(inputs.shape[0], -1).sum(-1)
