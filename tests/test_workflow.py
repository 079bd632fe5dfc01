"""iflow/workflow.py: one call from data and configs to a saved run directory with figures."""

import json

import numpy as np

from iflow.config import ModelConfig, TrainConfig
from iflow.data.dataset import make_dataset
from iflow.runs import load_run, plan_run
from iflow.workflow import train_and_evaluate, train_and_save


def small_data(n: int = 400):
    rng = np.random.default_rng(1)
    u = np.arange(n) % 4
    s = rng.normal(size=(n, 2)) * (1 + u)[:, None]
    return make_dataset(np.tanh(s) + 0.3 * s, u, s, name="small")


SMALL = ModelConfig(flow="realnvp", depth=2, hidden=8)
QUICK = TrainConfig(epochs=2, batch_size=100)


def test_train_and_save_writes_a_complete_run_directory(tmp_path) -> None:
    outcome = train_and_save(small_data(), tmp_path / "run", SMALL, QUICK, progress=False)
    run_dir = tmp_path / "run"
    assert {"config.json", "model.pt", "metrics.json", "history.json"} <= {p.name for p in run_dir.iterdir()}
    assert {"training.png", "sources.png", "density.png"} <= {p.name for p in (run_dir / "figures").iterdir()}
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["mcc"] == outcome.metrics["mcc"] and 0 < saved["mcc"] <= 1
    assert load_run(run_dir).model_config == outcome.run.model_config
    curve = (run_dir / "history.csv").read_text().splitlines()
    epochs = json.loads((run_dir / "history.json").read_text())["epochs"]
    assert curve[0].split(",")[:3] == ["epoch", "train_loss", "val_log_likelihood"] and len(curve) == 1 + len(epochs)


def test_restarts_keep_the_best_held_out_likelihood() -> None:
    outcome = train_and_evaluate(plan_run(small_data(), SMALL, QUICK), restarts=2, jobs=1, progress=False)
    scores = [r.val_log_likelihood for r in outcome.restarts]
    kept = [r for r in outcome.restarts if r.chosen]
    assert len(kept) == 1 and kept[0].val_log_likelihood == max(scores)
    assert outcome.metrics["restarts"][0]["seed"] == 0 and outcome.metrics["restarts"][1]["seed"] == 1
