"""Baselines without a likelihood: TCL, FastICA on x, x itself, through the same train/eval/save path."""

import json

import numpy as np
import pytest
import torch

from iflow.cli import main
from iflow.config import ModelConfig, TrainConfig
from iflow.data.dataset import make_dataset
from iflow.data.synthetic import SyntheticConfig, generate
from iflow.errors import UserError
from iflow.metrics import mcc
from iflow.models.tcl import TCL
from iflow.runs import encode_dataset, evaluate, load_run, save_run, train


def linear_mixture(seed=0, n=3000):
    """Laplace sources mixed by a random matrix: FastICA's home ground."""
    rng = np.random.default_rng(seed)
    s = rng.laplace(size=(n, 3)).astype(np.float32)
    a = rng.normal(size=(3, 3))
    return make_dataset((s @ a).astype(np.float32), np.zeros(n, dtype=np.int64), s, name="linear")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tcl_log_prob_is_a_normalised_log_posterior_of_u(dtype):
    torch.manual_seed(0)
    model = TCL(dim=3, latent=2, n_labels=5, hidden=8, layers=2, ica=False).to(dtype)
    x = torch.randn(7, 3, dtype=dtype)
    per_label = torch.stack([model.log_prob(x, torch.full((7,), k)) for k in range(5)], 1)
    torch.testing.assert_close(per_label.logsumexp(1), torch.zeros(7, dtype=dtype))
    assert model.encode(x).shape == (7, 2) and bool((model.encode(x) >= 0).all())  # |h(x)| before ICA


def test_fastica_unmixes_a_linear_mixture_and_x_itself_does_not():
    data = linear_mixture()
    runs = {m: train(data, ModelConfig(model=m), TrainConfig(seed=1), progress=False)[0] for m in ("fastica", "identity")}
    assert mcc(encode_dataset(runs["fastica"], data), data.s).mcc > 0.97
    identity = encode_dataset(runs["identity"], data)
    np.testing.assert_allclose(mcc(identity, data.s).mcc, mcc(data.x, data.s).mcc, atol=1e-6)
    assert mcc(identity, data.s).mcc < 0.9


def test_tcl_learns_to_classify_segments_and_fits_ica_after_training():
    d = generate(SyntheticConfig(sources=2, segments=8, per_segment=400, means="easy", seed=1))
    data = make_dataset(d.x, d.u, d.s, name="easy")
    config = TrainConfig(epochs=6, batch_size=128, lr=1e-2, seed=0)
    run, result = train(data, ModelConfig(model="tcl", tcl_ica=True), config, progress=False)
    assert result.best_val_log_likelihood > np.log(1 / 8) + 0.5  # well above chance, log(1/8) = -2.08
    assert not torch.allclose(run.model.unmixing.matrix, torch.eye(2))  # FastICA fitted after training
    metrics = evaluate(run, data)
    assert metrics["log_likelihood"] is None and metrics["bits_per_dim"] is None and metrics["estimator"] == "none"
    assert "gap" not in metrics and metrics["mcc"] is not None


def test_saved_baselines_load_back_and_encode_the_same(tmp_path):
    data = linear_mixture(n=800)
    for model in ("fastica", "tcl"):
        run, result = train(data, ModelConfig(model=model), TrainConfig(epochs=1, batch_size=100), progress=False)
        save_run(run, tmp_path / model, result)
        np.testing.assert_array_equal(encode_dataset(load_run(tmp_path / model), data), encode_dataset(run, data))


@pytest.mark.parametrize("name", ["fastica", "identity"])
def test_closed_form_baselines_are_not_trained_and_have_no_likelihood(name):
    from iflow.models.build import MODELS, build_model

    assert not MODELS[name].trained and MODELS[name].closed_form
    model = build_model(ModelConfig(model=name, dim=3))
    assert list(model.parameters()) == [] and model.encode(torch.eye(3)).shape == (3, 3)
    for method in (model.log_prob, model.loss):
        with pytest.raises(UserError, match="likelihood|closed form"):
            method(torch.eye(3), torch.zeros(3, dtype=torch.long))


def test_tcl_needs_integer_labels():
    data = make_dataset(np.zeros((600, 2), np.float32), np.random.default_rng(0).normal(size=(600, 3)).astype(np.float32))
    with pytest.raises(UserError, match="integer segment labels"):
        train(data, ModelConfig(model="tcl"), TrainConfig(epochs=1, batch_size=100), progress=False)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("baselines") / "d.npz"
    assert main(["data", "synthetic", "--sources", "2", "--segments", "4", "--per-segment", "150", "--out", str(path)]) == 0
    return path


@pytest.mark.parametrize("options", [["--model", "tcl", "--tcl-ica"], ["--model", "fastica"], ["--model", "identity"]])
def test_cli_train_encode_eval_write_the_same_run_directory(options, data_file, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--data", str(data_file), *options, "--epochs", "2", "--batch-size", "64", "--out", str(run)]
    assert main(argv) == 0
    for name in ("config.json", "model.pt", "metrics.json", "history.json", "figures/training.png", "figures/sources.png"):
        assert (run / name).is_file(), name
    assert not (run / "figures" / "density.png").exists()  # 2-D data, but no density to draw
    assert json.loads((run / "metrics.json").read_text())["log_likelihood"] is None
    assert main(["encode", "--run", str(run), "--data", str(data_file), "--out", str(tmp_path / "z.npz")]) == 0
    assert np.load(tmp_path / "z.npz")["z"].shape == (600, 2)
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--data", str(data_file)]) == 0
    assert "no likelihood" in capsys.readouterr().out
    assert main(["sample", "--run", str(run), "--u", "0", "--n", "3", "--out", str(tmp_path / "s.npz")]) == 2
    assert "not a generative model" in capsys.readouterr().err
    assert not (tmp_path / "s.npz").exists()


def test_cli_rejects_tcl_options_for_other_models(data_file, tmp_path, capsys):
    argv = ["train", "--data", str(data_file), "--tcl-ica", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    assert "is for models tcl" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
