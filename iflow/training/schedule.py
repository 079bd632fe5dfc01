"""Learning-rate schedules, and scaling one in flight (after a divergence).

``cosine`` (the default) decays over ``epochs``, or ``max_epochs`` when training to
convergence. ``plateau`` is a schedule over the run actually made (measured worse on the
default benchmark, see ``benchmarks/convergence.md``): a warm-up over the first epoch, the full rate while the held-out
log-likelihood improves, and once it has not beaten its best by more than the tolerance
for ``PLATEAU_PATIENCE`` epochs (or half of ``max_epochs`` has passed), a cosine decay to
1% over as many epochs as the run has had so far; training then stops.
"""

from __future__ import annotations

import math

import torch

from ..config import TrainConfig

PLATEAU_PATIENCE = 3  # epochs without a gain above the tolerance before the decay starts
FINAL_SCALE = 0.01  # the rate at the end of a decay, as a fraction of the base rate
WARMUP_STEPS = 100  # at most; never more than one epoch


class CosineAfterPlateau(torch.optim.lr_scheduler.LRScheduler):
    """Warm-up over ``warmup`` steps, the base rate until a plateau of the held-out
    log-likelihood (see :meth:`end_epoch`), then a cosine decay to ``FINAL_SCALE`` over as
    many steps as came before it; :attr:`finished` once the decay is done.

    ``step()`` is called after every optimizer step, ``end_epoch(value)`` after every epoch;
    the whole state is in ``state_dict()``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup: int, tolerance: float, max_epochs: int) -> None:
        self.warmup, self.tolerance, self.max_epochs = warmup, tolerance, max_epochs
        self.best, self.stalled, self.epochs = -math.inf, 0, 0
        self.decay_start: int | None = None  # the step the decay started at
        self.decay_steps = 0
        super().__init__(optimizer)

    def scale(self) -> float:
        if self.decay_start is None:
            return min(1.0, (self.last_epoch + 1) / self.warmup) if self.warmup > 0 else 1.0
        t = min(1.0, (self.last_epoch - self.decay_start) / max(1, self.decay_steps))
        return FINAL_SCALE + (1 - FINAL_SCALE) * 0.5 * (1 + math.cos(math.pi * t))

    def get_lr(self) -> list[float]:
        return [base * self.scale() for base in self.base_lrs]

    @property
    def finished(self) -> bool:
        return self.decay_start is not None and self.last_epoch >= self.decay_start + self.decay_steps

    def end_epoch(self, value: float) -> None:
        """Record one epoch's held-out log-likelihood; start the decay on a plateau or at half of ``max_epochs``."""
        self.epochs += 1
        if value > self.best + self.tolerance:
            self.best, self.stalled = value, 0
        else:
            self.best, self.stalled = max(self.best, value), self.stalled + 1
        plateau = self.stalled >= PLATEAU_PATIENCE or 2 * self.epochs >= self.max_epochs
        if self.decay_start is None and plateau:
            self.decay_start, self.decay_steps = self.last_epoch, self.last_epoch


def make_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule ``config`` names; cosine (the default) decays to 1% of ``config.lr`` over
    ``epochs`` (a fixed budget) or ``max_epochs`` (training to convergence) epochs."""
    name = config.schedule
    epochs = config.epochs if config.epochs is not None else config.max_epochs
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=epochs * steps_per_epoch, eta_min=config.lr * FINAL_SCALE
        )
    if name == "plateau":
        return CosineAfterPlateau(optimizer, min(WARMUP_STEPS, steps_per_epoch), config.tolerance, epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def end_epoch(schedule: torch.optim.lr_scheduler.LRScheduler, val_log_likelihood: float) -> bool:
    """Tell an epoch-aware schedule the epoch's held-out log-likelihood (others ignore it);
    True when the schedule has run its course (a finished decay after a plateau)."""
    if not isinstance(schedule, CosineAfterPlateau):
        return False
    schedule.end_epoch(val_log_likelihood)
    return schedule.finished


def scale_learning_rate(
    optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler, factor: float
) -> None:
    """Multiply the learning rate, and the whole schedule ahead, by ``factor``."""
    for group in optimizer.param_groups:
        group["lr"] *= factor
        if "initial_lr" in group:
            group["initial_lr"] *= factor
    schedule.base_lrs = [lr * factor for lr in schedule.base_lrs]
    if isinstance(schedule, torch.optim.lr_scheduler.CosineAnnealingLR):
        schedule.eta_min *= factor
    schedule._last_lr = [group["lr"] for group in optimizer.param_groups]
