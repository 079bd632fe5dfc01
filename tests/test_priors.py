import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from iflow.priors import (
    FAMILIES,
    ConditionalExpFamilyPrior,
    StandardNormalPrior,
    get_family,
    negative,
    negative_inverse,
)

EXAMPLE_ETAS = {
    "gauss": [[1.5, -0.5], [-4.0, -2.0], [0.3, -0.02]],
    "gauss-var": [[-0.5], [-8.0], [-0.01]],
    "laplace": [[-1.0], [-5.0], [-0.1]],
}


def scipy_logpdf(family: str, eta: list[float], z: np.ndarray) -> np.ndarray:
    if family == "gauss":
        var = -0.5 / eta[1]
        return stats.norm.logpdf(z, loc=eta[0] * var, scale=np.sqrt(var))
    if family == "gauss-var":
        return stats.norm.logpdf(z, scale=np.sqrt(-0.5 / eta[0]))
    return stats.laplace.logpdf(z, scale=-1.0 / eta[0])


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_prob_matches_scipy(family, dtype):
    fam = get_family(family)
    z = torch.linspace(-6, 6, 41, dtype=dtype)
    for eta in EXAMPLE_ETAS[family]:
        eta_t = torch.tensor(eta, dtype=dtype).expand(41, len(eta))
        ours = fam.log_prob(z, eta_t).numpy()
        tol = 1e-4 if dtype == torch.float32 else 1e-10
        np.testing.assert_allclose(ours, scipy_logpdf(family, eta, z.numpy().astype(np.float64)), rtol=tol, atol=tol)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_density_integrates_to_one(family):
    fam = get_family(family)
    for eta in EXAMPLE_ETAS[family]:
        eta_t = torch.tensor([eta], dtype=torch.float64)

        def density(z: float, eta_t: torch.Tensor = eta_t) -> float:
            return float(torch.exp(fam.log_prob(torch.tensor([z], dtype=torch.float64), eta_t)))

        total, _ = integrate.quad(density, -np.inf, np.inf, limit=200)
        assert abs(total - 1.0) < 1e-6, (family, eta, total)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sample_moments_match(family):
    fam = get_family(family)
    eta = torch.tensor(EXAMPLE_ETAS[family][0], dtype=torch.float64).expand(200_000, 1, -1)
    z = fam.sample(eta, torch.Generator().manual_seed(0)).squeeze(1).numpy()
    e = EXAMPLE_ETAS[family][0]
    if family == "gauss":
        mean, var = e[0] * (-0.5 / e[1]), -0.5 / e[1]
    elif family == "gauss-var":
        mean, var = 0.0, -0.5 / e[0]
    else:
        mean, var = 0.0, 2.0 / e[0] ** 2
    assert abs(z.mean() - mean) < 5 * np.sqrt(var / len(z))
    assert abs(z.var() / var - 1.0) < 0.02
    # the shape, not only two moments: Kolmogorov-Smirnov against the exact law
    law = {"gauss": stats.norm(mean, np.sqrt(var)), "gauss-var": stats.norm(0, np.sqrt(var)),
           "laplace": stats.laplace(0, np.sqrt(var / 2))}[family]  # fmt: skip
    assert stats.kstest(z[:20_000], law.cdf).pvalue > 1e-3


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("raw_value", [-60.0, -20.0, 0.0, 20.0, 60.0])
def test_gradients_finite_at_extreme_parameters(family, raw_value):
    prior = ConditionalExpFamilyPrior(3, family, n_labels=2)
    with torch.no_grad():
        prior.net.table.fill_(raw_value)
    z = torch.tensor([[0.0, 1.0, -50.0], [3.0, -2.0, 100.0]])
    logp = prior.log_prob(z, torch.tensor([0, 1]))
    logp.sum().backward()
    assert torch.isfinite(logp).all()
    assert torch.isfinite(prior.net.table.grad).all()


def test_negative_map_is_smooth_bijection():
    raw = torch.linspace(-20, 30, 101, dtype=torch.float64)  # below -20 softplus underflows its inverse
    eta = negative(raw)
    assert (eta < 0).all()
    torch.testing.assert_close(negative_inverse(eta), raw, rtol=1e-6, atol=1e-6)


def test_linear_coefficient_is_unconstrained():
    """The z coefficient may be negative: priors with negative means must be reachable."""
    prior = ConditionalExpFamilyPrior(2, "gauss", n_labels=1)
    with torch.no_grad():
        prior.net.table.copy_(torch.tensor([[-3.0, 0.0, 2.0, 0.0]]))
    eta = prior.natural_params(torch.tensor([0]))
    mean, _ = FAMILIES["gauss"].moments(eta)
    assert mean[0, 0] < 0 < mean[0, 1]


def test_initial_prior_is_standard_normal():
    for family in FAMILIES:
        prior = ConditionalExpFamilyPrior(4, family, n_labels=3)
        z = torch.randn(3, 4, dtype=torch.float64)
        u = torch.arange(3)
        eta = prior.natural_params(u).double()
        if family == "laplace":  # unit variance Laplace: scale 1/sqrt(2)
            assert torch.allclose(-1.0 / eta, torch.full_like(eta, 2**-0.5), atol=1e-5)
        else:
            expected = StandardNormalPrior(4).log_prob(z)
            assert torch.allclose(FAMILIES[family].log_prob(z, eta).sum(-1), expected, atol=1e-5)


