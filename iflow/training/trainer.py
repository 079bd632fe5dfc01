"""One trainer for every model: Adam, a learning-rate schedule, a validation split scored
by log-likelihood, the best state kept, MCC on the full data when sources are known.
Training runs to convergence of the held-out log-likelihood, or for a fixed budget
(:mod:`iflow.training.stopping`); ``TrainResult.stop_reason`` says which ended it.

:func:`fit` is an epoch loop over parts assembled once from the config: the steps
(:meth:`Trainer.run_steps`), the refits after each epoch (:mod:`iflow.training.epoch_end`),
validation, checkpoints (:class:`~iflow.training.checkpoint.Checkpointing`) and progress
reports (:mod:`iflow.training.progress`). The trainer calls models only through
:class:`~iflow.protocols.Model`.

Reliability: non-finite losses roll back to the start of the epoch and retry with a
smaller learning rate; with ``TrainConfig.rate_cut``, a collapse of the held-out
log-likelihood, or a plateau at a high rate, goes back to the best state at half the rate;
checkpoints make killed runs resumable bit for bit, SIGINT/SIGTERM stop cleanly.
"""

from __future__ import annotations

import copy
import logging
import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
from torch import Tensor, nn

from ..config import TrainConfig
from ..data.dataset import Dataset, split_indices
from ..data.dequantization import dequantize
from ..defaults import train_defaults
from ..errors import UserError, param
from ..protocols import Model, trains_on_a_bound
from ..runtime import as_tensors, batched, denormals_flushed, resolve_device, seed_everything
from . import distributed
from .checkpoint import Checkpointing, check_same_run, load_checkpoint, restore_rng_states, rng_states, run_identity
from .compiled import training_loss
from .epoch_end import EpochLatents, TrainingTensors, refits_for, source_mcc, uses_linear_fit
from .flat_parameters import StepParameters, step_parameters
from .precision import training_precision
from .progress import ProgressReport
from .schedule import end_epoch as schedule_end_epoch
from .schedule import make_schedule, scale_learning_rate
from .step_tally import StepTally
from .stopping import StoppingRule

WARM_START_ROWS = 8192  # about this many rows, strided over the data, set the data-dependent inits

LR_DECAY = 0.1  # learning-rate factor after each divergence
MAX_RETRIES = 3  # learning-rate reductions before giving up
# With ``TrainConfig.rate_cut`` on, a collapse (the held-out log-likelihood this many nats per dimension of x below
# its best; at lr 2e-2 a 5-D run fell from 4.62 nats at epoch 15 to -8.67 at epoch 23 and never climbed back in
# 50 epochs, benchmarks/heldout_tails.md, where the epoch-to-epoch change is about 0.03 nats on the default
# benchmark), and a plateau (patience) while the rate is at least rate_cut x lr,
# send training back to the best state at the learning rate times RATE_CUT_FACTOR (benchmarks/robustness.md,
# "Back to the best state"). A run with neither is step for step the same as without.
COLLAPSE_NATS_PER_DIM = 0.2
RATE_CUT_FACTOR = 0.5

log = logging.getLogger(__name__)

__all__ = ["fit", "uses_linear_fit", "warm_start", "refit_prior", "TrainResult", "TrainingDiverged"]


@dataclass
class TrainResult:
    """``history``: one dict per epoch; ``best_epoch`` by validation log-likelihood;
    ``stop_reason``: a key of :data:`~iflow.training.stopping.STOP_REASONS` ("" while training)."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_log_likelihood: float = -math.inf
    seconds: float = 0.0
    stop_reason: str = ""

    @property
    def returns_to_best(self) -> int:
        """Epochs after which training went back to the best state (``TrainConfig.rate_cut``)."""
        return sum("returned_to_best" in record for record in self.history)


class TrainingDiverged(UserError):
    """The loss or a gradient stayed non-finite after every learning-rate reduction."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; the message says where the checkpoint was saved."""


@dataclass
class Progress:
    """Where training stands: ``epoch`` epochs done and ``step`` steps of the next, in data ``order``."""

    epoch: int = 0
    step: int = 0
    order: Tensor | None = None  # (n_train,) permutation of the current epoch
    total: float = 0.0  # summed loss of the current epoch's steps
    retries: int = 0  # learning-rate reductions after divergence so far
    elapsed: float = 0.0  # seconds trained before the last checkpoint
    best_state: dict | None = None
    stopping: dict = field(default_factory=dict)  # the stopping rule's state after the last epoch
    result: TrainResult = field(default_factory=TrainResult)


