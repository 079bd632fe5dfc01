"""What an epoch's training steps report, kept on the training device and read back once.

Reading a loss or a gradient norm back to the host after every step makes the host
wait for the device each step (on CUDA, the queue of kernels drains). The steps
instead add into these device tensors, and :class:`~iflow.training.trainer.Trainer`
reads them once at the end of the epoch's steps and before each checkpoint.
"""

from __future__ import annotations

import torch
from torch import Tensor


class StepTally:
    """The running loss sum of an epoch and whether every step so far was finite, on ``device``.

    ``total``: () float64, the losses summed in step order: the same additions as a
    Python float sum of the step losses, so the epoch's mean loss is unchanged bit for
    bit. ``finite``: () bool, False from the first non-finite step on. ``finite_steps``:
    () long, the steps before the first non-finite one.
    """

    def __init__(self, total: float, device: torch.device) -> None:
        self.total = torch.full((), total, dtype=torch.float64, device=device)  # a fill, not a host-to-device copy
        self.finite = torch.ones((), dtype=torch.bool, device=device)
        self.finite_steps = torch.zeros((), dtype=torch.long, device=device)

    def add(self, loss: Tensor, finite: Tensor) -> None:
        """One step's ``loss`` and whether it and its gradient were finite (both 0-d, on the device)."""
        self.total += loss.double()
        self.finite &= finite
        self.finite_steps += self.finite

    def read(self) -> tuple[float, bool, int]:
        """``(total, finite, finite_steps)`` on the host: one read for all three."""
        total, finite, steps = torch.stack([self.total, self.finite.double(), self.finite_steps.double()]).tolist()
        return total, finite == 1.0, int(steps)
