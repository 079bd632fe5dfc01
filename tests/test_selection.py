import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from iflow.cli import main
from iflow.config import ModelConfig, TrainConfig
from iflow.data.dataset import make_dataset
from iflow.data.synthetic import SyntheticConfig, generate
from iflow.errors import UserError
from iflow.selection import AUTO_PRIORS, plan_candidates, train_with_restarts
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


PRIOR_LL = {"gauss": -2.0, "student-t": -1.0, "shape": -1.5}  # by prior; MCC again disagrees with it
PRIOR_MCC = {"gauss": 0.9, "student-t": 0.6, "shape": 0.8}


def test_prior_candidates_train_every_prior_and_keep_the_best_held_out_likelihood():
    calls = []

    def trainer(data, model_config, config, progress):
        calls.append((model_config.prior, config.seed, config.split_seed))
        history = [{"epoch": 1, "mcc": PRIOR_MCC[model_config.prior]}]
        ll = PRIOR_LL[model_config.prior] - 0.1 * (config.seed - 3)  # the first seed of each prior is its best
        result = TrainResult(history=history, best_epoch=1, best_val_log_likelihood=ll, seconds=1.0)
        return f"run-{model_config.prior}-{config.seed}", result

    data = make_dataset(np.zeros((4, 2), np.float32), np.zeros(4, np.int64))
    run, _, candidates = train_with_restarts(data, ModelConfig(prior="laplace"), TrainConfig(seed=3), 2,
                                             progress=False, trainer=trainer, priors=AUTO_PRIORS)  # fmt: skip
    assert [(c.prior, c.seed) for c in candidates] == [(p, s) for p in AUTO_PRIORS for s in (3, 4)]
    assert run == "run-student-t-3" and [c.chosen for c in candidates] == [False, False, True, False, False, False]
    assert {split for _, _, split in calls} == {3}, "every candidate is scored on the same held-out rows"
    assert "laplace" not in {prior for prior, _, _ in calls}, "the given prior is replaced by each candidate's"


def test_prior_auto_is_planned_per_prior_and_refused_where_the_priors_do_not_apply():
    synthetic = generate(SyntheticConfig(sources=2, segments=3, per_segment=100, seed=3))
    labels = make_dataset(synthetic.x, synthetic.u, synthetic.s)
    plan, priors = plan_candidates(labels, ModelConfig(prior="auto"), TrainConfig(epochs=1))
    assert priors == AUTO_PRIORS and plan.run.model_config.prior == AUTO_PRIORS[0]
    assert plan_candidates(labels, ModelConfig(prior="laplace"), TrainConfig(epochs=1))[1] == ()
    with pytest.raises(UserError, match="model ivae"):
        plan_candidates(labels, ModelConfig(model="ivae", prior="auto"), TrainConfig(epochs=1))
    floats = make_dataset(synthetic.x, synthetic.x[:, :1].astype(np.float64), synthetic.s)
    with pytest.raises(UserError, match="auto tries student-t.*integer labels"):
        plan_candidates(floats, ModelConfig(prior="auto"), TrainConfig(epochs=1))


def test_an_unnamed_prior_is_chosen_on_small_labelled_data_for_iflow_alone(monkeypatch):
    """The task's rule (iflow.defaults.chooses_prior) for the flow with label priors, outside torchrun."""
    synthetic = generate(SyntheticConfig(sources=2, segments=3, per_segment=100, seed=3))
    labels = make_dataset(synthetic.x, synthetic.u, synthetic.s)
    plan, priors = plan_candidates(labels, ModelConfig(), TrainConfig(epochs=1))
    assert priors == AUTO_PRIORS and plan.run.model_config.prior == AUTO_PRIORS[0]
    for model in ("ivae", "flow"):  # the VAE family's M-step needs an exponential family; flow has no label prior
        plan, priors = plan_candidates(labels, ModelConfig(model=model), TrainConfig(epochs=1))
        assert priors == () and plan.run.model_config.prior == ("gauss" if model == "ivae" else None)
    many = make_dataset(np.tile(synthetic.x, (130, 1)), np.tile(synthetic.u, 130), None)  # 35 100 training rows
    plan, priors = plan_candidates(many, ModelConfig(), TrainConfig(epochs=1))
    assert priors == () and plan.run.model_config.prior == "gauss"
    plan, priors = plan_candidates(labels, ModelConfig(), TrainConfig(epochs=1, linear_fit="epoch"))
    assert priors == () and plan.run.model_config.prior == "gauss", "an option that needs the Gaussian keeps it"
    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    plan, priors = plan_candidates(labels, ModelConfig(), TrainConfig(epochs=1))
    assert priors == () and plan.run.model_config.prior == "gauss", "torchrun trains one model: the Gaussian"


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
    for a, b in zip(serial[0].model.state_dict().values(), parallel[0].model.state_dict().values(), strict=False):
        assert torch.equal(a, b)


