"""Drawing x from a model: prior draws pushed through the model's decoder (or inverse flow)."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from ..priors import repeat_condition
from ..protocols import Model
from ..runtime import batched


@torch.no_grad()
def sample(model: Model, n: int, u: Tensor | int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` draws ``decode(z)``, ``z ~ p(z | u)``; ``u`` one condition or ``n`` of them: ``(n, d)``."""
    device = next(itertools.chain(model.parameters(), model.buffers())).device  # baselines have buffers only
    z = model.prior.sample(repeat_condition(n, u, device), generator)  # all at once: the same draws for any n
    return batched(model.decode, z)  # decoded in row blocks: memory bounded whatever n
