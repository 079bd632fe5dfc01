"""iflow params: lambda(u) per label, with the family's usual parameters, exported from a run."""

import numpy as np
import pytest

from iflow.cli import main
from iflow.data.dataset import load_npz
from iflow.runs import encode_dataset, load_run
from iflow.splits import training_rows

TINY = ["--flow", "realnvp", "--depth", "2", "--hidden", "16", "--batch-size", "64", "--epochs", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(5)
    u = np.arange(900) % 3
    np.savez(root / "d.npz", x=rng.normal(size=(900, 2)) * (1 + u[:, None]) + 2 * u[:, None], u=u)
    return root / "d.npz"


def test_exported_gaussian_prior_is_each_labels_latent_mean_and_variance(data_file, tmp_path):
    """With the closed-form prior fit, every label's prior is the ML fit to its training latents."""
    run_dir, out = tmp_path / "run", tmp_path / "lambda.npz"
    assert main(["train", "--data", str(data_file), "--prior", "gauss", *TINY, "--out", str(run_dir)]) == 0
    assert main(["params", "--run", str(run_dir), "--out", str(out)]) == 0
    with np.load(out) as f:
        eta, mean, variance = f["natural_params"], f["mean"], f["variance"]
        assert eta.shape == (3, 2, 2) and str(f["family"]) == "gauss" and np.array_equal(f["u"], [0, 1, 2])
    run = load_run(run_dir)
    rows = training_rows(run, load_npz(data_file), "train")
    z = encode_dataset(run, rows)
    for label in range(3):
        np.testing.assert_allclose(mean[label], z[rows.u == label].mean(0), rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(variance[label], z[rows.u == label].var(0), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(eta[..., 0], mean / variance, rtol=1e-5)
    np.testing.assert_allclose(eta[..., 1], -0.5 / variance, rtol=1e-5)


def test_laplace_prior_exports_natural_params_and_labels_can_be_chosen(data_file, tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "lambda.npz"
    assert main(["train", "--data", str(data_file), "--prior", "laplace", *TINY, "--out", str(run_dir)]) == 0
    np.savez(tmp_path / "labels.npz", u=np.array([2, 0]))
    assert main(["params", "--run", str(run_dir), "--u-file", str(tmp_path / "labels.npz"), "--out", str(out)]) == 0
    with np.load(out) as f:
        assert set(f.files) == {"natural_params", "u", "family"} and np.array_equal(f["u"], [2, 0])
        assert f["natural_params"].shape == (2, 2, 1) and np.all(f["natural_params"] < 0)  # eta = -1 / scale


def test_a_prior_that_ignores_u_has_nothing_to_export(data_file, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--data", str(data_file), "--model", "flow", *TINY, "--out", str(run_dir)]) == 0
    capsys.readouterr()
    assert main(["params", "--run", str(run_dir), "--out", str(tmp_path / "l.npz")]) == 2
    assert "does not depend on u" in capsys.readouterr().err and not (tmp_path / "l.npz").exists()
