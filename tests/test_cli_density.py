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


def blob_images(n: int, size: int, levels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, size, size) integer images of one blob, left for class 0 and right for class 1."""
    rng = np.random.default_rng(seed)
    u = np.arange(n) % 2
    yy, xx = np.mgrid[:size, :size]
    cx = np.where(u, 0.7, 0.3)[:, None, None] * size + rng.normal(0, 0.5, (n, 1, 1))
    cy = size / 2 + rng.normal(0, 0.5, (n, 1, 1))
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 4.0)
    return np.round(blob * (levels - 1)).astype(np.uint8), u


def column_centroid(images: np.ndarray) -> float:
    mean = images.clip(0, None).mean(0)
    return float((mean.sum(0) * np.arange(mean.shape[1])).sum() / mean.sum())


def test_own_images_get_the_multiscale_glow_bits_per_dim_and_class_samples(tmp_path, capsys):
    images, u = blob_images(600, 8, 4, seed=0)
    np.savez(tmp_path / "blobs.npz", x=images, u=u)  # no levels array: --levels says it, and the run remembers it
    run = tmp_path / "run"
    argv = ["train", "--data", str(tmp_path / "blobs.npz"), "--levels", "4", "--flow", "glow", "--depth", "1", "--hidden", "16",
            "--epochs", "2", "--batch-size", "64", "--threads", "1", "--out", str(run)]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((run / "config.json").read_text())["model"]
    assert config["image_shape"] == [1, 8, 8] and config["unit_interval"] is True
    from iflow.flows.multiscale import ImageFlow
    from iflow.runs import load_run

    assert any(isinstance(t, ImageFlow) for t in load_run(run).model.flow._transforms)
    assert (run / "figures" / "samples.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--data", str(tmp_path / "blobs.npz"), "--split", "val", "--json"]) == 0
    val = json.loads(capsys.readouterr().out)
    assert val["bits_per_dim"] == pytest.approx(-val["log_likelihood"] / (64 * np.log(2)))
    assert 0.2 < val["bits_per_dim"] < np.log2(4)  # better than uniform on the 4 levels, and a proper density
    centroids = []
    for label in (0, 1):
        out = tmp_path / f"s{label}.npz"
        assert main(["sample", "--run", str(run), "--u", str(label), "--n", "300", "--out", str(out)]) == 0
        with np.load(out) as f:
            assert f["images"].shape == (300, 1, 8, 8)
            centroids.append(column_centroid(f["images"][:, 0]))
    assert centroids[1] - centroids[0] > 0.75  # class-conditional: the blob moves right for class 1
