import numpy as np
import pytest
import torch

from iflow.config import ModelConfig, TrainConfig
from iflow.data.dataset import AuxSpec, Standardizer, make_dataset
from iflow.density import class_samples, grid_log_density, log_density
from iflow.models.build import build_model
from iflow.runs import Run, evaluate


def untrained_run(n_labels=3, shift_prior=True):
    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(200, 2)) * [2.0, 1.5] + [1.0, -1.0]
    config = ModelConfig(
        model="iflow", flow="realnvp", depth=2, hidden=8, dim=2, aux=AuxSpec("labels", n_labels=n_labels)
    )
    model = build_model(config)
    if shift_prior:  # move the prior off its standard-normal start so labels differ
        with torch.no_grad():
            model.prior.net.table.add_(torch.randn(model.prior.net.table.shape))
    return Run(model.eval(), config, TrainConfig(), Standardizer.fit(x)), x


def test_log_density_agrees_with_evaluate_in_data_units():
    run, x = untrained_run()
    u = np.arange(len(x)) % 3
    values = log_density(run, x, u)
    assert values.shape == (200,)
    assert values.mean() == pytest.approx(evaluate(run, make_dataset(x, u))["log_likelihood"], abs=1e-5)


def test_grid_log_density_integrates_to_about_one():
    run, _ = untrained_run(n_labels=1, shift_prior=False)
    xs, ys, log_p = grid_log_density(run, (-12, 14, -8, 6), n=300)
    assert log_p.shape == (300, 300)
    mass = np.exp(log_p).sum() * (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert mass == pytest.approx(1.0, abs=0.02)


def test_class_samples_follow_each_label():
    run, _ = untrained_run()
    samples = class_samples(run, per_class=400)
    assert samples.shape == (3, 400, 2)
    means = samples.mean(1)
    assert np.abs(means[0] - means[1]).max() > 0.1  # different labels, different distributions
