import numpy as np
import pytest
import torch
from scipy import stats

from iflow.errors import UserError
from iflow.models.decoders import (
    BernoulliObservation,
    GaussianObservation,
    PoissonObservation,
    build_observation,
    check_observations,
)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_gaussian_log_prob_matches_scipy(rng):
    params = rng.normal(size=(7, 4))
    x = rng.normal(size=(7, 4))
    model = GaussianObservation(4, noise_var=0.3).double()
    got = model.log_prob(torch.tensor(x), torch.tensor(params)).numpy()
    want = stats.norm.logpdf(x, loc=params, scale=np.sqrt(0.3)).sum(1)
    np.testing.assert_allclose(got, want, rtol=1e-6)  # log-variance stored in float32


def test_learned_gaussian_variance_is_a_parameter_and_is_used(rng):
    model = GaussianObservation(3, noise_var=0.01, learn=True).double()
    assert [name for name, _ in model.named_parameters()] == ["log_var"]
    with torch.no_grad():
        model.log_var.copy_(torch.log(torch.tensor([0.5, 1.0, 2.0])))
    x, params = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    got = model.log_prob(torch.tensor(x), torch.tensor(params)).detach().numpy()
    want = stats.norm.logpdf(x, loc=params, scale=np.sqrt([0.5, 1.0, 2.0])).sum(1)
    np.testing.assert_allclose(got, want, rtol=1e-6)  # log-variance stored in float32
    assert list(dict(GaussianObservation(3).named_parameters())) == []  # fixed: a buffer


def test_bernoulli_log_prob_matches_scipy(rng):
    logits = rng.normal(scale=3, size=(6, 5))
    x = rng.integers(0, 2, size=(6, 5)).astype(float)
    got = BernoulliObservation().log_prob(torch.tensor(x), torch.tensor(logits)).numpy()
    want = stats.bernoulli.logpmf(x, 1 / (1 + np.exp(-logits))).sum(1)
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_poisson_log_prob_matches_scipy(rng):
    log_rate = rng.normal(size=(6, 5))
    x = rng.poisson(3.0, size=(6, 5)).astype(float)
    got = PoissonObservation().log_prob(torch.tensor(x), torch.tensor(log_rate)).numpy()
    want = stats.poisson.logpmf(x, np.exp(log_rate)).sum(1)
    np.testing.assert_allclose(got, want, rtol=1e-9)


@pytest.mark.parametrize("name", ["gaussian", "bernoulli", "poisson"])
def test_log_prob_broadcasts_over_leading_sample_axis(name, rng):
    model = build_observation(name, 4).double()
    x = torch.tensor(rng.integers(0, 2, size=(3, 4)).astype(float))
    params = torch.tensor(rng.normal(size=(2, 3, 4)))
    joint = model.log_prob(x, params)
    assert joint.shape == (2, 3)
    torch.testing.assert_close(joint[1], model.log_prob(x, params[1]))


@pytest.mark.parametrize("name", ["gaussian", "bernoulli", "poisson"])
def test_sample_mean_matches_mean(name):
    model = build_observation(name, 3, noise_var=0.25).double()
    params = torch.tensor([[-1.0, 0.2, 1.5]], dtype=torch.float64).expand(40_000, 3)
    draws = model.sample(params, torch.Generator().manual_seed(0))
    torch.testing.assert_close(draws.mean(0), model.mean(params)[0], atol=0.03, rtol=0.03)


def test_check_observations_rejects_impossible_data():
    check_observations(np.array([[0.0, 1.0]]), "bernoulli", "f.npz")
    check_observations(np.array([[0.0, 7.0]]), "poisson", "f.npz")
    check_observations(np.array([[-0.3, 7.5]]), "gaussian", "f.npz")
    with pytest.raises(UserError, match=r"f\.npz: obs bernoulli needs x in \{0, 1\}"):
        check_observations(np.array([[0.0, 0.5]]), "bernoulli", "f.npz")
    with pytest.raises(UserError, match="f.npz: obs poisson"):
        check_observations(np.array([[2.0, -1.0]]), "poisson", "f.npz")
    with pytest.raises(UserError, match="unknown obs"):
        build_observation("laplace", 2)
