"""Learning-rate schedules, and scaling one in flight (after a divergence).

``cosine`` decays over a known budget; ``plateau`` (the default when training to
convergence, where the length of the run is not known in advance) warms up over the
first epoch, then halves the rate whenever the held-out log-likelihood has not beaten
its best by more than the tolerance for ``PLATEAU_PATIENCE`` epochs, down to
``PLATEAU_FLOOR`` times the base rate.
"""

from __future__ import annotations

import math

import torch

from ..config import TrainConfig

PLATEAU_PATIENCE = 3  # epochs without a gain above the tolerance before the rate is halved
PLATEAU_FACTOR = 0.5
PLATEAU_FLOOR = 1 / 128  # the smallest scale of the base rate (7 halvings)
WARMUP_STEPS = 100  # at most; never more than one epoch


class PlateauDecay(torch.optim.lr_scheduler.LRScheduler):
    """Linear warm-up over ``warmup`` steps, then the base rate times ``scale``, which
    :meth:`end_epoch` halves after ``patience`` epochs without a held-out gain above ``tolerance``.

    ``step()`` is called after every optimizer step, ``end_epoch(value)`` after every epoch;
    the whole state (scale, best value, epochs stalled) is in ``state_dict()``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup: int, tolerance: float):
        self.warmup, self.tolerance = warmup, tolerance
        self.scale, self.best, self.stalled = 1.0, -math.inf, 0
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        warm = min(1.0, (self.last_epoch + 1) / self.warmup) if self.warmup > 0 else 1.0
        return [base * self.scale * warm for base in self.base_lrs]

    def end_epoch(self, value: float) -> None:
        """Record one epoch's held-out log-likelihood; halve the rate on a plateau."""
        if value > self.best + self.tolerance:
            self.best, self.stalled = value, 0
            return
        self.best = max(self.best, value)
        self.stalled += 1
        if self.stalled >= PLATEAU_PATIENCE and self.scale > PLATEAU_FLOOR:
            self.scale, self.stalled = max(self.scale * PLATEAU_FACTOR, PLATEAU_FLOOR), 0
            for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
                group["lr"] = lr
            self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def schedule_name(config: TrainConfig) -> str:
    """``auto``: cosine over a fixed budget of epochs, plateau decay when training to convergence."""
    if config.schedule != "auto":
        return config.schedule
    return "cosine" if config.epochs is not None else "plateau"


def make_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule ``config`` names (see :func:`schedule_name`); cosine decays to 1% of
    ``config.lr`` over ``epochs`` (or ``max_epochs``) epochs."""
    name = schedule_name(config)
    if name == "cosine":
        epochs = config.epochs if config.epochs is not None else config.max_epochs
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=epochs * steps_per_epoch, eta_min=config.lr * 0.01
        )
    if name == "plateau":
        return PlateauDecay(optimizer, min(WARMUP_STEPS, steps_per_epoch), config.tolerance)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def end_epoch(schedule: torch.optim.lr_scheduler.LRScheduler, val_log_likelihood: float) -> None:
    """Tell an epoch-aware schedule the epoch's held-out log-likelihood (others ignore it)."""
    if isinstance(schedule, PlateauDecay):
        schedule.end_epoch(val_log_likelihood)


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
