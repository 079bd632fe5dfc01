"""Data-parallel training under torchrun: ``torchrun --nproc_per_node N -m iflow train ...``.

Everything distributed lives here; without torchrun every function is a no-op and training
is exactly the one-process training (no process group is made).

- **Launch**: torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`process_group`
  joins the group (gloo on the CPU, nccl on CUDA, where ``--device cuda`` means ``cuda:LOCAL_RANK``)
  around the command and leaves it after.
- **Global batch**: ``batch_size`` is the batch of one optimizer step over all ranks. Every rank
  loads the full data set (iflow's data are small), draws the same seeded permutation and trains
  on its own contiguous share of each global batch (:func:`own_rows`); the rank's loss is the mean
  over its share and DDP averages the gradients, so the update is the one-process update at the
  same batch up to float rounding. A VAE's reparameterisation noise is drawn from the same seeded
  stream on every rank (for other rows), so its steps match one process in distribution only.
- **Agreement**: the gradients sync only through the wrapped module (:func:`loss_module`), never
  ``model.loss`` directly. A non-finite step, a due checkpoint or a stop signal on any rank counts
  on every rank (:func:`agree_on_tally`, :func:`agree_on_checkpoint`); the epoch's record, and with it the stopping decision, the best epoch
  and the schedule, come from rank 0 (:func:`from_main`). The per-epoch refits run on the full data
  on every rank: deterministic, so the parameters stay identical.
- **Files**: only rank 0 writes (run directory, checkpoints, figures, progress); every rank resumes
  from rank 0's checkpoint, which records the number of processes (:func:`check_world_size`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor, nn
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..errors import UserError, param
from ..protocols import Model
from ..runtime import resolve_device

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")

T = TypeVar("T")


def launched() -> bool:
    """True when this process was started by torchrun (its environment names a rank)."""
    return all(name in os.environ for name in TORCHRUN_ENV)


def active() -> bool:
    """True inside :func:`process_group` (or any initialised default process group)."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """True on rank 0, and in a plain run: the process that writes files and prints."""
    return rank() == 0


def rank_device(name: str) -> str:
    """This rank's device for ``--device name``: under torchrun, ``cuda`` (or ``cuda:N``) is ``cuda:LOCAL_RANK``."""
    device = resolve_device(name)
    if device.type != "cuda" or not launched():
        return name
    local = int(os.environ["LOCAL_RANK"])
    if local >= torch.cuda.device_count():
        raise UserError(f"local rank {local} has no GPU ({torch.cuda.device_count()} visible); start fewer processes")
    return f"cuda:{local}"


