"""iflow/runs.py: a run planned once, trained, saved and loaded back exactly."""

import json

import numpy as np
import pytest
import torch

from iflow.config import ModelConfig, TrainConfig
from iflow.data.dataset import make_dataset
from iflow.errors import UserError
from iflow.runs import CONFIG_FILE, encode_dataset, evaluate, load_run, plan_run, save_run, train, train_planned


def small_data(n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    u = np.arange(n) % 4
    s = rng.normal(size=(n, 3)) * (1 + u)[:, None] + u[:, None]
    return make_dataset(np.tanh(s) + 0.3 * s, u, s, name="small")


SMALL = ModelConfig(flow="realnvp", depth=2, hidden=8)
QUICK = TrainConfig(epochs=2, batch_size=100)


def test_plan_fills_the_config_from_the_data_and_fails_before_training() -> None:
    plan = plan_run(small_data(), SMALL, QUICK)
    config = plan.run.model_config
    assert config.dim == 3 and config.aux.n_labels == 4 and config.latent_dim == 0
    assert len(plan.split[0]) + len(plan.split[1]) == 400
    np.testing.assert_allclose(plan.train_data.x.mean(0), 0, atol=1e-5)
    with pytest.raises(UserError, match="batch_size"):
        plan_run(small_data(), SMALL, TrainConfig(batch_size=1000))
    with pytest.raises(UserError, match="linear_fit epoch needs a flow that ends in a linear layer"):
        plan_run(small_data(), SMALL, TrainConfig(batch_size=100, linear_fit="epoch"))


def test_the_planned_model_is_the_one_trained() -> None:
    plan = plan_run(small_data(), SMALL, QUICK)
    before = {k: v.clone() for k, v in plan.run.model.state_dict().items()}
    run, result = train_planned(plan, progress=False)
    assert run.model is plan.run.model and len(result.history) == 2
    assert any(not torch.equal(before[k], v) for k, v in run.model.state_dict().items())


def test_train_honours_the_thread_count_and_restores_it(monkeypatch) -> None:
    import iflow.runs

    torch.set_num_threads(1)
    seen = []
    real_fit = iflow.runs.fit

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(iflow.runs, "fit", spy)
    train(small_data(), SMALL, TrainConfig(epochs=1, batch_size=100, threads=2), progress=False)
    assert seen == [2] and torch.get_num_threads() == 1


def test_save_and_load_give_the_same_latents_and_metrics(tmp_path) -> None:
    data = small_data()
    run, result = train(data, SMALL, QUICK, progress=False)
    save_run(run, tmp_path, result, evaluate(run, data))
    loaded = load_run(tmp_path)
    np.testing.assert_array_equal(encode_dataset(loaded, data), encode_dataset(run, data))
    assert evaluate(loaded, data) == evaluate(run, data)
    recorded = json.loads((tmp_path / CONFIG_FILE).read_text())["model"]
    assert "obs" not in recorded and "latent_dim" not in recorded and recorded["flow"] == "realnvp"
