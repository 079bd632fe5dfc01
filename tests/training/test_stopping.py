"""The stopping rule: convergence within a patience window, a fixed budget, max_epochs and a
time limit; in fit, the reason is recorded, the best state kept, and a resume stops where
an uninterrupted run does."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from iflow.config import TrainConfig
from iflow.defaults import train_defaults
from iflow.models.identifiable_flow import IdentifiableFlow
from iflow.training.checkpoint import CHECKPOINT_FILE, Checkpointing, load_checkpoint
from iflow.training.stopping import STOP_REASONS, StoppingRule
from iflow.training.trainer import TrainingInterrupted, fit, mean_log_likelihood, split_for_training
from tests import helpers
from tests.helpers import SignalAt

DIM = 3


def records(values: list[float], seconds_per_epoch: float = 1.0) -> list[dict]:
    return [
        {"epoch": i + 1, "val_log_likelihood": v, "seconds": (i + 1) * seconds_per_epoch} for i, v in enumerate(values)
    ]


def first_stop(rule: StoppingRule, values: list[float], seconds_per_epoch: float = 1.0) -> tuple[int, str] | None:
    for record in records(values, seconds_per_epoch):
        reason = rule.decide(record)
        if reason is not None:
            return record["epoch"], reason
    return None


def test_stops_after_patience_epochs_without_a_gain_above_the_tolerance() -> None:
    values = [1.0, 2.0, 2.5, 2.505, 2.49, 2.508, 2.5, 3.0]  # best 2.5 at epoch 3; then < 0.01 above it
    assert first_stop(StoppingRule(patience=3, tolerance=0.01, max_epochs=100), values) == (6, "converged")
    assert first_stop(StoppingRule(patience=4, tolerance=0.01, max_epochs=100), values) == (7, "converged")
    assert first_stop(StoppingRule(patience=3, tolerance=0.001, max_epochs=100), values) is None  # 2.505, 2.508 count


def test_a_slow_steady_climb_below_the_tolerance_per_epoch_keeps_training() -> None:
    values = [0.006 * k for k in range(40)]  # 0.6 x the tolerance per epoch: past it every second epoch
    assert first_stop(StoppingRule(patience=3, tolerance=0.01, max_epochs=100), values) is None


def test_fixed_budget_never_stops_early_and_max_epochs_caps_convergence() -> None:
    flat = [1.0] * 10
    assert first_stop(StoppingRule(patience=2, tolerance=0.01, max_epochs=10, fixed=True), flat) == (10, "epochs")
    rising = [float(k) for k in range(10)]
    assert first_stop(StoppingRule(patience=2, tolerance=0.01, max_epochs=6), rising) == (6, "max_epochs")


def test_time_limit_stops_after_the_epoch_that_passes_it() -> None:
    rising = [float(k) for k in range(10)]
    rule = StoppingRule(patience=2, tolerance=0.01, max_epochs=100, time_limit=3.5)
    assert first_stop(rule, rising, seconds_per_epoch=1.0) == (4, "time_limit")


def test_state_round_trip_continues_identically() -> None:
    values = [1.0, 1.5, 1.505, 1.503, 1.502, 1.501]
    whole = StoppingRule(patience=3, tolerance=0.01, max_epochs=100)
    assert first_stop(whole, values) == (5, "converged")
    first, second = StoppingRule(3, 0.01, 100), StoppingRule(3, 0.01, 100)
    for record in records(values)[:3]:
        assert first.decide(record) is None
    second.load_state(first.state())
    assert [second.decide(r) for r in records(values)[3:5]] == [None, "converged"]


def test_recovery_defaults_wait_out_a_collapse_at_the_full_rate_but_still_stop_on_a_plateau() -> None:
    """At lr 2e-2 the held-out log-likelihood of a recovery run can collapse early and recover as the
    cosine decays (benchmarks/robustness.md); the default patience must not end the run on the collapse."""
    data = helpers.tiny_data(600, DIM, 0)
    config = train_defaults(data, TrainConfig())
    assert config.task == "recovery"
    rise = [0.3 * k for k in range(1, 11)]  # best 3.0 at epoch 10
    collapse = rise + [1.0] * 15 + [3.5] * 5  # back above it at epoch 26
    assert first_stop(StoppingRule.from_config(config), collapse) is None
    plateau = rise + [3.0] * 40
    assert first_stop(StoppingRule.from_config(config), plateau) == (10 + config.patience, "converged")


def test_every_reason_is_explained() -> None:
    assert set(STOP_REASONS) == {"epochs", "converged", "max_epochs", "time_limit"}


def tiny_data(n: int = 240, seed: int = 0):
    return helpers.tiny_data(n, DIM, seed)


def tiny_model() -> IdentifiableFlow:
    return helpers.tiny_flow(DIM, depth=1)


CONVERGING = TrainConfig(patience=3, tolerance=0.005, max_epochs=60, batch_size=40)  # 5 steps per epoch


def test_fit_stops_on_convergence_records_why_and_keeps_the_best_state() -> None:
    model, data = tiny_model(), tiny_data()
    result = fit(model, data, CONVERGING, progress=False)
    assert result.stop_reason == "converged"
    values = [r["val_log_likelihood"] for r in result.history]
    assert len(values) < 60 and result.best_epoch < len(values), "the run should stop after a stalled best"
    assert result.best_epoch == int(np.argmax(values)) + 1
    assert all(v <= values[result.best_epoch - 1] + CONVERGING.tolerance for v in values[result.best_epoch :])
    _, val_idx = split_for_training(data, train_defaults(data, CONVERGING))
    x, u = torch.as_tensor(data.x[val_idx]), torch.as_tensor(data.u[val_idx])
    assert mean_log_likelihood(model, x, u) == pytest.approx(result.best_val_log_likelihood, abs=1e-5)


def test_fit_with_epochs_trains_exactly_that_budget() -> None:
    result = fit(
        tiny_model(), tiny_data(), TrainConfig(epochs=3, patience=1, tolerance=1e6, batch_size=40), progress=False
    )
    assert (len(result.history), result.stop_reason) == (3, "epochs")


def test_resume_stops_where_an_uninterrupted_run_stops(tmp_path: Path) -> None:
    config = CONVERGING
    reference = tiny_model()
    expected = fit(reference, tiny_data(), config, progress=False)
    assert expected.stop_reason == "converged" and len(expected.history) >= 4

    path = tmp_path / CHECKPOINT_FILE
    interrupt_at = 5 * (len(expected.history) - 2) + 3  # mid-epoch, after the rule has seen a stalled epoch or more
    with pytest.raises(TrainingInterrupted):
        fit(SignalAt(tiny_model(), interrupt_at, signal.SIGTERM), tiny_data(), config, progress=False, checkpoint=Checkpointing(path))
    assert load_checkpoint(path)["progress"]["stopping"], "the rule's state must be in the checkpoint"
    resumed_model = tiny_model()
    resumed = fit(resumed_model, tiny_data(), config, progress=False, checkpoint=Checkpointing(path, resume=True))
    assert (resumed.stop_reason, resumed.best_epoch) == (expected.stop_reason, expected.best_epoch)
    assert [r["val_log_likelihood"] for r in resumed.history] == [r["val_log_likelihood"] for r in expected.history]
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[name]), name
