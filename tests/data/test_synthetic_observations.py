"""The synthetic generator's observation options: noise std, Bernoulli observations, D > n."""

import numpy as np
import pytest

from iflow.data.synthetic import SyntheticConfig, condition_threshold, generate

SMALL = {"segments": 4, "per_segment": 200}


def test_noise_is_a_standard_deviation_added_to_the_clean_mixture():
    clean = generate(SyntheticConfig(**SMALL))
    noisy = generate(SyntheticConfig(noise=0.1, **SMALL))
    np.testing.assert_array_equal(clean.s, noisy.s)
    residual = noisy.x - clean.x
    assert abs(residual.std() - 0.1) < 0.005
    assert noisy.log_likelihood is None and clean.log_likelihood is not None


def test_bernoulli_observations_follow_the_sigmoid_of_the_mixture():
    clean = generate(SyntheticConfig(centered=True, sources=2, dim=4, segments=4, per_segment=5000))
    binary = generate(SyntheticConfig(centered=True, sources=2, dim=4, segments=4, per_segment=5000, obs="bernoulli"))
    assert set(np.unique(binary.x)) == {0.0, 1.0}
    assert binary.log_likelihood is None
    p = 1 / (1 + np.exp(-clean.x.astype(float)))
    bins = np.digitize(p[:, 0], [0.2, 0.4, 0.6, 0.8])
    checked = 0
    for b in range(5):  # empirical frequency of x = 1 within bins of sigmoid(f(s)), where bins are populated
        inside = bins == b
        if inside.sum() < 300:
            continue
        q = p[inside, 0].mean()
        assert abs(binary.x[inside, 0].mean() - q) < 4 * np.sqrt(q * (1 - q) / inside.sum())
        checked += 1
    assert checked >= 3


def test_more_observed_dimensions_than_sources():
    data = generate(SyntheticConfig(sources=2, dim=7, **SMALL))
    assert data.x.shape == (800, 7) and data.s.shape == (800, 2)
    assert [w.shape for w in data.weights] == [(2, 7), (7, 7), (7, 7)]
    assert np.linalg.matrix_rank(data.x - data.x.mean(0)) == 7  # the MLP is nonlinear: x fills R^7
    assert data.log_likelihood is None


def test_condition_threshold_chunks_do_not_change_the_draws():
    a = condition_threshold(4, np.random.default_rng(0), draws=1000, chunk=1000)
    b = condition_threshold(4, np.random.default_rng(0), draws=1000, chunk=64)
    assert a == b


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"obs": "poisson"}, "unknown observation model"), ({"obs": "bernoulli", "noise": 0.1}, "--noise is for"),
     ({"dim": 3}, "--dim must be >= --sources")],
)  # fmt: skip
def test_bad_options(changes, message):
    with pytest.raises(ValueError, match=message):
        generate(SyntheticConfig(**SMALL, **changes))