def split_for_training(data: Dataset, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """The seeded (train, validation) rows; :class:`UserError` when they cannot fill a batch."""
    split_seed = config.seed if config.split_seed is None else config.split_seed
    train_idx, val_idx = split_indices(len(data), config.val_fraction, split_seed)
    if len(train_idx) < config.batch_size:
        raise UserError(
            f"{data.source}: {len(train_idx)} training rows is fewer than one batch ({config.batch_size}); "
            f"lower {param('batch_size')} or give more data"
        )
    if len(val_idx) == 0:
        raise UserError(
            f"{data.source}: {len(data)} rows leave no validation rows; raise {param('val_fraction')} or give more data"
        )
    return train_idx, val_idx


def training_tensors(
    data: Dataset, split: tuple[np.ndarray, np.ndarray], seed: int, device: torch.device
) -> TrainingTensors:
    """Tensors on ``device``; discrete data get one fixed dequantisation draw for validation and the refits."""
    train_idx, val_idx = split
    x, u = as_tensors(data.x, data.u, device)
    x_train, x_val = x[train_idx], x[val_idx]
    width = data.dequantize
    discrete = bool(np.any(width))
    if discrete:
        x_val = dequantize(x_val, width, torch.Generator(device).manual_seed(seed + 1))
    x_fit = dequantize(x_train, width, torch.Generator(device).manual_seed(seed + 2)) if discrete else x_train
    return TrainingTensors(x, u, train_idx, x_train, u[train_idx], x_val, u[val_idx], x_fit, data.s, width)


def refit_prior(model: Model, x: Tensor, u: Tensor) -> bool:
    """The prior's closed-form M-step at the current model; False (nothing done) when it has none."""
    if not (model.prior.fits_labels and u.dtype == torch.long):
        return False
    model.eval()
    model.fit_prior(x, u)
    return True


def warm_start(model: Model, x: Tensor, u: Tensor) -> None:
    """Data-dependent start: one training-mode pass (actnorm inits), then the prior's M-step."""
    every = max(1, x.shape[0] // WARM_START_ROWS)  # a strided subset spans all segments
    model.train()
    with torch.no_grad():
        model.log_prob(x[::every], u[::every])
    refit_prior(model, x, u)


def mean_log_likelihood(model: Model, x: Tensor, u: Tensor) -> float:
    """Mean log p(x | u) in nats (exact for flows, a bound for VAEs)."""
    model.eval()
    return float(batched(model.log_prob, x, u).mean())


def train_step(
    loss_module: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, u: Tensor, clip: float
) -> tuple[Tensor, Tensor]:
    """One optimizer step with no host read: the loss ``()`` and whether it and the gradient norm
    are finite ``()`` bool, both on the device.

    ``loss_module(x, u)`` is the model's loss (:func:`~iflow.training.distributed.loss_module`):
    under DDP only a call of the wrapped module averages the gradients over the ranks. The
    gradients clipped (to total norm ``clip``) are those of the ``optimizer``'s parameters: with
    :func:`~iflow.training.flat_parameters.step_parameters`, a few flat tensors. Gradients are
    zeroed in place, since those of flat parameters are views.

    A non-finite step is taken all the same (its parameters turn non-finite): the trainer
    reads the flag once after the epoch's steps (:class:`~iflow.training.step_tally.StepTally`)
    and rolls back to the epoch's start, as it did when it checked every step.
    """
    loss = loss_module(x, u)
    optimizer.zero_grad(set_to_none=False)
    loss.backward()
    # the optimizer's list of the model's parameters (wrapped or not): walking the module tree for them cost
    # about 0.1 ms of the default step
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    norm = nn.utils.clip_grad_norm_(parameters, clip, foreach=True)
    loss = loss.detach()
    optimizer.step()
    return loss, torch.isfinite(loss) & torch.isfinite(norm)


@contextmanager
def stop_requests(enabled: bool) -> Iterator[list[int]]:
    """Turn SIGINT/SIGTERM into a list of received signals, checked between steps."""
    received: list[int] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class Trainer:
    """The mutable state of one :func:`fit` call: steps, rollback, checkpoints, the epoch's end."""

    model: Model
    loss_module: nn.Module  # the model's loss, DDP-wrapped under torchrun: steps go through it
    config: TrainConfig
    tensors: TrainingTensors
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    progress: Progress
    rule: StoppingRule
    parameters: StepParameters  # what the steps update, and the flat buffers checked after every epoch
    checkpoint: Checkpointing | None = None
    identity: dict | None = None
    epoch_start: dict | None = None  # the rollback point: the state when this epoch's order was drawn
    clock_start: float = field(default_factory=time.perf_counter)
    last_save: float = field(default_factory=time.monotonic)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.tensors.train_idx) // self.config.batch_size

    def seconds(self) -> float:
        return self.progress.elapsed + time.perf_counter() - self.clock_start

    def capture(self) -> dict:
        """A deep copy of everything the rest of training depends on."""
        progress = {f.name: getattr(self.progress, f.name) for f in fields(Progress)}
        progress.update(elapsed=self.seconds(), result=asdict(self.progress.result))
        return copy.deepcopy(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "rng": rng_states(self.generator),
                "progress": progress,
            }
        )

    def restore(self, state: dict) -> None:
        state = copy.deepcopy(state)  # loading aliases tensors, and a snapshot may be restored twice
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        restore_rng_states(state["rng"], self.generator)
        progress = state["progress"]
        self.progress = Progress(**{**progress, "result": TrainResult(**progress["result"])})
        if self.progress.stopping:
            self.rule.load_state(self.progress.stopping)
        self.clock_start = time.perf_counter()

    def resume(self) -> None:
        """Continue from the checkpoint file, after checking that it is this run's."""
        path = self.checkpoint.path
        saved = load_checkpoint(path)
        distributed.check_world_size(saved, path)
        check_same_run(saved, self.identity, path)
        try:
            self.restore(saved["epoch_start"])  # both saved states must fit this model
            self.restore(saved)
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:  # e.g. another model
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{path}: the checkpoint does not fit this model ({reason})") from None
        self.epoch_start = saved["epoch_start"]

    def recover(self, where: str) -> None:
        """Roll back to the start of the epoch with a smaller learning rate (at most ``MAX_RETRIES`` times)."""
        retries = self.progress.retries + 1
        if retries > MAX_RETRIES:
            lr = self.optimizer.param_groups[0]["lr"]
            if self.checkpoint is not None and distributed.is_main():  # resuming would diverge the same way: leave no checkpoint behind
                self.checkpoint.path.unlink(missing_ok=True)
            raise TrainingDiverged(
                f"training diverged: non-finite loss or gradient at {where}, still after {MAX_RETRIES} "
                f"learning-rate reductions (to {lr:.3g}); lower {param('lr')} (was {self.config.lr:g}) or check the data"
            )
        self.restore(self.epoch_start)
        self.progress.retries = retries
        scale_learning_rate(self.optimizer, self.schedule, LR_DECAY)
        log.warning(
            "iflow: warning: non-finite loss or gradient at %s; rolled back, learning rate now %.3g (retry %d of %d)",
            where, self.optimizer.param_groups[0]["lr"], retries, MAX_RETRIES,
        )  # fmt: skip
        self.epoch_start = self.capture()

    def collapse_margin(self) -> float:
        """How far (nats/sample) below its best the held-out log-likelihood falls in a collapse."""
        return COLLAPSE_NATS_PER_DIM * self.tensors.x_val[0].numel()

    def rate_is_high(self) -> bool:
        """Whether the learning rate is at least ``config.rate_cut`` times its base (never with rate_cut 0)."""
        return self.config.rate_cut > 0 and self.optimizer.param_groups[0]["lr"] >= self.config.rate_cut * self.config.lr

    def return_to_best(self, record: dict, why: str) -> None:
        """After a collapse or a plateau at a high rate (``why``): the best state's weights (and prior) again,
        the learning rate times ``RATE_CUT_FACTOR``; ``record`` (the epoch's) says so in the history."""
        best = self.progress.result
        self.model.load_state_dict(copy.deepcopy(self.progress.best_state))
        scale_learning_rate(self.optimizer, self.schedule, RATE_CUT_FACTOR)
        record["returned_to_best"] = why
        log.info(
            "iflow: epoch %d: held-out log-likelihood %.3f %s (best %.3f, epoch %d); back to that epoch's state, "
            "learning rate now %.3g",
            record["epoch"], record["val_log_likelihood"], "collapsed" if why == "collapsed" else "on a plateau",
            best.best_val_log_likelihood, best.best_epoch, self.optimizer.param_groups[0]["lr"],
        )  # fmt: skip

    def save(self) -> None:
        """Write a checkpoint of the current state (never a non-finite one; rank 0 only)."""
        if distributed.is_main():
            self.checkpoint.save({**self.capture(), "epoch_start": self.epoch_start, "identity": self.identity})
        self.last_save = time.monotonic()

    def checkpoint_due(self, stops: list[int]) -> bool:
        every = self.checkpoint.every if self.checkpoint is not None else math.inf
        return self.checkpoint is not None and (bool(stops) or time.monotonic() - self.last_save >= every)

    def run_steps(self, stops: list[int]) -> bool:
        """The rest of the current epoch's steps, with no host read between them (the tally is read
        after them and before a checkpoint); False when a divergence rolled the epoch back."""
        p, config, t = self.progress, self.config, self.tensors
        order, width = self.epoch_inputs()
        self.model.train()
        discrete = bool(np.any(t.dequantize))
        tally, first = StepTally(p.total, t.x.device), p.step
        while p.step < self.steps_per_epoch:
            batch = order[p.step * config.batch_size : (p.step + 1) * config.batch_size]
            x_batch = dequantize(t.x_train[batch], width, self.generator) if discrete else t.x_train[batch]
            x_rows, u_rows = distributed.own_rows(x_batch), distributed.own_rows(t.u_train[batch])
            tally.add(*train_step(self.loss_module, self.optimizer, x_rows, u_rows, config.clip_grad))
            self.schedule.step()
            p.step += 1
            due, stopping = distributed.agree_on_checkpoint(self.checkpoint_due(stops), stops)
            if due:
                if not self.settle(tally, first):
                    return False
                self.save()
                if stopping:
                    raise TrainingInterrupted(f"checkpoint saved to {self.checkpoint.path}; continue with --resume")
        return self.settle(tally, first)

    def epoch_inputs(self) -> tuple[Tensor, Tensor]:
        """The epoch's data order ``(n_train,)`` and dequantisation widths on the device, each copied
        there once per epoch; a new epoch draws its order and captures the rollback point first."""
        p, t = self.progress, self.tensors
        if p.order is None:
            p.order, p.total = torch.randperm(len(t.train_idx), generator=self.generator, device=t.x.device), 0.0
            self.epoch_start = self.capture()
        width = torch.as_tensor(t.dequantize, dtype=t.x_train.dtype, device=t.x.device)
        return p.order.to(t.x.device), width

    def settle(self, tally: StepTally, first: int) -> bool:
        """Read the steps' tally (from step ``first`` of this epoch); after a non-finite step, roll the
        epoch back (its parameters never reach the best state or a checkpoint). False after a rollback."""
        total, finite, finite_steps = distributed.agree_on_tally(*tally.read())
        if not finite:
            self.recover(f"epoch {self.progress.epoch + 1}, step {first + finite_steps + 1}")
            return False
        self.progress.total = total
        return True

    def end_epoch(self, refits: list) -> dict | None:
        """Refits, validation and tracking after the steps; the epoch's record, or None after a rollback."""
        p, t = self.progress, self.tensors
        for group in self.parameters.flat:
            group.check()
        self.model.eval()
        latents = EpochLatents(self.model, t)
        if t.s is not None:
            latents.all_rows()  # one pass serves the refits and MCC
        for refit in refits:
            refit(latents)
        record = {
            "epoch": p.epoch + 1,
            "train_loss": p.total / self.steps_per_epoch,
            "val_log_likelihood": mean_log_likelihood(self.model, t.x_val, t.u_val),
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": self.seconds(),
        }
        record = distributed.from_main(record)  # one clock, so one stopping decision, on every rank
        if not math.isfinite(record["val_log_likelihood"]):
            self.recover(f"the validation of epoch {p.epoch + 1}")
            return None
        decayed = schedule_end_epoch(self.schedule, record["val_log_likelihood"])
        if t.s is not None:
            record["mcc"] = source_mcc(latents)
        result = p.result
        result.history.append(record)
        if record["val_log_likelihood"] > result.best_val_log_likelihood:
            result.best_val_log_likelihood = record["val_log_likelihood"]
            result.best_epoch = p.epoch + 1
            p.best_state = copy.deepcopy(self.model.state_dict())
        elif self.config.rate_cut > 0 and record["val_log_likelihood"] < result.best_val_log_likelihood - self.collapse_margin():
            self.return_to_best(record, "collapsed")
        p.epoch, p.step, p.order = p.epoch + 1, 0, None
        reason = self.rule.decide(record)
        if reason == "converged" and self.rate_is_high():  # a plateau at a high rate: go on from the best, slower
            if "returned_to_best" not in record:
                self.return_to_best(record, "plateau")
            self.rule.stalled, reason = 0, None
        result.stop_reason = reason or ("converged" if decayed and not self.rule.fixed else "")
        p.stopping = self.rule.state()
        return record


