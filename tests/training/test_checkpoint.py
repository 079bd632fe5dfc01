"""Crash-safe runs: SIGKILL then ``--resume`` is bit-identical to an uninterrupted run,
SIGINT saves and exits cleanly, and a checkpoint is only resumed by the same run."""

from __future__ import annotations

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
from iflow.config import TrainConfig
from iflow.data.dataset import make_dataset
from iflow.errors import UserError
from iflow.flows.build import build_flow
from iflow.models.identifiable_flow import IdentifiableFlow
from iflow.priors import ConditionalExpFamilyPrior
from iflow.rundir import MARKER, prepare_run_dir
from iflow.training.checkpoint import CHECKPOINT_FILE, Checkpointing, load_checkpoint
from iflow.training.trainer import TrainingInterrupted, fit
from tests.helpers import SignalAt

N, DIM = 400, 3
# one model, named: the prior the defaults choose on data this small trains candidates that are not checkpointed
OPTIONS = "--epochs 12 --batch-size 32 --flow realnvp --depth 2 --hidden 16 --threads 1 --prior gauss".split()  # noqa: SIM905
EVERY_STEP = ["--checkpoint-every", "0"]  # killed runs: a checkpoint after every step
NEVER = ["--checkpoint-every", "1e9"]  # other runs: only the final one (checkpoints must not change results)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    rng = np.random.default_rng(3)
    s = rng.normal(size=(N, DIM)) * (1 + np.arange(N) % 4)[:, None]
    path = tmp_path_factory.mktemp("data") / "d.npz"
    np.savez(path, x=np.tanh(s @ rng.normal(size=(DIM, DIM))) + 0.1 * s, u=np.arange(N) % 4, s=s)
    return path


@pytest.fixture(scope="module")
def reference(data_file: Path, tmp_path_factory) -> dict:
    """Final weights of an uninterrupted run (in this process, one thread)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(["train", "--data", str(data_file), "--out", str(out), *OPTIONS, *NEVER]) == 0
    assert not (out / CHECKPOINT_FILE).exists(), "the checkpoint should be removed once the run is saved"
    return torch.load(out / "model.pt", weights_only=True)["state_dict"]


def start_training(data_file: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "iflow.cli", "train", "--data", str(data_file), "--out", str(out)]
    argv += [*OPTIONS, *EVERY_STEP]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_progress(proc: subprocess.Popen, checkpoint: Path, epochs: int, timeout: float = 120.0) -> None:
    """Poll until the checkpoint shows ``epochs`` finished epochs (and a few steps more)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"training ended before it could be interrupted: {proc.communicate()}"
        if checkpoint.exists():
            try:
                progress = torch.load(checkpoint, weights_only=True)["progress"]
            except Exception:  # noqa: BLE001 (replaced while reading: try again)
                progress = {"epoch": 0, "step": 0}
            if progress["epoch"] >= epochs and progress["step"] >= 2:
                return
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("no checkpoint appeared in time")


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), f"{key} differs"