@contextlib.contextmanager
def process_group(device: str) -> Iterator[str]:
    """Under torchrun: this rank in its process group for the block, output from rank 0 only;
    yields this rank's device. Otherwise nothing happens and ``device`` is yielded as given."""
    if not launched():
        yield device
        return
    device = rank_device(device)
    cuda = torch.device(device).type == "cuda"
    if not dist.is_available() or not (cuda or dist.is_gloo_available()):
        raise UserError("torchrun: this torch has no gloo backend for data-parallel training on the CPU")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        with quiet_unless_main():
            yield device
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def quiet_unless_main() -> Iterator[None]:
    """On ranks other than 0: no stdout, no iflow log below errors, and a user error or an
    interruption ends the process quietly (rank 0 reports the same one)."""
    if is_main():
        yield
        return
    logger = logging.getLogger("iflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            yield
    except UserError:
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        logger.setLevel(level)


def on_main(decide: Callable[[], T]) -> T:
    """``decide()`` run on rank 0 only and its value given to every rank; a :class:`UserError`
    raised by it is raised on every rank. In a plain run: ``decide()``."""
    if not active():
        return decide()
    outcome: list = [None, None]
    if is_main():
        try:
            outcome[0] = decide()
        except UserError as exc:
            outcome[1] = exc
    dist.broadcast_object_list(outcome, src=0)
    if outcome[1] is not None:
        raise outcome[1]
    return outcome[0]


def from_main(value: T) -> T:
    """Rank 0's ``value`` on every rank (a picklable object); ``value`` itself in a plain run."""
    if not active():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def collective_device() -> torch.device:
    """Where small collective tensors live: the GPU for nccl, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def agree_on_checkpoint(due: bool, stops: list[int]) -> tuple[bool, list[int]]:
    """Whether to checkpoint now, and the stop signals to act on, the same on every rank: a checkpoint
    when any rank's is due (each rank's clock differs), a stop when any rank received a signal (one
    arriving later counts at the next step). In a plain run: ``due`` and the live ``stops`` list itself.

    One small collective per step, read on the host (under nccl: one device read per step)."""
    if not active():
        return due, stops
    flags = torch.tensor([float(due), float(bool(stops))], device=collective_device())
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    due_anywhere, stop_anywhere = flags.tolist()
    return bool(due_anywhere), ([signal.SIGTERM] if stop_anywhere else [])


def agree_on_tally(total: float, finite: bool, finite_steps: int) -> tuple[float, bool, int]:
    """An epoch's step tally (:class:`~iflow.training.step_tally.StepTally`) over all ranks: the mean of
    the ranks' loss sums (each a sum of per-rank means, so this is the sum of the global batches' mean
    losses), finite only if every rank's steps were, and the steps before the first non-finite one on
    any rank. In a plain run: the arguments."""
    if not active():
        return total, finite, finite_steps
    device = collective_device()
    summed = torch.tensor([total], dtype=torch.float64, device=device)
    lowest = torch.tensor([float(finite), float(finite_steps)], dtype=torch.float64, device=device)
    dist.all_reduce(summed)
    dist.all_reduce(lowest, op=dist.ReduceOp.MIN)
    all_finite, steps = lowest.tolist()
    return summed.item() / world_size(), all_finite == 1.0, int(steps)


def check_global_batch(batch_size: int) -> None:
    """:class:`UserError` unless the global ``batch_size`` splits evenly over the ranks."""
    if batch_size % world_size():
        raise UserError(
            f"{param('batch_size')} {batch_size} is the global batch and must be divisible by the "
            f"{world_size()} processes; use a multiple of {world_size()}"
        )


def check_restarts(restarts: int) -> None:
    """:class:`UserError` for restarts under torchrun: the ranks train one model together."""
    if restarts > 1 and launched():
        raise UserError(f"{param('restarts')} {restarts} cannot run under torchrun; train the restarts as separate runs")


def check_prior_choice(priors: tuple[str, ...]) -> None:
    """:class:`UserError` for ``--prior auto`` (``priors`` to choose among) under torchrun: one model per prior."""
    if priors and launched():
        raise UserError(f"{param('prior')} auto trains one model per prior and cannot run under torchrun; "
                        f"name one {param('prior')}")  # fmt: skip


def own_rows(batch: Tensor) -> Tensor:
    """This rank's contiguous share of a global batch: ``(batch_size, ...) -> (batch_size / world, ...)``."""
    if not active():
        return batch
    share = batch.shape[0] // world_size()
    return batch[rank() * share : (rank() + 1) * share]


class LossModule(nn.Module):
    """``module(x, u)`` is ``model.loss(x, u)``: the one call through which the trainer takes a step,
    so that DDP sees the forward pass and averages the gradients."""

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, u: Tensor) -> Tensor:
        """The scalar training loss of a batch, ``x: (batch, dim)``, ``u: (batch,)`` or ``(batch, aux_dim)``."""
        return self.model.loss(x, u)


def loss_module(module: nn.Module) -> nn.Module:
    """The step's loss ``module`` (a :class:`LossModule`, perhaps compiled): wrapped in
    :class:`DistributedDataParallel` under torchrun (rank 0's weights broadcast to every rank),
    as it is otherwise."""
    if not active():
        return module
    device = next(module.parameters()).device
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def identity() -> dict:
    """What a checkpoint records of the launch: the number of processes when more than one."""
    return {"world_size": world_size()} if world_size() > 1 else {}


def check_world_size(saved: dict, path: Path) -> None:
    """:class:`UserError` unless the checkpoint ``saved`` was written by as many processes as this run has."""
    written = saved.get("identity", {}).get("config", {}).get("world_size", 1)
    if written != world_size():
        how = "without torchrun" if written == 1 else f"with torchrun --nproc_per_node {written}"
        raise UserError(
            f"{path}: the checkpoint was written by {written} process(es) and this run has {world_size()}; "
            f"resume {how}, or pass --overwrite to start again"
        )
