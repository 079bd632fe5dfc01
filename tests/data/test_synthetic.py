import numpy as np
import pytest
import torch

from iflow.data import synthetic
from iflow.data.synthetic import LEAKY_SLOPE, SyntheticConfig, condition_threshold, generate, well_conditioned_matrix


def torch_mixing(weights, activation):
    """The generator's mixing MLP in torch, for autograd Jacobians."""
    ws = [torch.tensor(w, dtype=torch.float64) for w in weights]

    def f(s):
        h = s
        for i, w in enumerate(ws):
            a = h @ w
            if i < len(ws) - 1:
                h = torch.tanh(a) + 0.1 * a if activation == "xtanh" else torch.where(a > 0, a, LEAKY_SLOPE * a)
            else:
                h = a
        return h

    return f


@pytest.mark.parametrize("activation", ["xtanh", "leaky"])
@pytest.mark.parametrize("prior", ["gauss", "laplace"])
def test_true_log_likelihood_is_change_of_variables(activation, prior):
    config = SyntheticConfig(sources=3, segments=4, per_segment=5, layers=3, activation=activation, prior=prior, seed=3)
    data = generate(config)
    f = torch_mixing(data.weights, activation)
    s = torch.tensor(data.s, dtype=torch.float64)
    torch.testing.assert_close(f(s).float(), torch.tensor(data.x), rtol=1e-4, atol=1e-4)
    from scipy import stats

    for i in range(0, len(s), 3):
        jac = torch.autograd.functional.jacobian(f, s[i : i + 1]).reshape(3, 3)
        m, sd = data.means[data.u[i]], data.stds[data.u[i]]
        if prior == "gauss":
            log_ps = stats.norm.logpdf(data.s[i], m, sd).sum()
        else:
            log_ps = stats.laplace.logpdf(data.s[i], m, sd / np.sqrt(2)).sum()
        expected = log_ps - torch.linalg.slogdet(jac)[1].item()
        assert abs(data.log_likelihood[i] - expected) < 1e-3


def test_source_statistics_follow_the_protocol():
    data = generate(SyntheticConfig(sources=4, segments=50, per_segment=2000, seed=0))
    assert data.x.shape == data.s.shape == (100_000, 4)
    assert np.array_equal(data.u, np.repeat(np.arange(50), 2000))
    assert data.stds.min() >= 0.5 and data.stds.max() <= 3.0
    assert data.means.min() >= -5 and data.means.max() <= 5 and data.means.std() > 2
    seg = data.s[data.u == 7]
    np.testing.assert_allclose(seg.std(0), data.stds[7], rtol=0.1)
    np.testing.assert_allclose(seg.mean(0), data.means[7], atol=0.2)
    centered = generate(SyntheticConfig(sources=4, segments=5, per_segment=10, centered=True, seed=0))
    assert np.all(centered.means == 0)


def test_same_seed_same_data_and_other_seed_other_data():
    a, b = generate(SyntheticConfig(seed=5, segments=3, per_segment=10)), generate(SyntheticConfig(seed=5, segments=3, per_segment=10))
    c = generate(SyntheticConfig(seed=6, segments=3, per_segment=10))
    assert np.array_equal(a.x, b.x) and not np.allclose(a.x, c.x)


def test_matrices_are_well_conditioned_and_column_normalised():
    rng = np.random.default_rng(0)
    threshold = condition_threshold(5, rng)
    w = well_conditioned_matrix(5, threshold, rng)
    np.testing.assert_allclose(np.linalg.norm(w, axis=0), 1.0)
    assert np.linalg.cond(w) < threshold


def test_an_unreachable_condition_bound_fails_instead_of_looping(monkeypatch):
    monkeypatch.setattr(synthetic, "MAX_MATRIX_DRAWS", 200)
    with pytest.raises(ValueError, match="no random 8 x 8 mixing matrix in 200 draws"):
        generate(SyntheticConfig(sources=8, segments=2, per_segment=10, max_condition=1.01))
    reachable = generate(SyntheticConfig(sources=3, segments=2, per_segment=10, max_condition=25))
    assert all(np.linalg.cond(w) < 25 for w in reachable.weights)


def test_noise_removes_true_likelihood_and_bad_config_is_rejected():
    data = generate(SyntheticConfig(segments=2, per_segment=10, noise=0.1))
    assert data.log_likelihood is None
    with pytest.raises(ValueError, match="sources"):
        generate(SyntheticConfig(sources=0))
    with pytest.raises(ValueError, match="activation"):
        generate(SyntheticConfig(activation="relu"))
