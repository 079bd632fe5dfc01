"""The trainer on any device: no host read between an epoch's steps, the CPU results of the
step that read the loss back every step, and the device's generator checkpointed."""

from __future__ import annotations

import math
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from iflow.config import ModelConfig, TrainConfig
from iflow.data.dataset import AuxSpec, Dataset
from iflow.models.build import MODELS, build_model
from iflow.models.identifiable_flow import IdentifiableFlow
from iflow.training import trainer as trainer_module
from iflow.training.checkpoint import CHECKPOINT_FILE, Checkpointing, all_finite
from iflow.training.distributed import LossModule
from iflow.training.trainer import Trainer, TrainingInterrupted, fit
from tests import helpers

DIM = 3
OPTIMIZERS = str(Path(torch.optim.__file__).parent)
HOST_READS = ("item", "tolist", "__float__", "__bool__", "__int__", "__index__", "numpy", "cpu")


class HostReads:
    """Counts the Tensor methods that read a value back to the host, while :meth:`Trainer.run_steps`
    runs and neither :meth:`Trainer.epoch_inputs` (once per epoch) nor :meth:`Trainer.settle` (the
    one read of the steps) does; on CUDA, any synchronisation in that window raises
    (``torch.cuda.set_sync_debug_mode("error")``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, device: torch.device) -> None:
        self.active, self.cuda, self.seen, self.windows = False, device.type == "cuda", [], 0
        for name in HOST_READS:
            monkeypatch.setattr(torch.Tensor, name, self.counted(name, getattr(torch.Tensor, name)))
        monkeypatch.setattr(Trainer, "run_steps", self.window(Trainer.run_steps, True))
        monkeypatch.setattr(Trainer, "settle", self.window(Trainer.settle, False))
        monkeypatch.setattr(Trainer, "epoch_inputs", self.window(Trainer.epoch_inputs, False))

    def counted(self, name: str, read: Callable) -> Callable:
        def counting(tensor: Tensor, *args: object, **kwargs: object) -> object:
            # torch's Adam keeps its step counts on the host unless capturable: reading those waits for nothing
            if self.active and not (tensor.device.type == "cpu" and OPTIMIZERS in sys._getframe(1).f_code.co_filename):
                self.seen.append(name)
            return read(tensor, *args, **kwargs)

        return counting

    def window(self, method: Callable, active: bool) -> Callable:
        def run(trainer: Trainer, *args: object) -> object:
            previous, self.active = self.active, active
            self.windows += active
            if self.cuda:
                torch.cuda.set_sync_debug_mode("error" if active else 0)
            try:
                return method(trainer, *args)
            finally:
                self.active = previous
                if self.cuda:
                    torch.cuda.set_sync_debug_mode("error" if previous else 0)

        return run


def discrete(data: Dataset) -> Dataset:
    """``data`` on integer levels with unit dequantisation noise."""
    return replace(data, x=np.round(4 * data.x), dequantize=1.0)


def model_for(name: str, flow: str = "spline", **options: object) -> nn.Module:
    torch.manual_seed(0)
    sizes = {"depth": 2} if flow == "mlp" else {"depth": 2, "hidden": 8}  # the mlp flow has no hidden layers
    config = ModelConfig(model=name, flow=flow, dim=DIM, aux=AuxSpec("labels", n_labels=4), **sizes, **options)
    return build_model(config)


STEPPING = [("iflow", "spline", {}), ("iflow", "realnvp", {}), ("iflow", "glow", {}), ("iflow", "mlp", {}),
            ("ivae", "spline", {"anneal_steps": 5})]  # fmt: skip


@pytest.mark.parametrize(("name", "flow", "options"), STEPPING, ids=[f"{m}-{f}" for m, f, _ in STEPPING])
def test_an_epochs_steps_read_nothing_back_to_the_host(name, flow, options, device, monkeypatch) -> None:
    reads = HostReads(monkeypatch, device)
    config = TrainConfig(epochs=2, batch_size=30, device=str(device))  # 6 steps per epoch
    result = fit(model_for(name, flow, **options), discrete(helpers.tiny_data(200, DIM)), config, progress=False)
    assert reads.windows == 2 and len(result.history) == 2
    assert reads.seen == [], f"host reads during the steps: {sorted(set(reads.seen))}"


class ReadsTheLoss(IdentifiableFlow):
    """``base`` reading its loss back to the host each step: what the detector must see."""

    def __init__(self, base: IdentifiableFlow) -> None:
        super().__init__(base.flow, base.prior)

    def loss(self, x: Tensor, u: Tensor) -> Tensor:
        loss = super().loss(x, u)
        assert math.isfinite(loss.item())
        return loss


def test_the_host_read_detector_sees_a_read_in_the_loss(monkeypatch) -> None:
    reads = HostReads(monkeypatch, torch.device("cpu"))
    config = TrainConfig(epochs=1, batch_size=30, prior_fit="none")
    fit(ReadsTheLoss(model_for("iflow")), helpers.tiny_data(200, DIM), config, progress=False)
    assert reads.seen.count("item") == 6


def host_read_step(losses: list[float]) -> Callable:
    """The step as it was: loss and gradient norm read back every step, no update when not finite."""

    def step(loss_module: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, u: Tensor, clip: float):
        loss = loss_module(x, u)
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        norm = nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip, foreach=True)
        value, norm_value = torch.stack([loss.detach(), norm.to(loss.dtype)]).tolist()
        finite = math.isfinite(value) and math.isfinite(norm_value)
        if finite:
            optimizer.step()
            losses.append(value)
        return torch.tensor(value, dtype=torch.float64), torch.tensor(finite)

    return step


@pytest.mark.parametrize("data", ["continuous", "discrete"])
def test_cpu_results_are_those_of_the_step_that_read_the_loss_back(data, monkeypatch) -> None:
    dataset = helpers.tiny_data(300, DIM)
    dataset = discrete(dataset) if data == "discrete" else dataset
    config = TrainConfig(epochs=3, batch_size=45)  # 6 steps per epoch
    model = model_for("iflow")
    result = fit(model, dataset, config, progress=False)

    losses: list[float] = []
    monkeypatch.setattr(trainer_module, "train_step", host_read_step(losses))
    reference = model_for("iflow")
    expected = fit(reference, dataset, config, progress=False)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    sums = [sum(losses[i : i + 6]) / 6 for i in range(0, 18, 6)]  # Python float sums, epoch by epoch
    assert [h["train_loss"] for h in result.history] == [h["train_loss"] for h in expected.history] == sums


class NanAt(IdentifiableFlow):
    """``base`` with a NaN loss at the given calls (counted from 1)."""

    def __init__(self, base: IdentifiableFlow, bad_calls: set[int]) -> None:
        super().__init__(base.flow, base.prior)
        self.bad_calls, self.calls = bad_calls, 0

    def loss(self, x: Tensor, u: Tensor) -> Tensor:
        self.calls += 1
        loss = super().loss(x, u)
        return loss * math.nan if self.calls in self.bad_calls else loss


@pytest.mark.parametrize("every", [0.0, 1e9])  # a checkpoint after every step, or only the last
def test_parameters_of_a_non_finite_step_reach_neither_the_best_state_nor_a_checkpoint(every, tmp_path, monkeypatch) -> None:
    saved: list[bool] = []
    original_save = Checkpointing.save

    def save(checkpointing: Checkpointing, state: dict) -> bool:
        saved.append(all_finite(state["model"]) and all_finite(state["epoch_start"]["model"]))
        return original_save(checkpointing, state)

    monkeypatch.setattr(Checkpointing, "save", save)
    config = TrainConfig(epochs=2, batch_size=45, schedule="constant")  # 6 steps per epoch
    model = NanAt(model_for("iflow"), bad_calls={12})  # the last step: the epoch ends on NaN parameters
    result = fit(model, helpers.tiny_data(300, DIM), config, progress=False,
                 checkpoint=Checkpointing(tmp_path / CHECKPOINT_FILE, every=every))  # fmt: skip
    assert model.calls == 6 + 6 + 6 and len(result.history) == 2
    assert saved and all(saved)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(math.isfinite(h["train_loss"]) for h in result.history)


@pytest.mark.parametrize("name", [name for name, entry in MODELS.items() if entry.trained])
def test_a_step_from_non_finite_parameters_is_flagged_and_raises_nothing(name) -> None:
    """The tally is read after the epoch's steps, so every model must take steps from NaN weights."""
    model = model_for(name)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(math.nan)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), foreach=True)
    x, u = torch.randn(32, DIM), torch.arange(32) % 4
    loss, finite = trainer_module.train_step(LossModule(model), optimizer, x, u, clip=10.0)
    assert not finite and loss.shape == ()


def test_training_on_the_device_resumes_from_its_generator_state(device, tmp_path: Path) -> None:
    """Discrete data draw their noise on the device from the trainer's generator, which a checkpoint keeps."""
    data = discrete(helpers.tiny_data(200, DIM))
    config = TrainConfig(epochs=2, batch_size=40, device=str(device))  # 4 steps per epoch
    reference = model_for("iflow")
    fit(reference, data, config, progress=False)
    path = tmp_path / CHECKPOINT_FILE
    with pytest.raises(TrainingInterrupted):
        fit(helpers.SignalAt(model_for("iflow"), 6, signal.SIGTERM), data, config, progress=False,
            checkpoint=Checkpointing(path))  # fmt: skip
    resumed = model_for("iflow")
    fit(resumed, data, config, progress=False, checkpoint=Checkpointing(path, resume=True))
    tolerance = {"rtol": 0, "atol": 0} if device.type == "cpu" else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(resumed.state_dict(), reference.state_dict(), **tolerance)
    assert next(resumed.parameters()).device.type == device.type

