import numpy as np
import pytest
from scipy import stats

from iflow.metrics import abs_correlation_matrix, mcc


def test_permutation_sign_and_scale_give_one():
    rng = np.random.default_rng(0)
    s = rng.standard_normal((2000, 4))
    z = -3.0 * s[:, [2, 0, 3, 1]] + 5.0
    result = mcc(z, s)
    assert result.mcc == pytest.approx(1.0)
    assert list(result.sources) == [0, 1, 2, 3]
    assert list(result.latents) == [1, 3, 0, 2]  # s_j sits in column latents[j] of z


def test_independent_latents_score_low_and_mixing_scores_between():
    rng = np.random.default_rng(1)
    s = rng.standard_normal((5000, 3))
    assert mcc(rng.standard_normal((5000, 3)), s).mcc < 0.05
    rotated = s @ np.array([[1, 1, 0], [-1, 1, 0], [0, 0, np.sqrt(2)]]) / np.sqrt(2)
    assert 0.75 < mcc(rotated, s).mcc < 0.85  # two components at |r| = 0.707, one at 1


def test_matches_a_brute_force_assignment_and_scipy():
    import itertools

    rng = np.random.default_rng(2)
    s = rng.standard_normal((500, 4))
    z = s @ rng.standard_normal((4, 4)) + 0.5 * rng.standard_normal((500, 4))
    corr = np.abs(np.corrcoef(z.T, s.T)[:4, 4:])
    np.testing.assert_allclose(abs_correlation_matrix(z, s), corr, atol=1e-12)
    best = max(np.mean([corr[p[j], j] for j in range(4)]) for p in itertools.permutations(range(4)))
    assert mcc(z, s).mcc == pytest.approx(best)
    rho = np.abs(stats.spearmanr(z, s).statistic[:4, 4:])
    np.testing.assert_allclose(abs_correlation_matrix(z, s, "spearman"), rho, atol=1e-12)


def test_spearman_ignores_monotone_distortion_pearson_does_not():
    rng = np.random.default_rng(3)
    s = rng.standard_normal((3000, 2))
    z = np.exp(2 * s)
    assert mcc(z, s, "spearman").mcc == pytest.approx(1.0)
    assert mcc(z, s).mcc < 0.8


def test_fewer_latents_than_sources_and_bad_shapes():
    rng = np.random.default_rng(4)
    s = rng.standard_normal((100, 3))
    assert mcc(s[:, :2], s).mcc == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same N"):
        mcc(s[:50], s)
    with pytest.raises(ValueError, match="unknown correlation"):
        mcc(s, s, "kendall")
