"""Learning-rate schedules, and scaling one in flight (after a divergence)."""

from __future__ import annotations

import torch

from ..config import TrainConfig


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine decay to 1% of ``config.lr`` over ``steps`` steps, or a constant rate."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=config.lr * 0.01)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


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