def test_sigkill_then_resume_is_bit_identical(data_file: Path, reference: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    proc = start_training(data_file, out)
    wait_for_progress(proc, out / CHECKPOINT_FILE, epochs=2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model.pt").exists(), "killed too late: the run had finished"
    saved = load_checkpoint(out / CHECKPOINT_FILE)
    assert 2 <= saved["progress"]["epoch"] < 12

    assert main(["train", "--data", str(data_file), "--out", str(out), *OPTIONS, *NEVER, "--resume"]) == 0
    assert_same_weights(reference, torch.load(out / "model.pt", weights_only=True)["state_dict"])
    assert not (out / CHECKPOINT_FILE).exists()
    assert not list(out.glob(".*.tmp")), "stale temporary files were left behind"


def test_sigint_saves_then_exits_and_resume_matches(data_file: Path, reference: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    proc = start_training(data_file, out)
    wait_for_progress(proc, out / CHECKPOINT_FILE, epochs=1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iflow: interrupted; checkpoint saved to"), err
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == [MARKER, CHECKPOINT_FILE]
    saved = load_checkpoint(out / CHECKPOINT_FILE)
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    capsys.readouterr()
    assert main(["train", "--data", str(data_file), "--out", str(out), *OPTIONS, "--flow", "glow", "--resume"]) == 2
    assert "options differ from the checkpointed run (model.flow 'realnvp' -> 'glow')" in capsys.readouterr().err

    assert main(["train", "--data", str(data_file), "--out", str(out), *OPTIONS, *NEVER, "--resume"]) == 0
    assert_same_weights(reference, torch.load(out / "model.pt", weights_only=True)["state_dict"])


def tiny_model() -> IdentifiableFlow:
    torch.manual_seed(0)
    return IdentifiableFlow(build_flow("realnvp", DIM, depth=1, hidden=8), ConditionalExpFamilyPrior(DIM, n_labels=4))


def tiny_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    return make_dataset(rng.normal(size=(200, DIM)), np.arange(200) % 4, name=f"data{seed}")


def test_resume_refuses_other_options_or_data(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_FILE
    config = TrainConfig(epochs=2, batch_size=50)
    fit(tiny_model(), tiny_data(), config, progress=False, checkpoint=Checkpointing(path, every=0))
    assert path.exists()
    with pytest.raises(UserError, match="options differ.*lr"):
        fit(tiny_model(), tiny_data(), TrainConfig(epochs=2, batch_size=50, lr=0.05), progress=False,
            checkpoint=Checkpointing(path, resume=True))  # fmt: skip
    with pytest.raises(UserError, match="different data"):
        fit(tiny_model(), tiny_data(seed=1), config, progress=False, checkpoint=Checkpointing(path, resume=True))


def test_checkpoint_of_another_model_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_FILE
    config = TrainConfig(epochs=1, batch_size=50)
    fit(tiny_model(), tiny_data(), config, progress=False, checkpoint=Checkpointing(path))
    other = IdentifiableFlow(build_flow("glow", DIM, depth=1, hidden=8), ConditionalExpFamilyPrior(DIM, n_labels=4))
    with pytest.raises(UserError, match="does not fit this model"):
        fit(other, tiny_data(), config, progress=False, checkpoint=Checkpointing(path, resume=True))


def test_resume_of_a_finished_checkpoint_reproduces_the_result(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_FILE
    config = TrainConfig(epochs=2, batch_size=50)
    first = tiny_model()
    result = fit(first, tiny_data(), config, progress=False, checkpoint=Checkpointing(path, every=1e9))
    again = tiny_model()
    with torch.no_grad():  # different starting weights: everything must come from the checkpoint
        for p in again.parameters():
            p.add_(1.0)
    resumed = fit(again, tiny_data(), config, progress=False, checkpoint=Checkpointing(path, resume=True))
    assert_same_weights(first.state_dict(), again.state_dict())
    assert resumed.history == result.history
    assert resumed.best_epoch == result.best_epoch


def test_corrupt_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_FILE
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="unreadable checkpoint"):
        load_checkpoint(path)


def test_sigterm_mid_epoch_saves_and_resume_matches_an_uninterrupted_fit(tmp_path: Path) -> None:
    config = TrainConfig(epochs=3, batch_size=40)  # 4 steps per epoch
    reference = tiny_model()
    fit(reference, tiny_data(), config, progress=False)

    path = tmp_path / CHECKPOINT_FILE
    with pytest.raises(TrainingInterrupted, match="checkpoint saved"):
        fit(SignalAt(tiny_model(), 6, signal.SIGTERM), tiny_data(), config, progress=False, checkpoint=Checkpointing(path))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the previous handler must be restored"
    progress = load_checkpoint(path)["progress"]
    assert (progress["epoch"], progress["step"]) == (1, 2)

    resumed = tiny_model()
    fit(resumed, tiny_data(), config, progress=False, checkpoint=Checkpointing(path, resume=True))
    assert_same_weights(reference.state_dict(), resumed.state_dict())


class RunsCode:
    """Unpickling this runs a shell command: what a crafted checkpoint would do."""

    def __init__(self, witness: Path):
        self.witness = witness

    def __reduce__(self):
        return os.system, (f"touch {self.witness}",)


def test_a_crafted_checkpoint_is_refused_before_any_of_it_runs(data_file: Path, tmp_path: Path, capsys) -> None:
    victim, witness = tmp_path / "victim", tmp_path / "code-ran"
    prepare_run_dir(victim, overwrite=False)  # a run directory, as a killed run leaves it
    torch.save({"version": 2, "model": {"w": torch.zeros(1)}, "rng": RunsCode(witness)}, victim / CHECKPOINT_FILE)
    with pytest.raises(UserError, match="unreadable checkpoint"):
        load_checkpoint(victim / CHECKPOINT_FILE)
    assert main(["train", "--data", str(data_file), "--out", str(victim), *OPTIONS, "--resume"]) == 2
    assert "unreadable checkpoint" in capsys.readouterr().err
    assert not witness.exists(), "the checkpoint's pickle ran a command"


def test_a_checkpoint_of_the_wrong_layout_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_FILE
    torch.save({"version": 2, "model": [torch.zeros(1)]}, path)
    with pytest.raises(UserError, match="not an iflow checkpoint"):
        load_checkpoint(path)
    torch.save({"version": 1, "model": {}}, path)
    with pytest.raises(UserError, match="older iflow"):
        load_checkpoint(path)


DIVERGING = "--epochs 2 --batch-size 32 --flow realnvp --depth 2 --hidden 16 --lr 3 --prior gauss".split()  # noqa: SIM905


def test_rollback_after_a_divergence_does_not_depend_on_checkpoint_timing(data_file: Path, tmp_path: Path, caplog) -> None:
    weights = []
    for every in ("0", "0.02", "1e9"):
        out = tmp_path / f"every-{every}"
        assert main(["train", "--data", str(data_file), "--out", str(out), *DIVERGING, "--checkpoint-every", every]) == 0
        weights.append(torch.load(out / "model.pt", weights_only=True)["state_dict"])
    assert "rolled back" in caplog.text, "the run must diverge (and recover) for this test to mean anything"
    assert_same_weights(weights[0], weights[1])
    assert_same_weights(weights[0], weights[2])


def test_a_diverged_run_leaves_no_checkpoint_and_nothing_else(data_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["train", "--data", str(data_file), "--out", str(out), *DIVERGING, "--lr", "1e8", "--checkpoint-every", "0"]
    assert main(argv) == 2
    assert "training diverged" in capsys.readouterr().err
    assert not out.exists(), "a diverged run must leave no checkpoint.pt (nor its folder)"
