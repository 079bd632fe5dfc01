"""Runtime utilities shared by training, evaluation and the command line: devices, threads,
seeds, and bounded-memory evaluation in row blocks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

from .errors import UserError, param

# rows per block of every full-data pass: against 8192, as fast for the default flow on the benchmark, 0.59-0.95x
# the time for RealNVP, Glow and the 64-dimensional digits flow (benchmarks/eval_block.md), and a quarter of the memory
EVAL_BATCH = 2048


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; a clear error when CUDA is asked for but absent."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown {param('device')} {name!r}; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{param('device')} {name} asked for, but CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported {param('device')} {name!r}; use cpu or cuda")
    return device


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch CPU threads, then restore the previous count.

    One thread is the default everywhere: on a busy 2-core machine two threads made
    small models up to 30x slower.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def denormals_flushed() -> Iterator[None]:
    """Run the block with subnormal floats flushed to zero in CPU arithmetic (FTZ/DAZ, as TensorFlow's
    CPU executor does), then turn that off again (torch has no getter for the previous setting).

    Why: weights that decay towards zero reach the subnormal range, where every product with them is
    many times slower. With ``--weight-decay 1e-4`` about 40% of the conditioners' weights were
    subnormal by epoch 25 of the demo's training, which took 354 CPU s without this and 79 with it
    (``benchmarks/subnormals.md``). Values below 1.2e-38 (float32) change nothing a model computes. Applies to the calling thread, the one that runs torch's ops with one thread.
    """
    supported = torch.set_flush_denormal(True)  # False (and nothing changed) on CPUs without SSE3
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def as_tensors(x: np.ndarray, u: np.ndarray, device: torch.device) -> tuple[Tensor, Tensor]:
    """x and u as tensors on ``device`` (dtypes kept)."""
    return torch.as_tensor(x, device=device), torch.as_tensor(u, device=device)


@torch.no_grad()
def batched(fn: Callable[..., Tensor], *tensors: Tensor, size: int = EVAL_BATCH) -> Tensor:
    """Apply ``fn`` to row blocks of ``tensors`` and concatenate (bounded memory)."""
    n = tensors[0].shape[0]
    return torch.cat([fn(*(t[i : i + size] for t in tensors)) for i in range(0, n, size)])
