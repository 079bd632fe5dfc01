"""Helpers shared by the tests (one copy of each)."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pytest
import torch

from iflow.data.dataset import Dataset, make_dataset
from iflow.flows.build import build_flow
from iflow.models.identifiable_flow import IdentifiableFlow
from iflow.priors import ConditionalExpFamilyPrior


def randomize(module: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    """Move every parameter off its (identity or zero) initialisation, reproducibly; returns ``module``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            p.add_(scale * noise.to(dtype=p.dtype, device=p.device))
    return module


def autograd_logabsdet(fn: Callable, x: torch.Tensor) -> torch.Tensor:
    """log|det d fn(x) / dx| per row of ``x`` (``fn`` returns ``(y, ...)``), from the full autograd Jacobian."""
    rows = []
    for row in x:
        jacobian = torch.autograd.functional.jacobian(lambda r: fn(r.unsqueeze(0))[0].squeeze(0), row)
        rows.append(torch.linalg.slogdet(jacobian)[1])
    return torch.stack(rows)



class SignalAt(IdentifiableFlow):
    """``base`` (its flow and prior) sending its own process ``signum`` at the given loss call (a kill on cue)."""

    def __init__(self, base: IdentifiableFlow, call: int, signum: int):
        super().__init__(base.flow, base.prior)
        self.call, self.signum, self.calls = call, signum, 0

    def loss(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.call:
            os.kill(os.getpid(), self.signum)
        return super().loss(x, u)


def tiny_data(n: int = 200, dim: int = 3, seed: int = 0) -> Dataset:
    """``n`` rows of ``dim`` sources in 4 segments of growing scale, mixed by tanh(s) + 0.2 s."""
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, dim)) * (1 + np.arange(n) % 4)[:, None]
    return make_dataset(np.tanh(s) + 0.2 * s, np.arange(n) % 4, s, name="tiny")


def tiny_flow(dim: int = 3, depth: int = 1) -> IdentifiableFlow:
    """A seeded RealNVP identifiable flow with a Gaussian prior on 4 labels."""
    torch.manual_seed(0)
    return IdentifiableFlow(build_flow("realnvp", dim, depth=depth, hidden=8), ConditionalExpFamilyPrior(dim, n_labels=4))


SUBNORMAL = 1e-39  # below float32's smallest normal number, 1.18e-38


def subnormal_product() -> float:
    """A float32 subnormal times 1: 0.0 while subnormals are flushed, the subnormal otherwise."""
    return (torch.tensor([SUBNORMAL], dtype=torch.float32) * 1.0).item()


def skip_unless_subnormals_can_be_flushed() -> None:
    """Skip the test where nothing can show a flush: already flushed here, or a CPU that cannot."""
    if subnormal_product() == 0:
        pytest.skip("subnormals already flushed in this process")
    if not torch.set_flush_denormal(False):  # changes nothing; False where flushing is unsupported
        pytest.skip("this CPU cannot flush subnormals")
