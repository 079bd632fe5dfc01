import numpy as np
import pytest
import torch
from scipy import stats

from iflow.config import ModelConfig, TrainConfig
from iflow.data.dataset import Standardizer, aux_spec, make_dataset
from iflow.models.build import build_model
from iflow.runs import Run, evaluate


def test_gap_is_zero_for_the_true_model_in_original_units():
    """x = s with segment-wise Gaussians: an identity flow whose prior holds the true segment
    parameters (in standardised units) is the true model, so eval's gap must vanish."""
    rng = np.random.default_rng(0)
    means, stds = rng.uniform(-5, 5, (3, 2)) + 40.0, rng.uniform(0.5, 3, (3, 2))
    u = np.repeat(np.arange(3), 500)
    x = (means[u] + stds[u] * rng.standard_normal((1500, 2))).astype(np.float32)
    true_ll = stats.norm.logpdf(x.astype(np.float64), means[u], stds[u]).sum(1)
    data = make_dataset(x, u, x, true_ll)
    standardizer = Standardizer.fit(x)
    config = ModelConfig(flow="spline", depth=1, dim=2, aux=aux_spec(u))
    model = build_model(config).eval()  # the spline coupling starts at the identity
    z_mean = (means - standardizer.mean) / standardizer.std
    z_var = (stds / standardizer.std) ** 2
    eta = torch.tensor(np.stack([z_mean / z_var, -0.5 / z_var], -1), dtype=torch.float32)
    with torch.no_grad():
        model.prior.net.table.copy_(model.prior.family.unconstrain(eta).reshape(3, 4))
    metrics = evaluate(Run(model, config, TrainConfig(), standardizer), data)
    assert metrics["true_log_likelihood"] == pytest.approx(true_ll.mean())
    assert abs(metrics["gap"]) < 1e-3
    assert metrics["mcc"] == pytest.approx(1.0)
