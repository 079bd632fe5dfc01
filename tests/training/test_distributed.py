"""Data-parallel training: 2 gloo processes on the CPU end with identical parameters, equal (within
float rounding) to one process at the same global batch; divergence, a signal on one rank, resume and
a non-flow model agree across ranks; ``torchrun -m iflow train`` gives the one-process run."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import distributed as dist

from iflow.cli import main
from iflow.config import ModelConfig, TrainConfig
from iflow.errors import UserError
from iflow.flows.build import build_flow
from iflow.models.identifiable_flow import IdentifiableFlow
from iflow.priors import ConditionalExpFamilyPrior
from iflow.runs import plan_run, train
from iflow.training import distributed
from iflow.training.checkpoint import CHECKPOINT_FILE, Checkpointing, load_checkpoint
from iflow.training.trainer import TrainingInterrupted, fit
from tests.helpers import SignalAt, tiny_data

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available"
)

DIM, WORLD = 3, 2
DEADLINE = 120.0  # seconds: ranks that disagree wait for each other forever; fail instead
FLOW_CONFIG = {"epochs": 3, "batch_size": 32, "lr": 3e-3}
NON_FLOWS = {"ivae": ModelConfig(model="ivae", hidden=8, depth=1, train_samples=1),
             "tcl": ModelConfig(model="tcl", hidden=8, depth=1)}  # fmt: skip


def spline_flow() -> IdentifiableFlow:
    """Ends in a linear layer: the per-epoch linear refit and prior M-step run on every rank."""
    torch.manual_seed(0)
    return IdentifiableFlow(build_flow("spline", DIM, depth=1, hidden=8), ConditionalExpFamilyPrior(DIM, n_labels=4))


class NanOnce(IdentifiableFlow):
    """A model whose loss is NaN at one call (counted from 1); the other ranks' losses stay finite."""

    def __init__(self, bad_call: int):
        base = spline_flow()
        super().__init__(base.flow, base.prior)
        self.bad_call, self.calls, self.first_batch = bad_call, 0, None

    def loss(self, x, u):
        self.calls += 1
        self.first_batch = x.detach().clone() if self.first_batch is None else self.first_batch
        loss = super().loss(x, u)
        return loss * math.nan if self.calls == self.bad_call else loss


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def weights(model: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def signal_after_agreeing(rank: int, step: int) -> None:
    """From now on, ``rank`` sends itself SIGTERM just after the ranks agree on ``step``: the signal
    lands between the agreement and the check that acts on it."""
    agree, calls = distributed.agree_on_checkpoint, [0]

    def late(due: bool, stops: list[int]) -> tuple[bool, list[int]]:
        outcome = agree(due, stops)
        calls[0] += 1
        if calls[0] == step and distributed.rank() == rank:
            os.kill(os.getpid(), signal.SIGTERM)
        return outcome

    distributed.agree_on_checkpoint = late


def rank_scenarios(rank: int, port: int, folder: str) -> None:
    """One rank of the 2-process run: every scenario in one launch (startup is the slow part)."""
    os.environ.update(MASTER_ADDR="localhost", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    folder, data = Path(folder), tiny_data(256, DIM)
    out: dict = {}
    with distributed.process_group("cpu"):
        model = spline_flow()
        out["history"] = fit(model, data, TrainConfig(**FLOW_CONFIG), progress=False).history
        out["flow"] = weights(model)
        model = NanOnce(bad_call=5 if rank == 0 else -1)  # 8 steps per epoch: epoch 1, step 5, on rank 0 only
        out["nan_lr"] = [h["lr"] for h in fit(model, data, TrainConfig(**FLOW_CONFIG), progress=False).history]
        out["nan"], out["first_batch"] = weights(model), model.first_batch
        try:
            fit(spline_flow(), data, TrainConfig(epochs=1, batch_size=31), progress=False)
        except UserError as exc:
            out["batch_error"] = str(exc)
        try:
            with distributed.quiet_unless_main():
                raise UserError("reported by rank 0 only")
        except UserError:
            out["error_exit"] = "raised"
        except SystemExit as exc:
            out["error_exit"] = exc.code
        for name, config in NON_FLOWS.items():
            run, _ = train(data, config, TrainConfig(epochs=2, batch_size=32), progress=False)
            out[name] = weights(run.model)
        path = folder / CHECKPOINT_FILE
        killed = SignalAt(spline_flow(), 12 if rank == 0 else -1, signal.SIGTERM)  # a stop on rank 0 only
        try:
            fit(killed, data, TrainConfig(**FLOW_CONFIG), progress=False, checkpoint=Checkpointing(path, every=1e9))
        except TrainingInterrupted:
            out["interrupted_after_calls"] = killed.calls
        dist.barrier()  # rank 0 has written the checkpoint
        model = spline_flow()
        fit(model, data, TrainConfig(**FLOW_CONFIG), progress=False, checkpoint=Checkpointing(path, resume=True))
        out["resumed"] = weights(model)
        signal_after_agreeing(rank=1, step=12)
        late = SignalAt(spline_flow(), -1, signal.SIGTERM)
        try:
            fit(late, data, TrainConfig(**FLOW_CONFIG), progress=False, checkpoint=Checkpointing(folder / "late.pt"))
        except TrainingInterrupted:
            out["late_signal_stopped_after_calls"] = late.calls
    torch.save(out, folder / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> tuple[list[dict], Path]:
    folder = tmp_path_factory.mktemp("ddp")
    context = torch.multiprocessing.spawn(rank_scenarios, args=(free_port(), str(folder)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + DEADLINE
    while not context.join(timeout=max(0.0, deadline - time.monotonic())):  # True once every rank ended
        if time.monotonic() >= deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the ranks did not finish within {DEADLINE:.0f} s: they disagree on a collective")
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(WORLD)], folder


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs between ranks"


def assert_close(a: dict, b: dict) -> None:
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=f"{key} differs from one process")


def test_two_ranks_end_identical_and_equal_to_one_process_at_the_same_global_batch(ranks) -> None:
    (first, second), _ = ranks
    assert_identical(first["flow"], second["flow"])
    model = spline_flow()
    history = fit(model, tiny_data(256, DIM), TrainConfig(**FLOW_CONFIG), progress=False).history
    assert_close(weights(model), first["flow"])
    assert first["history"] == second["history"], "the ranks must agree on every epoch's record"
    for one, two in zip(history, first["history"], strict=True):  # train_loss: the mean over the global batch
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
        assert two["val_log_likelihood"] == pytest.approx(one["val_log_likelihood"], rel=1e-5)


def test_a_nan_on_one_rank_rolls_back_every_rank_like_one_process(ranks) -> None:
    (first, second), _ = ranks
    assert_identical(first["nan"], second["nan"])
    model = NanOnce(bad_call=5)
    lrs = [h["lr"] for h in fit(model, tiny_data(256, DIM), TrainConfig(**FLOW_CONFIG), progress=False).history]
    assert first["nan_lr"] == second["nan_lr"] == pytest.approx(lrs)
    assert lrs[0] < FLOW_CONFIG["lr"], "the NaN step should have lowered the learning rate"
    assert_close(weights(model), first["nan"])
    assert first["first_batch"].shape[0] == second["first_batch"].shape[0] == FLOW_CONFIG["batch_size"] // WORLD
    torch.testing.assert_close(torch.cat([first["first_batch"], second["first_batch"]]), model.first_batch)


def test_each_rank_reports_a_global_batch_it_cannot_share_and_only_rank_0_prints_it(ranks) -> None:
    (first, second), _ = ranks
    assert first["batch_error"] == second["batch_error"] == (
        "batch_size 31 is the global batch and must be divisible by the 2 processes; use a multiple of 2"
    )
    assert (first["error_exit"], second["error_exit"]) == ("raised", 2)


@pytest.mark.parametrize("name", sorted(NON_FLOWS))
def test_the_ivae_and_tcl_train_with_identical_parameters_on_every_rank(ranks, name: str) -> None:
    (first, second), _ = ranks
    assert_identical(first[name], second[name])
    untrained = weights(plan_run(tiny_data(256, DIM), NON_FLOWS[name], TrainConfig(epochs=2, batch_size=32)).run.model)
    assert any(not torch.equal(untrained[k], first[name][k]) for k in untrained), f"{name} should have trained"


def test_a_signal_on_one_rank_stops_both_and_resume_is_bit_identical_to_the_uninterrupted_run(ranks) -> None:
    (first, second), _ = ranks
    assert first["interrupted_after_calls"] == 12, "rank 0 should stop at the step it was signalled"
    assert second["interrupted_after_calls"] == 12, "rank 1 should stop at the same step"
    assert first["late_signal_stopped_after_calls"] == second["late_signal_stopped_after_calls"] == 13
    assert_identical(first["resumed"], second["resumed"])
    assert_identical(first["resumed"], first["flow"])  # bit for bit, like a resumed one-process run


def test_a_checkpoint_of_two_processes_is_refused_by_one_with_a_clear_error(ranks) -> None:
    _, folder = ranks
    path = folder / CHECKPOINT_FILE
    assert load_checkpoint(path)["identity"]["config"]["world_size"] == WORLD
    with pytest.raises(UserError, match="written by 2 process.*this run has 1.*--nproc_per_node 2"):
        fit(spline_flow(), tiny_data(256, DIM), TrainConfig(**FLOW_CONFIG), progress=False,
            checkpoint=Checkpointing(path, resume=True))  # fmt: skip


def test_without_torchrun_nothing_is_distributed(monkeypatch) -> None:
    for name in distributed.TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    batch = torch.arange(10.0)
    assert not distributed.launched() and not distributed.active()
    assert distributed.own_rows(batch) is batch
    stops: list[int] = []
    assert distributed.agree_on_checkpoint(False, stops) == (False, stops)
    assert distributed.agree_on_checkpoint(True, stops)[1] is stops, "a plain run reads the live list"
    assert distributed.agree_on_tally(1.5, False, 3) == (1.5, False, 3)
    assert distributed.identity() == {}, "plain runs' checkpoints must not change"
    module = distributed.LossModule(spline_flow())
    assert distributed.loss_module(module) is module
    with distributed.process_group("cpu") as device:
        assert device == "cpu" and not distributed.active()


def torchrun(*argv: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m iflow ARGV``; the launcher and its ranks killed after the deadline."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD),
              "--master_port", str(free_port()), "-m", "iflow", *argv]  # fmt: skip
    proc = subprocess.Popen(launch, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"torchrun did not finish within {DEADLINE:.0f} s")
    return subprocess.CompletedProcess(launch, proc.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    data = tiny_data(256, DIM)
    path = tmp_path_factory.mktemp("data") / "d.npz"
    np.savez(path, x=data.x, u=data.u, s=data.s)
    return path


def test_torchrun_iflow_train_gives_the_one_process_run_and_writes_from_rank_0(data_file: Path, tmp_path: Path) -> None:
    options = ["--data", str(data_file), "--epochs", "2", "--batch-size", "32", "--flow", "realnvp", "--depth", "2",
               "--hidden", "8", "--prior", "gauss"]  # fmt: skip  # named: one process alone would choose among priors
    done = torchrun("train", *options, "--out", str(tmp_path / "two"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("validation rows") == 1, "only rank 0 prints"
    assert main(["train", *options, "--out", str(tmp_path / "one")]) == 0
    two, one = (torch.load(tmp_path / name / "model.pt", weights_only=True)["state_dict"] for name in ("two", "one"))
    assert_close(one, two)
    assert not (tmp_path / "two" / CHECKPOINT_FILE).exists()
    history = json.loads((tmp_path / "two" / "history.json").read_text())["epochs"]
    assert len(history) == 2


def test_under_torchrun_the_device_is_per_rank_and_restarts_are_refused(monkeypatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.launched()
    assert distributed.rank_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            distributed.rank_device("cuda")
    elif torch.cuda.device_count() > 1:
        assert distributed.rank_device("cuda:0") == "cuda:1"
    with pytest.raises(UserError, match="restarts 2 cannot run under torchrun"):
        distributed.check_restarts(2)
    distributed.check_restarts(1)
    with pytest.raises(UserError, match="prior auto trains one model per prior"):
        distributed.check_prior_choice(("gauss", "shape"))
    distributed.check_prior_choice(())
