"""The VAE family through the command line: train, save, load, encode, eval, sample."""

import json

import numpy as np
import pytest
import torch

from iflow.cli import main
from iflow.data.dataset import load_npz
from iflow.runs import encode_dataset, load_run


@pytest.fixture(scope="module")
def noisy_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "noisy.npz"
    assert main(["data", "synthetic", "--sources", "3", "--segments", "4", "--per-segment", "100",
                 "--noise", "0.1", "--out", str(path)]) == 0  # fmt: skip
    return path


@pytest.fixture(scope="module")
def ivae_run(noisy_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ivae"
    argv = ["train", "--data", str(noisy_data), "--model", "ivae", "--epochs", "2", "--batch-size", "64",
            "--hidden", "16", "--depth", "1", "--iw-samples", "8", "--anneal-steps", "3",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    return out


def test_noisy_synthetic_file_has_no_true_log_likelihood(noisy_data):
    assert load_npz(noisy_data).true_log_likelihood is None


def test_ivae_run_round_trip(ivae_run, noisy_data, tmp_path, capsys):
    config = json.loads((ivae_run / "config.json").read_text())["model"]
    assert (config["model"], config["latent_dim"], config["iw_samples"], config["anneal_steps"]) == ("ivae", 3, 8, 3)
    run = load_run(ivae_run)
    assert int(run.model.step) > 0  # the annealing counter is saved with the weights
    data = load_npz(noisy_data)
    out = tmp_path / "z.npz"
    capsys.readouterr()
    assert main(["encode", "--run", str(ivae_run), "--data", str(noisy_data), "--out", str(out)]) == 0
    assert "posterior mean" in capsys.readouterr().out
    z = np.load(out)["z"]
    x = torch.as_tensor(run.standardized(data).x)
    with torch.no_grad():
        posterior_mean = run.model.encoder(x, torch.as_tensor(data.u))[0].numpy()
    np.testing.assert_allclose(z, posterior_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(encode_dataset(run, data), z, rtol=1e-6)


def test_ivae_eval_says_bound(ivae_run, noisy_data, capsys):
    capsys.readouterr()
    assert main(["eval", "--run", str(ivae_run), "--data", str(noisy_data), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["exact"] is False
    assert metrics["estimator"] == "importance-weighted lower bound, K = 8"
    assert np.isfinite(metrics["log_likelihood"]) and 0 <= metrics["mcc"] <= 1
    assert main(["eval", "--run", str(ivae_run), "--data", str(noisy_data)]) == 0
    assert "importance-weighted lower bound, K = 8" in capsys.readouterr().out


def test_ivae_sample_decodes_prior_draws(ivae_run, tmp_path, capsys):
    out = tmp_path / "x.npz"
    assert main(["sample", "--run", str(ivae_run), "--u", "1", "--n", "50", "--out", str(out)]) == 0
    assert "decoder mean" in capsys.readouterr().out
    x = np.load(out)["x"]
    assert x.shape == (50, 3) and np.all(np.isfinite(x))


@pytest.mark.parametrize("model", ["vae", "betavae", "tcvae"])
def test_baselines_train_with_fewer_latents(model, noisy_data, tmp_path):
    out = tmp_path / model
    argv = ["train", "--data", str(noisy_data), "--model", model, "--latent-dim", "2", "--epochs", "1",
            "--batch-size", "64", "--hidden", "16", "--depth", "1", "--iw-samples", "4", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert load_run(out).model.encoder.net[-1].out_features == 4  # mean and log-variance of 2 latents


def test_bernoulli_ivae_on_discrete_data(tmp_path):
    data = tmp_path / "bin.npz"
    assert main(["data", "synthetic", "--sources", "2", "--dim", "6", "--obs", "bernoulli", "--segments", "4",
                 "--per-segment", "100", "--out", str(data)]) == 0  # fmt: skip
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--model", "ivae", "--obs", "bernoulli", "--latent-dim", "2", "--epochs", "1",
            "--batch-size", "64", "--hidden", "16", "--depth", "1", "--iw-samples", "4", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    run = load_run(out)
    np.testing.assert_array_equal(run.standardizer.std, 1.0)  # binary x is not standardised


def test_bernoulli_model_rejects_continuous_data(noisy_data, tmp_path, capsys):
    argv = ["train", "--data", str(noisy_data), "--model", "ivae", "--obs", "bernoulli", "--epochs", "1", "--batch-size", "64",
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 2
    assert f"iflow: error: {noisy_data}: --obs bernoulli needs x in {{0, 1}}" in capsys.readouterr().err


def test_flow_rejects_latent_dim(noisy_data, tmp_path, capsys):
    argv = ["train", "--data", str(noisy_data), "--model", "iflow", "--latent-dim", "2", "--batch-size", "64", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    assert "--latent-dim is for the VAE family" in capsys.readouterr().err


def test_train_samples_reach_the_run_and_refuse_beta(noisy_data, tmp_path, capsys):
    out = tmp_path / "iwae"
    argv = ["train", "--data", str(noisy_data), "--model", "ivae", "--start", "random", "--epochs", "1", "--batch-size", "64",
            "--hidden", "16", "--depth", "1", "--iw-samples", "4", "--train-samples", "3", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((out / "config.json").read_text())["model"]["train_samples"] == 3
    assert load_run(out).model.train_samples == 3
    capsys.readouterr()
    bad = argv[:-1] + [str(tmp_path / "bad"), "--model", "betavae"]
    assert main(bad) == 2
    assert "iflow: error: --train-samples 3 trains the importance-weighted bound" in capsys.readouterr().err


def test_product_encoder_round_trip(noisy_data, tmp_path, capsys):
    out = tmp_path / "product"
    argv = ["train", "--data", str(noisy_data), "--model", "ivae", "--start", "random", "--encoder", "product", "--epochs", "1",
            "--batch-size", "64", "--hidden", "16", "--depth", "1", "--iw-samples", "4", "--train-samples", "3",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((out / "config.json").read_text())["model"]["encoder"] == "product"
    run = load_run(out)
    assert run.model.product_posterior and run.model.encoder.aux is None
    data = load_npz(noisy_data)
    z_path = tmp_path / "z.npz"
    assert main(["encode", "--run", str(out), "--data", str(noisy_data), "--out", str(z_path)]) == 0
    x, u = torch.as_tensor(run.standardized(data).x), torch.as_tensor(data.u)
    with torch.no_grad():
        np.testing.assert_allclose(np.load(z_path)["z"], run.model.posterior(x, u)[0].numpy(), rtol=1e-5, atol=1e-6)
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert main(argv[:-1] + [str(bad), "--prior", "laplace"]) == 2
    assert "iflow: error: --encoder product multiplies by a Gaussian prior" in capsys.readouterr().err
    assert not bad.exists()


def test_flow_posterior_and_objective_weights_through_the_command_line(noisy_data, tmp_path, capsys):
    out = tmp_path / "flow"
    argv = ["train", "--data", str(noisy_data), "--model", "ivae", "--start", "random", "--posterior", "flow", "--posterior-depth", "1",
            "--epochs", "1", "--batch-size", "64", "--hidden", "16", "--depth", "1", "--iw-samples", "4",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    recorded = json.loads((out / "config.json").read_text())["model"]
    assert recorded["posterior"] == "flow" and recorded["posterior_depth"] == 1
    assert len(load_run(out).model.posterior_flow.transform._transforms) == 1
    weighted = tmp_path / "weighted"
    argv = ["train", "--data", str(noisy_data), "--model", "ivae", "--start", "random", "--objective-weights", "100", "1", "0", "10",
            "--epochs", "1", "--batch-size", "64", "--hidden", "16", "--depth", "1", "--out", str(weighted)]  # fmt: skip
    assert main(argv) == 0
    assert load_run(weighted).model.objective_weights == (100.0, 1.0, 0.0, 10.0)
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert main(argv[:-1] + [str(bad), "--train-samples", "4"]) == 2
    assert "iflow: error: --objective-weights re-weights the ELBO" in capsys.readouterr().err
    assert main(argv[:-1] + [str(bad), "--model", "tcvae", "--posterior", "flow"]) == 2
    assert "iflow: error: --posterior flow has no total-correlation term" in capsys.readouterr().err
    assert not bad.exists()
