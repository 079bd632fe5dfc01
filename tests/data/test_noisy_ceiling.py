import numpy as np
import pytest

from iflow.data.noisy_ceiling import bayes_ceiling, posterior_summaries
from iflow.data.synthetic import SyntheticConfig, generate
from iflow.metrics import mcc


def test_bayes_ceiling_falls_with_the_noise_and_bounds_x_itself():
    synthetic = {
        sd: generate(SyntheticConfig(segments=10, per_segment=40, noise=sd, seed=2)) for sd in (0.02, 0.1, 0.5)
    }
    ceilings = {}
    for sd, data in synthetic.items():
        _, post_mean, _ = posterior_summaries(data, sd, 200, np.random.default_rng(0))
        ceilings[sd] = bayes_ceiling(post_mean, data.s)[0]
        assert ceilings[sd] >= mcc(data.x, data.s).mcc  # x is one estimate of s among others
        assert abs(mcc(post_mean, data.s).mcc - ceilings[sd]) < 0.02  # E[s | x, u] matches itself
    assert ceilings[0.02] > 0.97 and ceilings[0.02] > ceilings[0.1] + 0.02 > ceilings[0.5] + 0.04
    with pytest.raises(ValueError, match="sigma > 0"):
        posterior_summaries(synthetic[0.1], 0.0, 10, np.random.default_rng(0))