def test_cli_restarts_save_candidates_and_scatter_plot(tmp_path, capsys):
    data = tmp_path / "d.npz"
    assert (
        main(["data", "synthetic", "--sources", "2", "--segments", "3", "--per-segment", "100", "--out", str(data)])
        == 0
    )
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--epochs", "1", "--batch-size", "64", "--depth", "1", "--hidden", "8"]
    assert main([*args, "--prior", "gauss", "--restarts", "3", "--jobs", "2", "--seed", "5", "--out", str(run)]) == 0
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


def test_cli_prior_auto_saves_the_kept_prior_and_every_candidate(tmp_path, capsys):
    data = tmp_path / "d.npz"
    assert main(["data", "synthetic", "--sources", "2", "--segments", "3", "--per-segment", "100", "--out", str(data)]) == 0
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--epochs", "1", "--batch-size", "64", "--depth", "1", "--hidden", "8"]
    assert main([*args, "--prior", "auto", "--jobs", "1", "--out", str(run)]) == 0
    candidates = json.loads((run / "metrics.json").read_text())["restarts"]
    assert [c["prior"] for c in candidates] == list(AUTO_PRIORS)
    kept = max(candidates, key=lambda c: c["val_log_likelihood"])
    assert kept["chosen"] and sum(c["chosen"] for c in candidates) == 1
    assert json.loads((run / "config.json").read_text())["model"]["prior"] == kept["prior"]
    assert main(["eval", "--run", str(run), "--data", str(data)]) == 0, "the kept run loads like any other"
    out = capsys.readouterr().out
    assert out.count(", prior ") == 3 and "choosing the prior" not in out, "a named auto is not announced as a default"
    assert main([*args, "--jobs", "1", "--out", str(tmp_path / "default")]) == 0
    out = capsys.readouterr().out
    assert "choosing the prior among gauss, student-t, shape" in out and out.count(", prior ") == 3
    assert main([*args, "--resume", "--out", str(tmp_path / "resumable")]) == 0
    assert "choosing the prior" not in capsys.readouterr().out, "--resume trains one model, which checkpoints"
    assert json.loads((tmp_path / "resumable" / "config.json").read_text())["model"]["prior"] == "gauss"


def test_restarts_plot_names_each_candidates_prior():
    from matplotlib.figure import Figure

    from iflow.plotting import plot_restarts

    ax = plot_restarts(Figure().subplots(), [1.0, 2.0, 1.5], [0.8, 0.9, 0.7], 1, list(AUTO_PRIORS))
    assert [t.get_text() for t in ax.texts] == list(AUTO_PRIORS)
    assert not plot_restarts(Figure().subplots(), [1.0, 2.0], [0.8, 0.9], 0).texts, "plain restarts: no labels"


# --- worker processes end with their parent --------------------------------------------------------


def children_of(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``, read from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_training_restarts(tmp_path: Path) -> tuple[subprocess.Popen, list[int]]:
    """``iflow train --restarts 2 --jobs 2`` for far too many epochs; returns once both workers train."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(200, 2)), u=np.arange(200) % 2)
    argv = [sys.executable, "-m", "iflow.cli", "train", "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "run")]
    argv += "--restarts 2 --jobs 2 --epochs 100000 --batch-size 50 --flow realnvp --depth 1 --hidden 4".split()  # noqa: SIM905
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        busy = [pid for pid in children_of(proc.pid) if cpu_seconds(pid) > 1.0]  # past imports: training
        if len(busy) >= 2:
            return proc, busy
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the restart workers did not start in time")


def end_all(pids: list[int], timeout: float = 10.0) -> list[int]:
    """Wait up to ``timeout`` for ``pids`` to end; return those still alive (then killed, so none is left)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    survivors = [pid for pid in pids if alive(pid)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    return survivors


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_restart_workers_end_when_the_parent_is_killed(tmp_path):
    proc, workers = start_training_restarts(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert end_all(workers) == [], "workers outlived their SIGKILLed parent"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_sigterm_to_the_parent_ends_the_workers_with_a_message(tmp_path):
    proc, workers = start_training_restarts(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iflow: interrupted; SIGTERM"), err
    assert "Traceback" not in err
    assert end_all(workers) == [], "workers outlived their parent"
    assert not (tmp_path / "run").exists(), "nothing was saved, so nothing may be left"
