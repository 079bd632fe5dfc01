"""TrainConfig.threads holds in the Python API: set for the call, the caller's count given back."""

import numpy as np
import pytest
import torch

import iflow.runs
from iflow.config import ModelConfig, TrainConfig
from iflow.data.dataset import make_dataset
from iflow.threads import torch_threads


@pytest.fixture
def two_threads():
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(1)


def test_train_runs_on_the_configured_threads_and_restores_them(two_threads, monkeypatch):
    seen = []
    real_fit = iflow.runs.fit

    def recording_fit(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(iflow.runs, "fit", recording_fit)
    rng = np.random.default_rng(0)
    data = make_dataset(rng.normal(size=(200, 2)), np.arange(200) % 2)
    config = TrainConfig(epochs=1, batch_size=50, threads=1)
    iflow.runs.train(data, ModelConfig(flow="realnvp", depth=1, hidden=8), config, progress=False)
    assert seen == [1]
    assert torch.get_num_threads() == 2


def test_thread_count_is_restored_after_an_error(two_threads):
    with pytest.raises(RuntimeError), torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
