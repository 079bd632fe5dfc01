"""The iVAE started from an identifiable flow (TrainConfig.start flow): the fit to given latents, the flow
trained on the VAE's own training rows, and a resumed run that does not train the flow again."""

import numpy as np
import pytest
import torch

from iflow import runs
from iflow.config import ModelConfig, TrainConfig
from iflow.data.dataset import make_dataset
from iflow.errors import UserError
from iflow.models.build import build_model
from iflow.runs import plan_run, start_from_flow, train_planned
from iflow.training.checkpoint import Checkpointing
from iflow.training.flow_start import check_flow_start, fit_to_latents


def labelled(n_labels: int = 4, per_label: int = 100, dim: int = 3, seed: int = 0):
    """Sources with a scale per label, mixed by one tanh layer: x ``(n, dim)``, labels ``(n,)``, sources."""
    rng = np.random.default_rng(seed)
    u = np.repeat(np.arange(n_labels), per_label)
    s = rng.normal(size=(u.size, dim)) * rng.uniform(0.3, 2.0, size=(n_labels, dim))[u]
    x = np.tanh(s @ rng.normal(size=(dim, dim))) + 0.1 * s
    return x.astype(np.float32), u, s.astype(np.float32)


def component_correlations(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return np.array([abs(np.corrcoef(a[:, i], b[:, i])[0, 1]) for i in range(a.shape[1])])


def test_fit_to_latents_matches_encoder_and_decoder_to_the_pairs():
    x, u, s = labelled()
    torch.manual_seed(0)
    model = build_model(ModelConfig(model="ivae", dim=3, latent_dim=3, aux=runs.aux_spec(u, "test")))
    x_t, u_t = torch.as_tensor((x - x.mean(0)) / x.std(0)), torch.as_tensor(u)
    z = torch.as_tensor(s) * 5.0 + 2.0  # any scale: standardised inside
    prior_before = [p.detach().clone() for p in model.prior.parameters()]
    error = fit_to_latents(model, x_t, u_t, z, seed=0)
    assert error < 0.1
    with torch.no_grad():
        mean, _ = model.posterior(x_t, u_t)
        reconstruction = model.decode((z - z.mean(0)) / z.std(0))
    assert component_correlations(mean, z).min() > 0.9
    assert ((reconstruction - x_t) ** 2).mean() < 0.05
    assert any(not torch.equal(a, b) for a, b in zip(prior_before, model.prior.parameters(), strict=True))  # M-step


def test_start_from_flow_puts_the_ivae_on_the_flows_latents():
    x, u, s = labelled()
    plan = plan_run(make_dataset(x, u, s), ModelConfig(model="ivae"), TrainConfig(start="flow"))
    with torch.no_grad():
        random_start = plan.run.model.encode(*runs.as_tensors(plan.train_data.x, plan.train_data.u, "cpu"))
    flow_run = start_from_flow(plan, progress=False)
    assert flow_run.model_config.model == "iflow" and flow_run.model_config.prior == plan.run.model_config.prior
    rows = plan.split[0]
    x_t, u_t = runs.as_tensors(plan.train_data.x[rows], plan.train_data.u[rows], "cpu")
    with torch.no_grad():
        started, flow_latents = plan.run.model.encode(x_t, u_t), flow_run.model.encode(x_t, u_t)
    assert component_correlations(started, flow_latents).min() > 0.95
    assert component_correlations(random_start[rows], flow_latents).min() < 0.9  # the start did the work


def test_a_resumed_run_does_not_train_the_flow_again(tmp_path, monkeypatch):
    x, u, s = labelled()
    data = make_dataset(x, u, s)
    config = TrainConfig(start="flow", epochs=2, batch_size=64)
    calls = []
    real_start = runs.start_from_flow
    monkeypatch.setattr(runs, "start_from_flow", lambda plan, progress: calls.append(1) or real_start(plan, progress))
    checkpoint = Checkpointing(tmp_path / "checkpoint.pt", every=0.0, resume=True)
    train_planned(plan_run(data, ModelConfig(model="ivae"), config), progress=False, checkpoint=checkpoint)
    assert calls == [1] and checkpoint.path.exists()
    train_planned(plan_run(data, ModelConfig(model="ivae"), config), progress=False, checkpoint=checkpoint)
    assert calls == [1]


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [({"model": "vae"}, "not for"), ({"latent_dim": 2}, "as many latents"), ({"obs": "poisson"}, "gaussian")],
)
def test_check_flow_start_refuses_what_a_flow_cannot_start(changes, fragment):
    config = ModelConfig(model="ivae", dim=3, latent_dim=3)
    check_flow_start(config)
    with pytest.raises(UserError, match=fragment):
        check_flow_start(ModelConfig(**{**vars(config), **changes}))
