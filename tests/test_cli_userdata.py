"""A user's own data on the command line: a continuous time stamp as u, CSV files carrying u."""

import json

import numpy as np
import pytest

from iflow.cli import main
from iflow.data.dataset import load_npz
from iflow.runs import evaluate, load_run

TINY = ["--flow", "realnvp", "--depth", "2", "--hidden", "16", "--batch-size", "128", "--threads", "1"]


def time_stamped(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x whose spread follows a time stamp in seconds (0..3600): (n, 2) and t (n,)."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 3600, n)
    scale = np.exp(1.5 * np.sin(2 * np.pi * t / 3600))[:, None]
    s = rng.normal(size=(n, 2)) * scale
    return np.stack([s[:, 0] + 0.3 * s[:, 1], s[:, 1]], 1), t


@pytest.fixture(scope="module")
def time_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("time")
    x, t = time_stamped()
    np.savez(root / "t.npz", x=x, u=t[:, None].astype("f4"))
    assert main(["train", "--data", str(root / "t.npz"), "--epochs", "6", "--prior", "gauss", *TINY, "--out", str(root / "run")]) == 0
    return root


def test_a_time_stamp_in_seconds_is_a_standardised_continuous_u(time_run):
    config = json.loads((time_run / "run" / "config.json").read_text())
    assert config["model"]["aux"] == {"kind": "continuous", "n_labels": None, "aux_dim": 1}
    data = load_npz(time_run / "t.npz")
    run = load_run(time_run / "run")
    assert run.aux_standardizer.mean[0] == pytest.approx(data.u.mean(), rel=1e-4)
    model_u = run.standardized(data).u
    assert abs(model_u.mean()) < 1e-3 and model_u.std() == pytest.approx(1.0, abs=1e-3)


def test_the_model_uses_the_time_stamp(time_run):
    """The variance follows t: scored with t reversed in order, the likelihood must drop clearly."""
    data = load_npz(time_run / "t.npz")
    run = load_run(time_run / "run")
    right = evaluate(run, data)["log_likelihood"]
    shuffled = evaluate(run, type(data)(x=data.x, u=data.u[::-1].copy()))["log_likelihood"]
    assert right - shuffled > 0.3


def test_sample_at_a_time_and_at_one_time_per_draw(time_run, tmp_path):
    run = time_run / "run"
    quiet, loud = tmp_path / "quiet.npz", tmp_path / "loud.npz"
    assert main(["sample", "--run", str(run), "--u", "2700", "--n", "2000", "--out", str(quiet)]) == 0
    assert main(["sample", "--run", str(run), "--u", "900", "--n", "2000", "--out", str(loud)]) == 0
    with np.load(quiet) as q, np.load(loud) as lo:
        assert q["u"].shape == (2000, 1) and np.all(q["u"] == 2700)
        assert lo["x"].std() > 3 * q["x"].std()  # exp(1.5) against exp(-1.5) in the generator
    times = np.linspace(0, 3600, 9)[:, None]
    np.savez(tmp_path / "times.npz", u=times)
    assert main(["sample", "--run", str(run), "--u-file", str(tmp_path / "times.npz"), "--out", str(tmp_path / "s.npz")]) == 0
    with np.load(tmp_path / "s.npz") as f:
        assert f["x"].shape == (9, 2) and np.array_equal(f["u"], times.astype("f4"))


def test_csv_carries_u_in_its_last_columns(tmp_path, capsys):
    x, t = time_stamped(1000)
    labels = (t // 900).astype(int)
    np.savetxt(tmp_path / "t.csv", np.c_[x, t], delimiter=",")
    np.savetxt(tmp_path / "labels.csv", np.c_[x, labels], delimiter=",")
    assert main(["train", "--data", str(tmp_path / "t.csv"), "--u-cols", "1", "--epochs", "1", *TINY, "--out", str(tmp_path / "a")]) == 0
    assert main(["train", "--data", str(tmp_path / "labels.csv"), "--u-cols", "1", "--epochs", "1", *TINY, "--out", str(tmp_path / "b")]) == 0
    continuous = json.loads((tmp_path / "a" / "config.json").read_text())["model"]
    labelled = json.loads((tmp_path / "b" / "config.json").read_text())["model"]
    assert continuous["dim"] == 2 and continuous["aux"]["kind"] == "continuous"
    assert labelled["dim"] == 2 and labelled["aux"] == {"kind": "labels", "n_labels": 4, "aux_dim": None}
    assert "warning" not in capsys.readouterr().err


def test_eval_encode_and_consistency_read_a_csv_as_the_run_was_trained(tmp_path, capsys):
    x, t = time_stamped(1000)
    csv = str(tmp_path / "labels.csv")
    np.savetxt(csv, np.c_[x, (t // 900).astype(int)], delimiter=",")
    for name in ("a", "b"):
        assert main(["train", "--data", csv, "--u-cols", "1", "--epochs", "1", *TINY, "--out", str(tmp_path / name)]) == 0
    capsys.readouterr()
    assert main(["eval", "--run", str(tmp_path / "a"), "--data", csv, "--split", "val", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 100  # the validation tenth of 1000 rows
    assert main(["encode", "--run", str(tmp_path / "a"), "--data", csv, "--out", str(tmp_path / "z.npz")]) == 0
    with np.load(tmp_path / "z.npz") as f:
        assert f["z"].shape == (1000, 2)
    assert main(["consistency", str(tmp_path / "a"), str(tmp_path / "b"), "--data", csv, "--json"]) == 0
    capsys.readouterr()  # given explicitly, the option wins: 3 columns are not this run's 2
    assert main(["eval", "--run", str(tmp_path / "a"), "--data", csv, "--u-cols", "0"]) == 2
    assert "x has 3 dimensions" in capsys.readouterr().err


def test_csv_without_u_warns_that_one_label_is_not_identifiable(tmp_path, capsys):
    np.savetxt(tmp_path / "x.csv", time_stamped(600)[0], delimiter=",")
    assert main(["train", "--data", str(tmp_path / "x.csv"), "--epochs", "1", *TINY, "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "iflow: warning:" in err and "not identifiable" in err and "--u-cols" in err
    assert main(["train", "--data", str(tmp_path / "x.csv"), "--model", "flow", "--epochs", "1", *TINY,
                 "--out", str(tmp_path / "r2")]) == 0  # fmt: skip
    assert "warning" not in capsys.readouterr().err  # the unconditional baseline is meant to ignore u
