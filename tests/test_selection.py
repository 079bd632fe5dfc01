import json
import math

import numpy as np
import pytest
import torch

from iflow.cli import main
from iflow.config import ModelConfig, TrainConfig
from iflow.data.dataset import make_dataset
from iflow.selection import train_with_restarts
from iflow.data.synthetic import SyntheticConfig, generate
from iflow.training.trainer import TrainResult

# Fake restarts: validation log-likelihood by training seed, and an MCC that disagrees with it,
# so a selection by MCC (forbidden) would pick another run than a selection by likelihood.
VAL_LL = {10: -3.0, 11: -1.0, 12: float("nan"), 13: -2.0}
MCC = {10: 0.9, 11: 0.5, 12: 0.99, 13: 0.7}


def fake_trainer(calls):
    def trainer(data, model_config, config, progress):
        calls.append(config)
        history = [{"epoch": 1, "mcc": 0.0}, {"epoch": 2, "mcc": MCC[config.seed]}]
        result = TrainResult(history=history, best_epoch=2, best_val_log_likelihood=VAL_LL[config.seed], seconds=1.0)
        return f"run-{config.seed}", result

    return trainer


def test_restarts_keep_the_best_held_out_likelihood_not_the_best_mcc():
    calls = []
    data = make_dataset(np.zeros((4, 2), np.float32), np.zeros(4, np.int64))
    run, result, restarts = train_with_restarts(
        data, ModelConfig(), TrainConfig(seed=10), 4, progress=False, trainer=fake_trainer(calls)
    )
    assert run == "run-11" and result.best_val_log_likelihood == -1.0
    assert [r.seed for r in restarts] == [10, 11, 12, 13]
    assert [r.chosen for r in restarts] == [False, True, False, False]
    assert [r.mcc for r in restarts] == [0.9, 0.5, 0.99, 0.7]  # MCC at the kept epoch, for the report
    assert math.isnan(restarts[2].val_log_likelihood)  # a diverged run is listed, never kept
    assert {c.split_seed for c in calls} == {10}  # every restart is scored on the same held-out rows


def test_restarts_and_jobs_must_be_positive():
    data = make_dataset(np.zeros((4, 2), np.float32), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="restarts"):
        train_with_restarts(data, ModelConfig(), TrainConfig(), 0, trainer=fake_trainer([]))
    with pytest.raises(ValueError, match="jobs"):
        train_with_restarts(data, ModelConfig(), TrainConfig(), 2, trainer=fake_trainer([]), jobs=0)


def test_restarts_in_parallel_processes_match_one_after_another():
    """Each restart is fixed by its seed, so worker processes change the wall time, not the result."""
    synthetic = generate(SyntheticConfig(sources=2, segments=3, per_segment=100, seed=3))
    data = make_dataset(synthetic.x, synthetic.u, synthetic.s)
    model = ModelConfig(depth=1, hidden=8)
    config = TrainConfig(epochs=2, batch_size=64, seed=4)
    serial = train_with_restarts(data, model, config, 3, progress=False, jobs=1)
    parallel = train_with_restarts(data, model, config, 3, progress=False, jobs=2)
    assert [r.val_log_likelihood for r in parallel[2]] == [r.val_log_likelihood for r in serial[2]]
    assert [r.chosen for r in parallel[2]] == [r.chosen for r in serial[2]]
    assert len({r.val_log_likelihood for r in serial[2]}) == 3  # the restarts differ from each other
    for a, b in zip(serial[0].model.state_dict().values(), parallel[0].model.state_dict().values()):
        assert torch.equal(a, b)


def test_cli_restarts_save_candidates_and_scatter_plot(tmp_path, capsys):
    data = tmp_path / "d.npz"
    assert (
        main(["data", "synthetic", "--sources", "2", "--segments", "3", "--per-segment", "100", "--out", str(data)])
        == 0
    )
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--epochs", "1", "--batch-size", "64", "--depth", "1", "--hidden", "8"]
    assert main([*args, "--restarts", "3", "--jobs", "2", "--seed", "5", "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    restarts = metrics["restarts"]
    assert [r["seed"] for r in restarts] == [5, 6, 7]
    kept = max(restarts, key=lambda r: r["val_log_likelihood"])
    assert kept["chosen"] and sum(r["chosen"] for r in restarts) == 1
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["seed"] == kept["seed"] and config["train"]["split_seed"] == 5
    assert (run / "figures" / "restarts.png").is_file()
    out = capsys.readouterr().out
    assert out.count("restart seed") == 3 and out.count("(kept)") == 1
