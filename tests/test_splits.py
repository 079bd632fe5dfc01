"""eval/encode on a run's own training or validation rows, every row, or a built-in test split;
log-likelihoods in the units of the x given, labelled."""

import json

import numpy as np
import pytest

from iflow.cli import main
from iflow.plotting import plot_training_curves

TINY = ["--flow", "realnvp", "--depth", "2", "--hidden", "16", "--batch-size", "64", "--threads", "1"]


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory):
    """x in large units (thousands), so standardised and given units differ by a clear log|det|."""
    root = tmp_path_factory.mktemp("splits")
    rng = np.random.default_rng(3)
    u = np.arange(1200) % 4
    x = (rng.normal(size=(1200, 3)) + u[:, None]) * 1000.0
    np.savez(root / "d.npz", x=x, u=u)
    assert main(["train", "--data", str(root / "d.npz"), "--epochs", "3", *TINY, "--out", str(root / "run")]) == 0
    return root


def eval_json(capsys, *argv) -> dict:
    capsys.readouterr()
    assert main(["eval", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_validation_rows_score_what_training_reported_in_the_given_units(labelled_run, capsys):
    run, data = labelled_run / "run", labelled_run / "d.npz"
    history = json.loads((run / "history.json").read_text())
    best = history["epochs"][history["best_epoch"] - 1]
    val = eval_json(capsys, "--run", str(run), "--data", str(data), "--split", "val")
    assert val["n"] == 120
    assert val["log_likelihood"] == pytest.approx(best["val_log_likelihood_data"], abs=1e-4)
    log_abs_det = -np.log(json.loads((run / "config.json").read_text())["standardizer"]["std"]).sum()
    assert best["val_log_likelihood_data"] - best["val_log_likelihood"] == pytest.approx(log_abs_det)
    assert log_abs_det < -15  # the two unit systems are far apart here
    assert history["units"]["val_log_likelihood"].startswith("nats per sample, standardised x")
    assert "units given" in history["units"]["val_log_likelihood_data"] and "units given" in val["log_likelihood_units"]


def test_training_and_validation_rows_partition_all_rows(labelled_run, capsys):
    run, data = labelled_run / "run", labelled_run / "d.npz"
    scores = {s: eval_json(capsys, "--run", str(run), "--data", str(data), "--split", s) for s in ("train", "val", "all")}
    assert scores["train"]["n"] + scores["val"]["n"] == scores["all"]["n"] == 1200
    weighted = (scores["train"]["log_likelihood"] * 1080 + scores["val"]["log_likelihood"] * 120) / 1200
    assert scores["all"]["log_likelihood"] == pytest.approx(weighted, abs=1e-4)
    assert scores["train"]["log_likelihood"] != pytest.approx(scores["val"]["log_likelihood"], abs=1e-4)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "all" and metrics["train"]["n"] == 1080 and metrics["val"]["n"] == 120
    assert metrics["train"]["log_likelihood"] == pytest.approx(scores["train"]["log_likelihood"], abs=1e-5)


def test_splits_of_other_data_are_refused(labelled_run, capsys, tmp_path):
    run, data = labelled_run / "run", labelled_run / "d.npz"
    with np.load(data) as f:
        np.savez(tmp_path / "other.npz", x=f["x"][::-1], u=f["u"][::-1])
    for argv, fragment in (([str(tmp_path / "other.npz"), "--split", "val"], "needs the data the run was trained on"),
                           ([str(data), "--split", "test"], "--split val"),
                           ([str(data), "--split", "nope"], "unknown --split")):  # fmt: skip
        capsys.readouterr()
        assert main(["eval", "--run", str(run), "--data", *argv]) == 2
        assert fragment in capsys.readouterr().err


def test_training_figure_is_in_the_given_units(labelled_run):
    from matplotlib.figure import Figure

    history = json.loads((labelled_run / "run" / "history.json").read_text())["epochs"]
    axes = plot_training_curves(Figure().subplots(1, 3), history)
    assert "x as given" in axes[1].get_ylabel()
    np.testing.assert_allclose(axes[1].lines[0].get_ydata(), [h["val_log_likelihood_data"] for h in history])
    old_style = [{k: v for k, v in h.items() if k != "val_log_likelihood_data"} for h in history]
    assert "standardised" in plot_training_curves(Figure().subplots(1, 3), old_style)[1].get_ylabel()


def test_encode_reads_csv_files_and_built_in_sets(tmp_path, capsys):
    points = np.random.default_rng(0).normal(size=(700, 2))
    np.savetxt(tmp_path / "p.csv", points, delimiter=",")
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "p.csv"), "--epochs", "1", *TINY, "--out", str(run)]) == 0
    for data, rows in ((str(tmp_path / "p.csv"), 700), ("eight-gaussians", 20_000)):
        assert main(["encode", "--run", str(run), "--data", data, "--out", str(tmp_path / "z.npz")]) == 0
        assert np.load(tmp_path / "z.npz")["z"].shape == (rows, 2)
    assert main(["encode", "--run", str(run), "--data", str(tmp_path / "p.csv"), "--split", "val",
                 "--out", str(tmp_path / "z.npz")]) == 0  # fmt: skip
    assert np.load(tmp_path / "z.npz")["z"].shape == (70, 2)