def test_continuous_u_uses_mlp_and_depends_on_u():
    torch.manual_seed(0)
    prior = ConditionalExpFamilyPrior(3, "gauss", aux_dim=2)
    with torch.no_grad():
        prior.net[-1].weight.normal_()
    u = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    eta = prior.natural_params(u)
    assert eta.shape == (2, 3, 2)
    assert not torch.allclose(eta[0], eta[1])
    assert (eta[..., 1] < 0).all()


def test_prior_needs_exactly_one_aux_kind():
    with pytest.raises(ValueError, match="exactly one"):
        ConditionalExpFamilyPrior(2, "gauss")
    with pytest.raises(ValueError, match="unknown prior family"):
        ConditionalExpFamilyPrior(2, "cauchy", n_labels=2)


def test_standard_normal_prior_matches_scipy_and_follows_dtype():
    prior = StandardNormalPrior(3).double()
    z = torch.randn(5, 3, dtype=torch.float64)
    np.testing.assert_allclose(prior.log_prob(z).numpy(), stats.norm.logpdf(z.numpy()).sum(1), rtol=1e-12)
    assert prior.sample(torch.zeros(4, dtype=torch.long)).dtype == torch.float64
    assert prior.natural_params(torch.zeros(2)).dtype == torch.float64


SCIPY_MLE = {
    # family: (draw, scipy MLE -> (loc, scale), natural parameters from (loc, scale))
    "gauss": (lambda rng: rng.normal(1.5, 2.0, 5000), lambda z: stats.norm.fit(z), lambda m, s: [m / s**2, -0.5 / s**2]),
    "gauss-var": (lambda rng: rng.normal(0.0, 0.7, 5000), lambda z: stats.norm.fit(z, floc=0), lambda m, s: [-0.5 / s**2]),
    "laplace": (lambda rng: rng.laplace(0.0, 1.3, 5000), lambda z: stats.laplace.fit(z, floc=0), lambda m, s: [-1.0 / s]),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fit_labels_is_the_maximum_likelihood_estimate(family):
    """The closed-form M-step equals scipy's MLE, label by label, and no gradient step improves it."""
    rng = np.random.default_rng(0)
    draw, scipy_fit, to_eta = SCIPY_MLE[family]
    samples = [draw(rng) * (1 + label) for label in range(3)]  # a different scale per label
    z = torch.tensor(np.concatenate(samples), dtype=torch.float64).unsqueeze(1).repeat(1, 2)
    u = torch.repeat_interleave(torch.arange(3), 5000)
    prior = ConditionalExpFamilyPrior(2, family, n_labels=4).double()
    untouched = prior.net.table[3].clone()
    prior.fit_labels(z, u)
    eta = prior.natural_params(torch.arange(3))
    for label, sample in enumerate(samples):
        expected = to_eta(*scipy_fit(sample))
        np.testing.assert_allclose(eta[label, 0].detach().numpy(), expected, rtol=1e-6)
        np.testing.assert_allclose(eta[label, 1].detach().numpy(), expected, rtol=1e-6)
    assert torch.equal(prior.net.table[3], untouched)  # a label with no data keeps its parameters
    loss = -prior.log_prob(z, u).mean()
    loss.backward()
    assert prior.net.table.grad.abs().max() < 1e-8


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_gaussian_expected_stats_match_monte_carlo(family):
    """E[T(z)] for z ~ N(m, v), what a VAE's posterior gives the M-step, against sampling."""
    fam = FAMILIES[family]
    mean = torch.tensor([[-1.5, 0.0, 0.4]], dtype=torch.float64)
    var = torch.tensor([[0.3, 2.0, 0.05]], dtype=torch.float64)
    z = mean + var.sqrt() * torch.randn(400_000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    stats_z = fam.stats(z)
    mc, se = stats_z.mean(0), stats_z.std(0) / math.sqrt(len(z))
    expected = fam.gaussian_expected_stats(mean, var)[0]
    assert expected.shape == mc.shape
    assert torch.all((expected - mc).abs() < 4 * se), (expected, mc)


def test_fit_label_stats_with_point_statistics_is_fit_labels():
    z, u = torch.randn(60, 2, dtype=torch.float64), torch.arange(60) % 3
    a = ConditionalExpFamilyPrior(2, "gauss", n_labels=3).double()
    b = ConditionalExpFamilyPrior(2, "gauss", n_labels=3).double()
    a.fit_labels(z, u)
    b.fit_label_stats(b.family.stats(z), u)
    torch.testing.assert_close(a.net.table, b.net.table)


def test_fit_labels_needs_labels():
    prior = ConditionalExpFamilyPrior(2, "gauss", aux_dim=3)
    with pytest.raises(TypeError, match="integer labels"):
        prior.fit_labels(torch.randn(4, 2), torch.zeros(4, dtype=torch.long))


def test_repeat_condition_broadcasts_one_condition_and_keeps_a_batch():
    from iflow.priors import repeat_condition

    assert repeat_condition(4, 3).tolist() == [3, 3, 3, 3]
    assert repeat_condition(2, torch.tensor([0.5, 1.0])).tolist() == [[0.5, 1.0], [0.5, 1.0]]
    assert repeat_condition(3, torch.tensor([2, 0, 1])).tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="2 rows for 3 draws"):
        repeat_condition(3, torch.tensor([1, 2]))