def start_trainer(
    model: Model, data: Dataset, config: TrainConfig, split: tuple[np.ndarray, np.ndarray], checkpoint: Checkpointing | None
) -> Trainer:
    """Seeded tensors, the warm start, optimizer and schedule; resumed from ``checkpoint`` when asked."""
    device = resolve_device(config.device)
    seed_everything(config.seed)
    model.to(device)
    distributed.check_global_batch(config.batch_size)
    tensors = training_tensors(data, split, config.seed, device)
    if config.prior_fit in ("init", "epoch"):
        warm_start(model, tensors.x_fit, tensors.u_train)
    # the linear refit resets its layer's Adam state on its own, so that layer stays apart from the flat buffer
    refit_layer = model.final_linear()
    parameters = step_parameters(model, list(refit_layer.parameters()) if refit_layer is not None else [])
    loss_module = distributed.loss_module(training_loss(model, config))  # compiled when asked, DDP under torchrun
    # fused: one kernel over all parameters, about 3.5x faster than foreach's list ops on the CPU (about 8% of the
    # default step), the same update to rounding (float64: 3e-13 apart after 50 steps)
    optimizer = torch.optim.Adam(parameters.optimized, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    schedule = make_schedule(optimizer, config, len(tensors.train_idx) // config.batch_size)
    generator = torch.Generator(device=device).manual_seed(config.seed)  # data order and dequantisation noise
    progress = Progress(best_state=copy.deepcopy(model.state_dict()))
    identity = run_identity(data, config, {**(checkpoint.context if checkpoint is not None else {}), **distributed.identity()})
    trainer = Trainer(model, loss_module, config, tensors, optimizer, schedule, generator, progress, StoppingRule.from_config(config),
                      parameters, checkpoint, identity)  # fmt: skip
    if checkpoint is not None and checkpoint.resume and checkpoint.path.exists():
        trainer.resume()
    return trainer


def fit(
    model: Model,
    data: Dataset,
    config: TrainConfig,
    progress: bool = True,
    checkpoint: Checkpointing | None = None,
    split: tuple[np.ndarray, np.ndarray] | None = None,
) -> TrainResult:
    """Train ``model`` in place on (standardised) ``data``; load the best weights at the end.

    ``config``'s unset options take the task's defaults (:mod:`iflow.defaults`), the VAE family's
    own for a model trained on a bound, as :func:`iflow.runs.plan_run` fills them.

    ``split``: the (train, validation) rows, by default :func:`split_for_training`.
    A non-finite loss, gradient or validation score rolls training back to the start
    of the epoch and retries with the learning rate times ``LR_DECAY``, at most
    ``MAX_RETRIES`` times, then raises :class:`TrainingDiverged`. With ``checkpoint``,
    the state is saved every ``checkpoint.every`` seconds and at the end,
    SIGINT/SIGTERM save and raise :class:`TrainingInterrupted`, and ``checkpoint.resume``
    continues from a saved state bit for bit (CPU, same thread count).
    """
    config.validate()
    config = train_defaults(data, config, variational=trains_on_a_bound(model))
    trainer = start_trainer(model, data, config, split or split_for_training(data, config), checkpoint)
    refits = refits_for(model, trainer.optimizer, trainer.tensors, config)
    report = ProgressReport(trainer.rule.max_epochs, trainer.progress.epoch, enabled=progress and distributed.is_main())
    with (
        stop_requests(checkpoint is not None) as stops, report, training_precision(model, config.precision),
        denormals_flushed(),  # weights decaying to subnormals slowed training several-fold (runtime.py)
    ):
        while not trainer.progress.result.stop_reason:
            if not trainer.run_steps(stops):
                continue
            record = trainer.end_epoch(refits)
            if record is not None:
                report.epoch(record)
        if checkpoint is not None:
            trainer.save()
    result = trainer.progress.result
    model.load_state_dict(trainer.progress.best_state)
    model.eval()
    result.seconds = trainer.seconds()
    return result
