"""Learning-rate schedules: warm-up then halving on a plateau, its state saved and restored;
cosine over a fixed budget; auto picks by whether the budget is fixed."""

from __future__ import annotations

import pytest
import torch

from iflow.config import TrainConfig
from iflow.train.schedule import (
    PLATEAU_FLOOR,
    PLATEAU_PATIENCE,
    PlateauDecay,
    end_epoch,
    make_schedule,
    scale_learning_rate,
    schedule_name,
)


def optimizer(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def lr_of(opt: torch.optim.Optimizer) -> float:
    return opt.param_groups[0]["lr"]


def test_warm_up_rises_linearly_to_the_base_rate() -> None:
    opt = optimizer()
    schedule = PlateauDecay(opt, warmup=4, tolerance=0.01)
    rates = [lr_of(opt)]
    for _ in range(5):
        opt.step()
        schedule.step()
        rates.append(lr_of(opt))
    assert rates == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])


def test_rate_halves_after_a_plateau_and_not_while_improving() -> None:
    opt = optimizer()
    schedule = PlateauDecay(opt, warmup=0, tolerance=0.01)
    for value in [1.0, 2.0, 3.0, 4.0]:
        end_epoch(schedule, value)
    assert lr_of(opt) == pytest.approx(0.1)
    for _ in range(PLATEAU_PATIENCE - 1):
        end_epoch(schedule, 4.005)  # below the tolerance: no progress
    assert lr_of(opt) == pytest.approx(0.1)
    end_epoch(schedule, 3.0)
    assert lr_of(opt) == pytest.approx(0.05)
    opt.step()
    schedule.step()
    assert lr_of(opt) == pytest.approx(0.05), "the next step keeps the halved rate"


def test_rate_never_falls_below_the_floor() -> None:
    opt = optimizer()
    schedule = PlateauDecay(opt, warmup=0, tolerance=0.01)
    for _ in range(PLATEAU_PATIENCE * 20):
        end_epoch(schedule, 0.0)
    assert lr_of(opt) == pytest.approx(0.1 * PLATEAU_FLOOR)


def test_state_dict_round_trip_keeps_scale_and_plateau_count() -> None:
    opt = optimizer()
    schedule = PlateauDecay(opt, warmup=0, tolerance=0.01)
    for value in [1.0] + [1.0] * PLATEAU_PATIENCE + [1.0]:
        end_epoch(schedule, value)
    other_opt = optimizer()
    other = PlateauDecay(other_opt, warmup=0, tolerance=0.01)
    other.load_state_dict(schedule.state_dict())
    assert (
        (other.scale, other.best, other.stalled) == (schedule.scale, schedule.best, schedule.stalled) == (0.5, 1.0, 1)
    )


def test_scaling_after_a_divergence_scales_the_plateau_schedule_too() -> None:
    opt = optimizer()
    schedule = PlateauDecay(opt, warmup=0, tolerance=0.01)
    scale_learning_rate(opt, schedule, 0.1)
    opt.step()
    schedule.step()
    assert lr_of(opt) == pytest.approx(0.01)


def test_auto_is_cosine_for_a_fixed_budget_and_plateau_otherwise() -> None:
    assert schedule_name(TrainConfig(epochs=10)) == "cosine"
    assert schedule_name(TrainConfig()) == "plateau"
    assert schedule_name(TrainConfig(schedule="constant")) == "constant"
    cosine = make_schedule(optimizer(), TrainConfig(epochs=10, lr=0.1), steps_per_epoch=7)
    assert isinstance(cosine, torch.optim.lr_scheduler.CosineAnnealingLR) and cosine.T_max == 70
    assert isinstance(make_schedule(optimizer(), TrainConfig(lr=0.1, max_epochs=5), 7), PlateauDecay)
