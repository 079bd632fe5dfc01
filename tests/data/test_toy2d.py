import math

import numpy as np
import pytest

from iflow.data.toy2d import DENSITIES, Checkerboard, EightGaussians, Rings

WITH_DENSITY = [d for d in DENSITIES.values() if d.has_density]


@pytest.mark.parametrize("density", WITH_DENSITY, ids=lambda d: d.name)
def test_density_integrates_to_one(density):
    # midpoint rule on a fine grid covering the support (grid lines avoid the checkerboard's edges)
    edges = np.linspace(-4.5, 4.5, 901)
    mid = 0.5 * (edges[1:] + edges[:-1])
    xx, yy = np.meshgrid(mid, mid)
    p = np.exp(density.log_prob(np.stack([xx.ravel(), yy.ravel()], 1)))
    assert p.sum() * (edges[1] - edges[0]) ** 2 == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("density", WITH_DENSITY, ids=lambda d: d.name)
def test_sampler_matches_density(density):
    # histogram of 200k draws against the density integrated over the same 0.5 x 0.5 cells
    rng = np.random.default_rng(0)
    x = density.sample(200_000, rng)
    edges = np.linspace(-4, 4, 17)
    counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=[edges, edges])
    fine = np.linspace(-4, 4, 16 * 20 + 1)
    mid = 0.5 * (fine[1:] + fine[:-1])
    xx, yy = np.meshgrid(mid, mid, indexing="ij")
    p = np.exp(density.log_prob(np.stack([xx.ravel(), yy.ravel()], 1))).reshape(320, 320)
    expected = p.reshape(16, 20, 16, 20).sum((1, 3)) * (fine[1] - fine[0]) ** 2
    frequency = counts / len(x)
    # binomial noise is at most ~1e-3 per cell; a wrong scale or centre moves cells by > 1e-2
    assert np.abs(frequency - expected).max() < 4e-3


def test_entropy_of_checkerboard_is_log8():
    assert Checkerboard().entropy(100_000) == pytest.approx(math.log(8), abs=1e-12)


def test_entropy_of_well_separated_mixture():
    # separated modes: H = log 8 + H(N(0, s^2 I_2)) up to the tiny overlap
    density = EightGaussians(radius=20.0, scale=0.25)
    expected = math.log(8) + 1 + math.log(2 * math.pi * 0.25**2)
    assert density.entropy(200_000) == pytest.approx(expected, abs=0.01)


def test_samples_have_finite_log_density_and_off_support_is_minus_inf():
    rings = Rings()
    assert np.all(np.isfinite(rings.log_prob(rings.sample(1000, np.random.default_rng(1)))))
    assert Checkerboard().log_prob(np.array([[-1.5, -0.5]]))[0] == -np.inf


def test_moons_has_no_density():
    moons = DENSITIES["moons"]
    assert moons.sample(10, np.random.default_rng(0)).shape == (10, 2)
    with pytest.raises(NotImplementedError):
        moons.log_prob(np.zeros((1, 2)))
