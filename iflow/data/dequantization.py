"""Discrete data as densities: uniform dequantisation and its convention for bits/dim.

Convention for data on K integer levels (digits: K = 17 grey levels 0..16).
A pixel value v becomes x = v + e, e ~ U(0, 1), so x lies in [0, K) with unit
bins; a model density p(x) on that scale gives, by Jensen,

    log P(v) >= E_e[ log p(v + e) ],

and the reported figure is the dequantised negative log-likelihood per dimension

    bits/dim = -E[ log p(x) ] / (d ln 2),   x on the original [0, K) scale.

The model itself sees y = x / K in [0, 1)^d (a fixed affine map, log|det| =
-d log K, added back before reporting) and, inside the flow, the fixed logit
map :class:`~iflow.flows.unit_logit.UnitLogit`, whose log-determinant is part of
the flow's. Bits/dim is :func:`iflow.metrics.bits_per_dim`.
A model uniform on [0, K)^d scores exactly log2(K) bits/dim.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import Tensor

from .dataset import Dataset

EVAL_SEED = 0


def dequantize(x: Tensor, width: Tensor | float, generator: torch.Generator | None = None) -> Tensor:
    """x + width * U(0, 1), elementwise (``width`` broadcasts over the last dimension).

    The noise is drawn on x's device, from ``generator`` (which must be on that device)
    or that device's default generator.
    """
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + torch.as_tensor(width, dtype=x.dtype, device=x.device) * noise


def dequantized(data: Dataset, seed: int = EVAL_SEED) -> Dataset:
    """Discrete ``data`` with one seeded draw of dequantisation noise added (continuous data unchanged)."""
    if not np.any(data.dequantize):
        return data
    noise = np.random.default_rng(seed).random(data.x.shape)
    return replace(data, x=(data.x + data.dequantize * noise).astype(np.float32), dequantize=0.0)
