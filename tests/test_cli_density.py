"""The command line on density-estimation data: built-in sets, CSV files, eval metrics, class-conditional sampling."""

import json

import numpy as np
import pytest

from iflow.cli import main

TINY = ["--epochs", "1", "--depth", "2", "--hidden", "16", "--threads", "1"]


def test_toy_train_eval_sample(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "eight-gaussians", "--flow", "realnvp", *TINY, "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["n"] == 20_000 and metrics["test"]["nll_minus_entropy"] > 0
    assert (run / "figures" / "density.png").stat().st_size > 0 and (run / "figures" / "training.png").is_file()
    capsys.readouterr()

    assert main(["eval", "--run", str(run), "--data", "eight-gaussians", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["n"] == 20_000 and scored["bits_per_dim"] == pytest.approx(
        -scored["log_likelihood"] / (2 * np.log(2))
    )
    assert scored["nll_minus_entropy"] == pytest.approx(metrics["test"]["nll_minus_entropy"], abs=1e-4)

    out = tmp_path / "samples.npz"
    assert main(["sample", "--run", str(run), "--u", "0", "--n", "7", "--out", str(out)]) == 0
    assert np.load(out)["x"].shape == (7, 2)
    assert main(["sample", "--run", str(run), "--u", "3", "--n", "7", "--out", str(out)]) == 2
    assert "unknown label" in capsys.readouterr().err


def test_digits_glow_is_multiscale_and_samples_per_class(tmp_path, capsys):
    run = tmp_path / "digits"
    args = ["train", "--data", "digits", "--flow", "glow", "--batch-size", "64", *TINY, "--out", str(run)]
    assert main(args) == 0
    config = json.loads((run / "config.json").read_text())["model"]
    assert config["image_shape"] == [1, 8, 8] and config["unit_interval"] is True
    assert (run / "figures" / "samples.png").stat().st_size > 0
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert test["n"] == 359 and 1.0 < test["bits_per_dim"] < 6.0
    out = tmp_path / "threes.npz"
    assert main(["sample", "--run", str(run), "--u", "3", "--n", "5", "--out", str(out)]) == 0
    assert np.load(out)["x"].shape == (5, 64)
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--data", "digits"]) == 0
    assert "bits/dim" in capsys.readouterr().out


def test_csv_training_and_bad_csv(tmp_path, capsys):
    rng = np.random.default_rng(0)
    good = tmp_path / "points.csv"
    np.savetxt(good, rng.normal(size=(600, 3)), delimiter=",")
    assert main(["train", "--data", str(good), *TINY, "--out", str(tmp_path / "run")]) == 0
    bad = tmp_path / "header.csv"
    bad.write_text("a,b,c\n" + good.read_text())
    capsys.readouterr()
    assert main(["eval", "--run", str(tmp_path / "run"), "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("iflow: error:") and "header" in err and len(err.strip().splitlines()) == 1
