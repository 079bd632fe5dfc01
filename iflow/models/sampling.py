"""Drawing x from a model: prior draws pushed through the model's decoder (or inverse flow)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..priors import repeat_condition
from ..protocols import Model


@torch.no_grad()
def sample(model: Model, n: int, u: Tensor | int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` draws ``decode(z)``, ``z ~ p(z | u)``; ``u`` one condition or ``n`` of them: ``(n, d)``."""
    device = next(model.parameters()).device
    return model.decode(model.prior.sample(repeat_condition(n, u, device), generator))
