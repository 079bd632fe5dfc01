"""The papers' other generators: one matrix shared by every layer (iVAE code), leaky-ReLU then an
orthogonal matrix per layer (ICE-BeeM), and the iVAE paper's easy-to-classify means."""

import json

import numpy as np
import pytest
import torch
from scipy import stats

from iflow.cli import main
from iflow.data.synthetic import LEAKY_SLOPE, SyntheticConfig, generate


def activation(name, a):
    return torch.tanh(a) + 0.1 * a if name == "xtanh" else torch.where(a > 0, a, LEAKY_SLOPE * a)


def mixing_function(weights, mixing, name):
    """The generator's map s -> x in float64 torch, written from the papers' descriptions."""
    ws = [torch.tensor(w, dtype=torch.float64) for w in weights]

    def f(s):
        h = s
        for i, w in enumerate(ws):
            if mixing == "orthogonal":
                h = activation(name, h) @ w
            else:
                h = h @ w if i == len(ws) - 1 else activation(name, h @ w)
        return h

    return f


def change_of_variables(data, f, i):
    """log p(s_i | u_i) - log |det J_f(s_i)| by autograd, in float64."""
    s = torch.tensor(data.s[i : i + 1], dtype=torch.float64)
    n = s.shape[1]
    jac = torch.autograd.functional.jacobian(f, s).reshape(n, n)
    m, sd = data.means[data.u[i]], data.stds[data.u[i]]
    return stats.norm.logpdf(data.s[i], m, sd).sum() - torch.linalg.slogdet(jac)[1].item()


@pytest.mark.parametrize("mixing,name", [("shared", "xtanh"), ("orthogonal", "leaky"), ("orthogonal", "xtanh")])
def test_mixing_and_true_log_likelihood(mixing, name):
    data = generate(SyntheticConfig(sources=3, segments=4, per_segment=6, layers=3, activation=name, mixing=mixing, seed=2))
    f = mixing_function(data.weights, mixing, name)
    x = f(torch.tensor(data.s, dtype=torch.float64))
    np.testing.assert_allclose(x.numpy(), data.x, rtol=1e-4, atol=1e-4)
    for i in range(0, len(data.x), 5):
        assert abs(data.log_likelihood[i] - change_of_variables(data, f, i)) < 1e-3


def test_shared_reuses_one_matrix_and_orthogonal_draws_one_per_layer():
    shared = generate(SyntheticConfig(sources=4, segments=3, per_segment=5, mixing="shared", seed=1))
    assert len(shared.weights) == 3 and all(np.array_equal(w, shared.weights[0]) for w in shared.weights)
    orthogonal = generate(SyntheticConfig(sources=4, segments=3, per_segment=5, mixing="orthogonal", seed=1))
    for q in orthogonal.weights:
        np.testing.assert_allclose(q.T @ q, np.eye(4), atol=1e-10)
    assert not np.allclose(orthogonal.weights[0], orthogonal.weights[1])
    fresh = generate(SyntheticConfig(sources=4, segments=3, per_segment=5, seed=1))
    assert not np.allclose(fresh.weights[0], fresh.weights[1])


def test_easy_means_are_twice_a_permuted_segment_index():
    data = generate(SyntheticConfig(sources=2, segments=10, per_segment=400, means="easy", seed=3))
    second = data.means[:, 1]
    np.testing.assert_array_equal(np.sort(second), 2.0 * np.arange(10))
    assert not np.array_equal(second, 2.0 * np.arange(10))  # permuted, not in segment order
    assert np.all(np.abs(data.means[:, 0]) <= 5) and data.means[:, 0].std() > 1
    for m in (0, 7):
        assert abs(data.s[data.u == m, 1].mean() - second[m]) < 4 * 3 / np.sqrt(400)
    assert data.log_likelihood is not None


@pytest.mark.parametrize(
    "options,message",
    [
        ({"mixing": "random"}, "--mixing"),
        ({"means": "hard"}, "--means"),
        ({"mixing": "shared", "dim": 7}, "square"),
        ({"mixing": "orthogonal", "dim": 7}, "square"),
        ({"means": "easy", "sources": 1}, "--sources >= 2"),
        ({"means": "easy", "centered": True}, "--centered"),
    ],
)
def test_bad_generator_options_are_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        generate(SyntheticConfig(segments=2, per_segment=5, **options))


def test_cli_writes_the_options_and_rejects_bad_ones(tmp_path, capsys):
    out = tmp_path / "easy.npz"
    argv = ["data", "synthetic", "--sources", "2", "--segments", "5", "--per-segment", "20", "--mixing", "orthogonal",
            "--activation", "leaky", "--means", "easy", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    config = json.loads(str(np.load(out)["config"]))
    assert config["mixing"] == "orthogonal" and config["means"] == "easy"
    assert main(["data", "synthetic", "--means", "easy", "--sources", "1", "--out", str(tmp_path / "x.npz")]) == 2
    assert "iflow: error:" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
