"""--precision: bf16 trains (finite, close to fp32, and not fp32 itself), tf32 only where it means
something, and everything is full precision again after training."""

import math

import pytest
import torch

from iflow.config import ModelConfig, TrainConfig
from iflow.errors import UserError
from iflow.flows.autocast import conditioner_networks
from iflow.runs import evaluate, plan_run, train
from iflow.training.precision import training_precision
from tests import helpers

MODEL = ModelConfig(flow="spline", depth=2, hidden=16)


def config(precision: str, device: torch.device) -> TrainConfig:
    return TrainConfig(epochs=4, batch_size=50, precision=precision, device=str(device))


def test_bf16_training_stays_finite_and_close_to_fp32_and_evaluates_in_full_precision(device):
    data = helpers.tiny_data(600, 3)
    start = evaluate(plan_run(data, MODEL, config("fp32", device)).run, data)["log_likelihood"]  # same seed, same start
    fp32_run, _ = train(data, MODEL, config("fp32", device), progress=False)
    bf16_run, bf16 = train(data, MODEL, config("bf16", device), progress=False)
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["val_log_likelihood"]) for h in bf16.history)
    fp32_score, bf16_score = (evaluate(run, data)["log_likelihood"] for run in (fp32_run, bf16_run))
    assert fp32_score > start + 0.3, "training must improve for the comparison to mean something"
    assert bf16_score == pytest.approx(fp32_score, abs=0.05 * (fp32_score - start))
    fp32_weights, bf16_weights = fp32_run.model.state_dict(), bf16_run.model.state_dict()
    assert not all(torch.equal(fp32_weights[k], bf16_weights[k]) for k in fp32_weights), "bf16 changed nothing"
    assert all(network.autocast_dtype is None for network in conditioner_networks(bf16_run.model))
    assert bf16_run.train_config.precision == "bf16"


def test_tf32_on_the_cpu_and_bf16_without_conditioners_are_refused():
    with pytest.raises(UserError, match="tf32 sets the matmul precision of CUDA devices"):
        TrainConfig(precision="tf32").validate()
    TrainConfig(precision="tf32", device="cuda").validate()  # valid; the device itself is checked later
    with pytest.raises(UserError, match="unknown precision 'fp16'"):
        TrainConfig(precision="fp16").validate()
    with pytest.raises(UserError, match="bf16 runs the conditioner networks"):
        plan_run(helpers.tiny_data(200, 3), ModelConfig(model="ivae"), TrainConfig(batch_size=50, precision="bf16"))


def test_tf32_sets_the_cuda_matmul_precision_for_training_only():
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = matmul.fp32_precision, conv.fp32_precision
    model = helpers.tiny_flow(3)
    with training_precision(model, "tf32"):
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
    assert (matmul.fp32_precision, conv.fp32_precision) == before
    with pytest.raises(RuntimeError), training_precision(model, "bf16"):
        raise RuntimeError("training failed")
    assert (matmul.fp32_precision, conv.fp32_precision) == before
