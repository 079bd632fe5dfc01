"""The robustness suite's generator options: exact likelihoods, source laws, conditioning."""

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from iflow.data.synthetic import SyntheticConfig, generate, source_log_density


def torch_activation(name: str, a: torch.Tensor, slope: float) -> torch.Tensor:
    """The activations written independently in torch (autograd gives their Jacobian)."""
    if name == "xtanh":
        return torch.tanh(a) + 0.1 * a
    if name == "smooth-leaky":
        return slope * a + (1 - slope) * torch.nn.functional.softplus(a)
    return torch.where(a > 0, a, slope * a)


def change_of_variables(data, config: SyntheticConfig, rows: range) -> list[float]:
    """log p(s | u) - log|det df/ds| at the given rows, with f's Jacobian by autograd (float64)."""
    ws = [torch.tensor(w, dtype=torch.float64) for w in data.weights]

    def f(s):
        h = s
        for i, w in enumerate(ws):
            h = h @ w
            if i < len(ws) - 1:
                h = torch_activation(config.activation, h, config.slope)
        return h

    s = torch.tensor(data.s, dtype=torch.float64)
    torch.testing.assert_close(f(s).float(), torch.tensor(data.x), rtol=1e-4, atol=1e-4)
    out = []
    for i in rows:
        jac = torch.autograd.functional.jacobian(f, s[i])
        log_ps = source_log_density(
            config.prior, data.s[i].astype(np.float64), data.means[data.u[i]], data.stds[data.u[i]], config.dof
        )
        out.append(log_ps.sum() - torch.linalg.slogdet(jac)[1].item())
    return out


@pytest.mark.parametrize(
    "options",
    [
        {"prior": "student-t", "activation": "leaky", "slope": 0.5},
        {"prior": "student-t", "dof": 1.5, "activation": "smooth-leaky"},
        {"prior": "uniform", "activation": "smooth-leaky", "slope": 0.1},
        {"prior": "uniform", "activation": "xtanh", "centered": True, "max_condition": 25.0},
        {"prior": "laplace", "activation": "leaky", "slope": 0.05, "layers": 5},
    ],
)
def test_true_log_likelihood_is_change_of_variables(options):
    config = SyntheticConfig(sources=3, segments=4, per_segment=5, seed=4, **options)
    data = generate(config)
    expected = change_of_variables(data, config, range(0, 20, 3))
    # float32 sources: the density is evaluated at the rounded s in both, so only f's rounding remains
    np.testing.assert_allclose(data.log_likelihood[0:20:3], expected, atol=2e-3)


@pytest.mark.parametrize("prior, dof", [("student-t", 3.0), ("student-t", 1.0), ("uniform", 3.0), ("laplace", 3.0)])
def test_source_log_densities_integrate_to_one(prior, dof):
    mean, std = np.array(1.3), np.array(0.7)
    density = lambda s: np.exp(source_log_density(prior, np.array(s), mean, std, dof))
    if prior == "uniform":  # support [mean - std sqrt 3, mean + std sqrt 3], nothing outside
        half = float(std) * np.sqrt(3)
        assert density(mean - half - 1e-6) == density(mean + half + 1e-6) == 0.0
        total = integrate.quad(density, mean - half, mean + half)[0]
    else:
        total = integrate.quad(density, -np.inf, np.inf)[0]
    assert abs(total - 1.0) < 1e-6


@pytest.mark.parametrize("prior, law", [("student-t", stats.t(3.0)), ("uniform", stats.uniform(-1, 2))])
def test_sources_follow_their_law_with_the_segment_moments(prior, law):
    data = generate(SyntheticConfig(sources=2, segments=3, per_segment=20_000, prior=prior, seed=5))
    for segment in range(3):
        s = data.s[data.u == segment].astype(np.float64)
        standard = (s - data.means[segment]) / data.stds[segment]
        if prior == "student-t":
            standard = standard / np.sqrt(1 / 3)  # a unit-variance t(3) has scale sqrt((3 - 2) / 3)
        else:
            standard = standard / np.sqrt(3)  # a unit-variance uniform has half-width sqrt 3
        for column in standard.T:
            assert stats.kstest(column, law.cdf).pvalue > 1e-3
    heavy = generate(
        SyntheticConfig(sources=2, segments=1, per_segment=50_000, prior="student-t", seed=6, centered=True)
    )
    assert stats.kurtosis(heavy.s[:, 0]) > 2.0  # a Gaussian has 0: the tails are really heavy


def test_conditioning_options_bound_the_matrices():
    bounded = generate(SyntheticConfig(sources=4, segments=2, per_segment=5, layers=6, max_condition=25.0, seed=1))
    conds = [np.linalg.cond(w) for w in bounded.weights]
    assert max(conds) < 25.0
    best = generate(SyntheticConfig(sources=4, segments=2, per_segment=5, layers=6, condition_percentile=5.0, seed=1))
    loose = generate(SyntheticConfig(sources=4, segments=2, per_segment=5, layers=6, condition_percentile=90.0, seed=1))
    assert max(np.linalg.cond(w) for w in best.weights) < np.median([np.linalg.cond(w) for w in loose.weights])


def test_default_stream_is_unchanged_by_the_new_options():
    """Options left at their defaults draw exactly what the generator drew before they existed."""
    plain = generate(SyntheticConfig(segments=3, per_segment=10, activation="leaky"))
    explicit = generate(
        SyntheticConfig(segments=3, per_segment=10, activation="leaky", slope=0.2, condition_percentile=25.0)
    )
    assert np.array_equal(plain.x, explicit.x)
    steeper = generate(SyntheticConfig(segments=3, per_segment=10, activation="leaky", slope=0.5))
    assert not np.array_equal(plain.x, steeper.x)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"prior": "cauchy"}, "unknown source prior"),
        ({"activation": "elu"}, "unknown activation"),
        ({"dof": 0.0}, "--dof"),
        ({"slope": 0.0}, "--slope"),
        ({"slope": 1.5}, "--slope"),
        ({"condition_percentile": 0.0}, "--condition-percentile"),
        ({"max_condition": 1.0}, "--max-condition"),
    ],
)
def test_bad_suite_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        SyntheticConfig(**options).validate()
