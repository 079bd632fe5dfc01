"""The trainer: divergence is caught and rolled back, never checkpointed; same seed, same bits."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from iflow.config import ModelConfig, TrainConfig
from iflow.data.dataset import AuxSpec
from iflow.defaults import TASK_DEFAULTS, VAE_FAMILY_DEFAULTS
from iflow.models.build import build_model
from iflow.models.identifiable_flow import IdentifiableFlow
from iflow.runs import train
from iflow.training.checkpoint import CHECKPOINT_FILE, Checkpointing, all_finite, load_checkpoint
from iflow.training.trainer import LR_DECAY, MAX_RETRIES, TrainingDiverged, fit
from tests import helpers

DIM = 3


def tiny_data(n: int = 200, seed: int = 0):
    return helpers.tiny_data(n, DIM, seed)


def tiny_model() -> IdentifiableFlow:
    return helpers.tiny_flow(DIM, depth=2)


class NanAt(IdentifiableFlow):
    """A model whose loss is NaN at the given calls (counted from 1): a divergence on cue."""

    def __init__(self, bad_calls: set[int]):
        base = tiny_model()
        super().__init__(base.flow, base.prior)
        self.bad_calls, self.calls = bad_calls, 0

    def loss(self, x, u):
        self.calls += 1
        loss = super().loss(x, u)
        return loss * math.nan if self.calls in self.bad_calls else loss


def test_absurd_learning_rate_stops_with_a_clear_message_and_no_nan_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_FILE
    config = TrainConfig(epochs=3, batch_size=50, lr=1e6)
    with pytest.raises(TrainingDiverged, match=rf"diverged.*after {MAX_RETRIES} learning-rate reductions.*lower lr"):
        fit(tiny_model(), tiny_data(), config, progress=False, checkpoint=Checkpointing(path, every=0))
    if path.exists():  # a checkpoint may hold a good state, but never a non-finite one
        assert all_finite(load_checkpoint(path)["model"])


def test_a_nan_step_rolls_back_and_retries_with_a_smaller_learning_rate(caplog) -> None:
    config = TrainConfig(epochs=3, batch_size=50, lr=1e-3, schedule="constant")
    model = NanAt(bad_calls={5})  # 3 steps per epoch: the second step of epoch 2
    with caplog.at_level(logging.WARNING, logger="iflow.training.trainer"):
        result = fit(model, tiny_data(), config, progress=False)
    assert [h["lr"] for h in result.history] == pytest.approx([1e-3, 1e-3 * LR_DECAY, 1e-3 * LR_DECAY])
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    # the flag is read after the epoch's steps: epoch 2 runs its 3 steps, rolls back, restarts from its first
    assert model.calls == 3 + 3 + 3 + 3, "epoch 2 should restart from its first step after the rollback"
    assert "epoch 2, step 2" in caplog.text and "retry 1 of 3" in caplog.text
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_retries_are_bounded() -> None:
    config = TrainConfig(epochs=2, batch_size=50, schedule="constant")
    model = NanAt(bad_calls=set(range(1, 100)))
    with pytest.raises(TrainingDiverged, match="epoch 1, step 1"):
        fit(model, tiny_data(), config, progress=False)
    assert model.calls == (MAX_RETRIES + 1) * 3, "each try runs epoch 1's 3 steps, then rolls back"


def trained_weights(seed: int) -> dict:
    config = ModelConfig(flow="realnvp", depth=2, hidden=8)
    run, _ = train(tiny_data(), config, TrainConfig(epochs=2, batch_size=50, seed=seed), progress=False)
    return run.model.state_dict()


def test_same_seed_gives_bit_identical_weights() -> None:
    torch.manual_seed(123)  # the global RNG state before training must not matter
    first = trained_weights(seed=7)
    torch.manual_seed(456)
    second = trained_weights(seed=7)
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = trained_weights(seed=8)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_off_a_terminal_every_epoch_is_logged(caplog) -> None:
    """Under nohup, SLURM or a log file there is no progress bar: one INFO line per epoch instead."""
    config = TrainConfig(epochs=3, batch_size=50)
    with caplog.at_level(logging.INFO, logger="iflow.training"):
        fit(tiny_model(), tiny_data(), config, progress=True)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("iflow: epoch")]
    assert [line.split(":")[1].strip() for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all("val_ll" in line and "mcc" in line for line in lines)


class RecordsSubnormalProducts(IdentifiableFlow):
    """A model that records, at each loss, what a product with a subnormal float32 gives."""

    def __init__(self) -> None:
        base = tiny_model()
        super().__init__(base.flow, base.prior)
        self.products: list[float] = []

    def loss(self, x, u):
        self.products.append(helpers.subnormal_product())
        return super().loss(x, u)


def test_training_flushes_subnormals_and_leaves_them_alone_afterwards() -> None:
    helpers.skip_unless_subnormals_can_be_flushed()
    model = RecordsSubnormalProducts()
    fit(model, tiny_data(), TrainConfig(epochs=2, batch_size=50), progress=False)
    assert len(model.products) == 6 and set(model.products) == {0.0}  # 3 steps an epoch, every one flushed
    assert helpers.subnormal_product() == pytest.approx(helpers.SUBNORMAL)  # and the setting undone


def test_fit_gives_a_model_of_the_vae_family_its_own_defaults() -> None:
    """Before: fit filled a bare config with the flows' defaults (lr 2e-2) whatever the model."""
    model = build_model(ModelConfig(model="ivae", dim=DIM, aux=AuxSpec("labels", n_labels=4)))
    result = fit(model, tiny_data(), TrainConfig(epochs=1, batch_size=50, schedule="constant"), progress=False)
    assert result.history[0]["lr"] == VAE_FAMILY_DEFAULTS["recovery"].lr != TASK_DEFAULTS["recovery"].lr
