import dataclasses

import numpy as np
from torch import nn

from iflow.data.dataset import AuxSpec
from iflow.data.noisy_ceiling import mix
from iflow.data.synthetic import SyntheticConfig, generate
from iflow.experiments import ivae_fig2a
from iflow.models.build import build_model


def test_shared_mixing_reuses_the_first_matrix_and_adds_noise_sd_01():
    data = ivae_fig2a.shared_mixing_data(seed=1, segments=10, per_segment=500)
    assert all(w is data.weights[0] for w in data.weights) and len(data.weights) == 3
    residual = data.x - mix(data.s.astype(np.float64), data.weights)
    assert abs(residual.std() - 0.1) < 0.003 and abs(residual.mean()) < 0.003
    segment_means = np.stack([data.s[data.u == k].mean(0) for k in range(10)])
    assert np.abs(segment_means).max() < 0.4  # centred sources (std up to 3, 500 points: se < 0.14)
    fresh = ivae_fig2a.shared_mixing_data(seed=1, segments=10, per_segment=500, shared=False)
    plain = generate(SyntheticConfig(seed=1, centered=True, noise=0.1, segments=10, per_segment=500))
    np.testing.assert_array_equal(fresh.x, plain.x)
    assert not np.allclose(fresh.weights[1], fresh.weights[0])
    clean = ivae_fig2a.shared_mixing_data(seed=1, segments=10, per_segment=500, noise=0.0)
    np.testing.assert_allclose(clean.x, mix(clean.s.astype(np.float64), clean.weights), rtol=1e-5, atol=1e-5)
    assert ivae_fig2a.ceiling(clean, 0.0, seed=1) == 1.0


def test_settings_name_known_ingredients_and_the_paper_row_is_published():
    settings = ivae_fig2a.settings(quick=False)
    assert [s["setting"] for s in settings] == list(ivae_fig2a.INGREDIENTS)
    assert ivae_fig2a.PUBLISHED == {"paper": 0.952}
    assert ivae_fig2a.PAPER_MODEL.objective_weights == [100.0, 1.0, 0.0, 10.0]


def test_quick_run_and_report(tmp_path):
    setting = {"model": "ivae", "setting": "paper", "segments": 4, "per_segment": 100, "epochs": 1}
    row = ivae_fig2a.run(setting, seed=2)
    assert 0 < row["mcc"] <= 1 and row["mcc_x"] < row["bayes_ceiling"] <= 1
    assert 0 < row["mcc_sample"] <= row["mcc"] + 1e-3, "a draw from q adds noise to its mean"
    ivae_fig2a.report([row], tmp_path)
    assert (
        "| paper |" in (tmp_path / "ivae_fig2a.md").read_text() and "0.952" in (tmp_path / "ivae_fig2a.md").read_text()
    )


def test_paper_networks_have_the_authors_three_linear_layers_of_100_units():
    """The authors' MLP(n_layers=3, hidden_dim=100) is 3 linear layers; iflow's depth counts hidden layers."""
    config = dataclasses.replace(ivae_fig2a.PAPER_MODEL, dim=5, latent_dim=5, aux=AuxSpec("labels", n_labels=40))
    model = build_model(config)
    for net in (model.encoder.net, model.decoder):
        linear = [m for m in net.modules() if isinstance(m, nn.Linear)]
        assert len(linear) == 3 and [m.out_features for m in linear[:-1]] == [100, 100]
