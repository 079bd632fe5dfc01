"""Back to the best state at half the rate (``TrainConfig.rate_cut``): on a collapse of the held-out
log-likelihood, and on a plateau while the rate is still high; off, training stops on the plateau
as before. The held-out values are scripted, so each case is exact."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch

from iflow.config import TrainConfig
from iflow.defaults import defaults_for, train_defaults
from iflow.training import trainer as trainer_module
from iflow.training.trainer import COLLAPSE_NATS_PER_DIM, RATE_CUT_FACTOR, fit, split_for_training, start_trainer
from tests import helpers

DIM = 3
CONFIG = TrainConfig(max_epochs=40, patience=2, tolerance=0.01, batch_size=40, lr=1e-2, rate_cut=0.25)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch):
    """``scripted(values)``: the trainer's held-out log-likelihood takes these values, epoch after epoch."""

    def install(values: list[float]) -> None:
        it: Iterator[float] = iter(values)
        monkeypatch.setattr(trainer_module, "mean_log_likelihood", lambda model, x, u: next(it))

    return install


def test_a_collapse_goes_back_to_the_best_state_at_half_the_rate(scripted) -> None:
    data, model = helpers.tiny_data(240, DIM), helpers.tiny_flow(DIM)
    config = train_defaults(data, CONFIG)
    margin = COLLAPSE_NATS_PER_DIM * DIM
    scripted([1.0, 2.0, 2.0 - margin + 0.01, 2.0 - margin - 0.01])  # the third epoch is no collapse, the fourth is
    trainer = start_trainer(model, data, config, split_for_training(data, config), None)
    states, records, rates = [], [], []
    for _ in range(4):
        assert trainer.run_steps([])
        rates.append(trainer.optimizer.param_groups[0]["lr"])
        records.append(trainer.end_epoch([]))
        states.append(copy.deepcopy(model.state_dict()))
    assert [r.get("returned_to_best") for r in records] == [None, None, None, "collapsed"]
    for name, value in states[1].items():  # epoch 2 was the best
        assert torch.equal(states[3][name], value), name
    assert any(not torch.equal(states[2][name], value) for name, value in states[1].items()), "epoch 3 had moved on"
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(RATE_CUT_FACTOR * rates[3], rel=0.02)
    assert trainer.progress.result.stop_reason == ""


def test_a_plateau_at_a_high_rate_goes_back_until_the_rate_is_low_then_stops(scripted) -> None:
    scripted([1.0, 2.0] + [2.0] * 38)
    result = fit(helpers.tiny_flow(DIM), helpers.tiny_data(240, DIM), CONFIG, progress=False)
    returns = [r["epoch"] for r in result.history if r.get("returned_to_best")]
    assert returns == [4, 6], "patience 2 ends epochs 4 and 6 at rates 1 and 1/2 of lr; at 1/4 the plateau stops"
    assert {r["returned_to_best"] for r in result.history if "returned_to_best" in r} == {"plateau"}
    assert (len(result.history), result.stop_reason, result.best_epoch) == (8, "converged", 2)
    rates = [r["lr"] for r in result.history]
    assert rates[6] < RATE_CUT_FACTOR**2 * CONFIG.lr * 1.001 and rates[6] > 0.2 * CONFIG.lr


def test_off_a_plateau_stops_as_before(scripted) -> None:
    scripted([1.0, 2.0] + [2.0] * 38)
    result = fit(helpers.tiny_flow(DIM), helpers.tiny_data(240, DIM), TrainConfig(**{**vars(CONFIG), "rate_cut": 0.0}), progress=False)
    assert (len(result.history), result.stop_reason) == (4, "converged")
    assert not any("returned_to_best" in r for r in result.history)


def test_recovery_flows_cut_the_rate_and_other_tasks_keep_their_measured_rows() -> None:
    assert defaults_for("recovery", variational=False).rate_cut == 0.25
    assert defaults_for("recovery", variational=True).rate_cut == 0.0
    assert defaults_for("density", variational=False).rate_cut == 0.0
    assert defaults_for("image", variational=False).rate_cut == 0.0
    assert train_defaults(helpers.tiny_data(240, DIM), TrainConfig()).rate_cut == 0.25
