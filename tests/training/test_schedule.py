"""Learning-rate schedules: warm-up, the full rate until a plateau, then a cosine decay over
as many steps as came before; its state saved and restored; cosine over a fixed budget
or over max_epochs."""

from __future__ import annotations

import math

import pytest
import torch

from iflow.config import TrainConfig
from iflow.training.schedule import (
    FINAL_SCALE,
    PLATEAU_PATIENCE,
    CosineAfterPlateau,
    end_epoch,
    make_schedule,
    scale_learning_rate,
)

STEPS = 4  # steps per epoch in these tests


def optimizer(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def lr_of(opt: torch.optim.Optimizer) -> float:
    return opt.param_groups[0]["lr"]


def epoch(opt: torch.optim.Optimizer, schedule: CosineAfterPlateau, value: float) -> tuple[list[float], bool]:
    """One epoch of ``STEPS`` steps, then its held-out value: (the rates used, finished)."""
    rates = []
    for _ in range(STEPS):
        rates.append(lr_of(opt))
        opt.step()
        schedule.step()
    return rates, end_epoch(schedule, value)


def test_warm_up_rises_linearly_to_the_base_rate() -> None:
    opt = optimizer()
    schedule = CosineAfterPlateau(opt, warmup=4, tolerance=0.01, max_epochs=100)
    rates, _ = epoch(opt, schedule, 1.0)
    assert rates + [lr_of(opt)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])


def test_full_rate_while_improving_then_a_cosine_over_as_many_steps_then_finished() -> None:
    opt = optimizer()
    schedule = CosineAfterPlateau(opt, warmup=0, tolerance=0.01, max_epochs=100)
    for value in [1.0, 2.0, 3.0, 4.0]:
        rates, finished = epoch(opt, schedule, value)
        assert rates == pytest.approx([0.1] * STEPS) and not finished
    for _ in range(PLATEAU_PATIENCE - 1):
        rates, finished = epoch(opt, schedule, 4.005)  # below the tolerance: no progress
        assert rates == pytest.approx([0.1] * STEPS) and not finished
    rates, finished = epoch(opt, schedule, 3.0)  # the plateau: decay over the 7 epochs so far
    assert rates == pytest.approx([0.1] * STEPS) and not finished
    decay_steps = 7 * STEPS
    expected = [
        0.1 * (FINAL_SCALE + (1 - FINAL_SCALE) * 0.5 * (1 + math.cos(math.pi * k / decay_steps)))
        for k in range(decay_steps)
    ]
    seen = []
    for k in range(7):
        rates, finished = epoch(opt, schedule, 5.0 + k)  # improving again does not stop the decay
        seen += rates
        assert finished == (k == 6)
    assert seen == pytest.approx(expected)
    assert lr_of(opt) == pytest.approx(0.1 * FINAL_SCALE)


def test_decay_starts_at_half_of_max_epochs_without_a_plateau() -> None:
    opt = optimizer()
    schedule = CosineAfterPlateau(opt, warmup=0, tolerance=0.01, max_epochs=10)
    finished = [epoch(opt, schedule, float(k))[1] for k in range(10)]
    assert finished == [False] * 9 + [True]


def test_state_dict_round_trip_continues_identically() -> None:
    opt, other_opt = optimizer(), optimizer()
    schedule = CosineAfterPlateau(opt, warmup=2, tolerance=0.01, max_epochs=100)
    for value in [1.0] * (PLATEAU_PATIENCE + 2):
        epoch(opt, schedule, value)
    other = CosineAfterPlateau(other_opt, warmup=2, tolerance=0.01, max_epochs=100)
    other.load_state_dict(schedule.state_dict())
    other_opt.load_state_dict(opt.state_dict())
    assert schedule.decay_start is not None
    for value in [1.0, 2.0]:
        assert epoch(opt, schedule, value) == epoch(other_opt, other, value)


def test_scaling_after_a_divergence_scales_the_plateau_schedule_too() -> None:
    opt = optimizer()
    schedule = CosineAfterPlateau(opt, warmup=0, tolerance=0.01, max_epochs=100)
    scale_learning_rate(opt, schedule, 0.1)
    opt.step()
    schedule.step()
    assert lr_of(opt) == pytest.approx(0.01)


def test_cosine_runs_over_the_fixed_budget_or_max_epochs() -> None:
    cosine = make_schedule(optimizer(), TrainConfig(epochs=10, lr=0.1), steps_per_epoch=7)
    assert isinstance(cosine, torch.optim.lr_scheduler.CosineAnnealingLR) and cosine.T_max == 70
    converging = make_schedule(optimizer(), TrainConfig(lr=0.1, max_epochs=5), steps_per_epoch=7)
    assert isinstance(converging, torch.optim.lr_scheduler.CosineAnnealingLR) and converging.T_max == 35
    plateau = make_schedule(optimizer(), TrainConfig(lr=0.1, max_epochs=5, schedule="plateau"), 7)
    assert isinstance(plateau, CosineAfterPlateau) and plateau.max_epochs == 5
    assert make_schedule(optimizer(), TrainConfig(lr=0.1, epochs=6, schedule="plateau"), 7).max_epochs == 6
