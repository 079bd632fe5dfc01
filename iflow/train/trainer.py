"""One trainer for every model: Adam, a learning-rate schedule, a validation split scored
by log-likelihood, the best checkpoint kept, MCC on the full data when sources are known.

Reliability: non-finite losses roll back and retry with a smaller learning rate,
checkpoints make killed runs resumable bit for bit, SIGINT/SIGTERM stop cleanly."""

from __future__ import annotations

import copy
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm  # text bars: tqdm.auto warns "IProgress not found" in Jupyter without ipywidgets

from .checkpoint import (
    Checkpointing,
    all_finite,
    data_fingerprint,
    load_checkpoint,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from ..config import TrainConfig
from ..data.dataset import Dataset, split_indices
from ..data.dequantization import dequantize
from ..errors import UserError
from ..metrics import mcc
from .unmixing import final_linear_layer, refit_final_linear

EVAL_BATCH = 8192
LR_DECAY = 0.1  # learning-rate factor after each divergence
MAX_RETRIES = 3  # learning-rate reductions before giving up

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; a clear error when CUDA is asked for but absent."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown --device {name!r}; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for, but CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported --device {name!r}; use cpu or cuda")
    return device


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def as_tensors(data: Dataset, device: torch.device) -> tuple[Tensor, Tensor]:
    return torch.as_tensor(data.x, device=device), torch.as_tensor(data.u, device=device)


@torch.no_grad()
def batched(fn: Callable[..., Tensor], *tensors: Tensor, size: int = EVAL_BATCH) -> Tensor:
    """Apply ``fn`` to row blocks of ``tensors`` and concatenate (bounded memory)."""
    n = tensors[0].shape[0]
    return torch.cat([fn(*(t[i : i + size] for t in tensors)) for i in range(0, n, size)])


def mean_log_likelihood(model: nn.Module, x: Tensor, u: Tensor) -> float:
    """Mean log p(x | u) in nats (exact for flows, a bound for VAEs)."""
    model.eval()
    return float(batched(model.log_prob, x, u).mean())


def encode(model: nn.Module, x: Tensor, u: Tensor) -> Tensor:
    model.eval()
    return batched(model.encode, x, u)


@dataclass
class TrainResult:
    """``history``: one dict per epoch; ``best_epoch`` by validation log-likelihood."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_log_likelihood: float = -math.inf
    seconds: float = 0.0


def refit_prior(model: nn.Module, x: Tensor, u: Tensor, z: Tensor | None = None) -> bool:
    """Closed-form M-step of a label prior at the current model (False when the model has none).

    Sets each segment's natural parameters to the maximum-likelihood values for the
    current latents z = g(x) of a flow (pass ``z`` when already computed), or, for a VAE,
    to the maximisers of the ELBO given the posterior's expected statistics E_q[T(z)]
    (``z`` is then not used): a data-dependent start, and exact ascent on the prior's block
    (for a VAE whose posterior contains the prior, ``product_posterior``, an EM step instead).
    """
    if not has_label_prior(model, u):
        return False
    if hasattr(model, "expected_prior_stats"):  # a VAE: E_q[T(z)] under its posterior, not z itself
        model.eval()
        model.prior.fit_label_stats(batched(model.expected_prior_stats, x, u), u)
    else:
        model.prior.fit_labels(encode(model, x, u) if z is None else z, u)
    return True


def has_label_prior(model: nn.Module, u: Tensor) -> bool:
    return getattr(getattr(model, "prior", None), "n_labels", None) is not None and u.dtype == torch.long


def uses_linear_fit(model: nn.Module, config: TrainConfig) -> bool:
    """Whether training refits the flow's last linear layer each epoch (``--linear-fit``)."""
    eligible = final_linear_layer(model) is not None
    if config.linear_fit == "epoch" and not eligible:
        raise UserError(
            "--linear-fit epoch needs a flow that ends in a linear layer (--flow spline or mlp) and a "
            "Gaussian prior on labels (--prior gauss or gauss-var)"
        )
    return eligible and config.linear_fit != "none" and config.prior_fit == "epoch"


def refit_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, z: Tensor, u: Tensor, linear: bool
) -> Tensor | None:
    """The per-epoch block updates on training latents ``z``: the last linear layer (if ``linear``),
    then the prior's M-step. Returns the matrix M the latents went through (z -> z M^T), or None."""
    applied = refit_final_linear(model, z, u) if linear else None
    if applied is not None:
        for parameter in final_linear_layer(model).parameters():
            optimizer.state.pop(parameter, None)  # Adam's moments belong to the old factorisation
        z = z @ applied.t()
    if has_label_prior(model, u):
        model.prior.fit_labels(z, u)
    return applied


def warm_start(model: nn.Module, x: Tensor, u: Tensor) -> None:
    """Data-dependent start: one training-mode pass (actnorm inits), then the prior's M-step."""
    every = max(1, x.shape[0] // EVAL_BATCH)  # a strided subset spans all segments
    model.train()
    with torch.no_grad():
        model.log_prob(x[::every], u[::every])
    refit_prior(model, x, u)


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, steps: int):
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=config.lr * 0.01)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def scale_learning_rate(optimizer: torch.optim.Optimizer, schedule, factor: float) -> None:
    """Multiply the learning rate, and the whole schedule ahead, by ``factor``."""
    for group in optimizer.param_groups:
        group["lr"] *= factor
        if "initial_lr" in group:
            group["initial_lr"] *= factor
    schedule.base_lrs = [lr * factor for lr in schedule.base_lrs]
    if hasattr(schedule, "eta_min"):
        schedule.eta_min *= factor
    schedule._last_lr = [group["lr"] for group in optimizer.param_groups]


def split_for_training(data: Dataset, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """The seeded (train, validation) rows; :class:`UserError` when they cannot fill a batch."""
    split_seed = config.seed if config.split_seed is None else config.split_seed
    train_idx, val_idx = split_indices(len(data), config.val_fraction, split_seed)
    if len(train_idx) < config.batch_size:
        raise UserError(
            f"{data.source}: {len(train_idx)} training rows is fewer than one batch ({config.batch_size}); "
            "lower --batch-size or give more data"
        )
    if len(val_idx) == 0:
        raise UserError(
            f"{data.source}: {len(data)} rows leave no validation rows; raise --val-fraction or give more data"
        )
    return train_idx, val_idx


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
    result: TrainResult = field(default_factory=TrainResult)


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


def run_identity(data: Dataset, config: TrainConfig, context: dict) -> dict:
    """What a checkpoint must match to be resumed: the options that change results, and the data."""
    options = {k: v for k, v in asdict(config).items() if k not in ("device", "threads")}
    return {"config": {**options, **context}, "data": data_fingerprint(data.x, data.u)}


def check_same_run(saved: dict, identity: dict, path: Path) -> None:
    if saved.get("identity", {}).get("data") != identity["data"]:
        raise UserError(f"{path}: the checkpoint was made on different data; pass --overwrite to start again")
    old = saved.get("identity", {}).get("config", {})
    keys = sorted(set(old) | set(identity["config"]))
    changed = [
        f"{k} {old.get(k)!r} -> {identity['config'].get(k)!r}" for k in keys if old.get(k) != identity["config"].get(k)
    ]
    if changed:
        raise UserError(
            f"{path}: options differ from the checkpointed run ({', '.join(changed)}); pass --overwrite to start again"
        )


@dataclass
class Trainer:
    """The mutable state of one :func:`fit` call, with capture/restore for checkpoints and rollback."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    progress: Progress
    clock_start: float = field(default_factory=time.perf_counter)

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
        self.clock_start = time.perf_counter()


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, u: Tensor, clip: float) -> float | None:
    """One optimizer step; ``None`` (and no step) when the loss or the gradient norm is not finite."""
    loss = model.loss(x, u)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = nn.utils.clip_grad_norm_(model.parameters(), clip, foreach=True)
    value, norm_value = torch.stack([loss.detach(), norm.to(loss.dtype)]).tolist()
    if not (math.isfinite(value) and math.isfinite(norm_value)):
        return None
    optimizer.step()
    return value


def fit(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    progress: bool = True,
    checkpoint: Checkpointing | None = None,
) -> TrainResult:
    """Train ``model`` in place on (standardised) ``data``; load the best weights at the end.

    The model provides ``loss(x, u)`` (minimised), ``log_prob(x, u)`` (validation score)
    and ``encode(x, u)`` (latents, for MCC when ``data.s`` is known).

    A non-finite loss, gradient or validation score rolls training back to the
    last good state and retries with the learning rate times ``LR_DECAY``, at
    most ``MAX_RETRIES`` times, then raises :class:`TrainingDiverged`. With
    ``checkpoint``, the state is saved every ``checkpoint.every`` seconds and at
    the end, SIGINT/SIGTERM save and raise :class:`TrainingInterrupted`, and
    ``checkpoint.resume`` continues from a saved state bit for bit (CPU, same
    thread count).
    """
    config.validate()
    device = resolve_device(config.device)
    seed_everything(config.seed)
    train_idx, val_idx = split_for_training(data, config)
    model.to(device)
    x, u = as_tensors(data, device)
    x_train, u_train, x_val, u_val = x[train_idx], u[train_idx], x[val_idx], u[val_idx]
    width = data.dequantize  # discrete data: fresh noise per batch, one fixed draw for validation
    if np.any(width):
        x_val = dequantize(x_val, width, torch.Generator().manual_seed(config.seed + 1))
    # the prior's closed-form fit sees continuous x: discrete data get one fixed dequantisation draw
    x_fit = dequantize(x_train, width, torch.Generator().manual_seed(config.seed + 2)) if np.any(width) else x_train
    if config.prior_fit in ("init", "epoch"):
        warm_start(model, x_fit, u_train)
    linear_fit = uses_linear_fit(model, config)
    # foreach: one fused update over all parameters, not a Python loop (1.12x per step on the CPU, same values)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, foreach=True)
    steps_per_epoch = len(train_idx) // config.batch_size
    schedule = make_schedule(optimizer, config, config.epochs * steps_per_epoch)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    trainer = Trainer(model, optimizer, schedule, generator, Progress(best_state=copy.deepcopy(model.state_dict())))
    identity = run_identity(data, config, checkpoint.context if checkpoint is not None else {})
    if checkpoint is not None and checkpoint.resume and Path(checkpoint.path).exists():
        saved = load_checkpoint(checkpoint.path)
        check_same_run(saved, identity, checkpoint.path)
        try:
            trainer.restore(saved)
        except (RuntimeError, KeyError, ValueError) as exc:  # e.g. a checkpoint of a differently shaped model
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{checkpoint.path}: the checkpoint does not fit this model ({reason})") from None
    good = trainer.capture()
    last_save = time.monotonic()

    def recover(where: str) -> dict:
        """Roll back to ``good`` with a smaller learning rate; return the new good state."""
        retries = trainer.progress.retries + 1
        if retries > MAX_RETRIES:
            lr = optimizer.param_groups[0]["lr"]
            raise TrainingDiverged(
                f"training diverged: non-finite loss or gradient at {where}, still after {MAX_RETRIES} "
                f"learning-rate reductions (to {lr:.3g}); lower --lr (was {config.lr:g}) or check the data"
            )
        trainer.restore(good)
        trainer.progress.retries = retries
        scale_learning_rate(optimizer, schedule, LR_DECAY)
        log.warning(
            "iflow: warning: non-finite loss or gradient at %s; rolled back, learning rate now %.3g (retry %d of %d)",
            where, optimizer.param_groups[0]["lr"], retries, MAX_RETRIES,
        )  # fmt: skip
        return trainer.capture()

    def save() -> dict | None:
        """Write a checkpoint of the current (finite) state and return it, or None if not finite."""
        state = trainer.capture()
        if not all_finite(state["model"]):
            return None
        save_checkpoint(checkpoint.path, {**state, "identity": identity})
        return state

    bar = tqdm(total=config.epochs, initial=trainer.progress.epoch, desc="train", mininterval=1.0,
               disable=None if progress else True)  # fmt: skip
    with stop_requests(checkpoint is not None) as stops:
        try:
            while trainer.progress.epoch < config.epochs:
                p = trainer.progress
                if p.order is None:
                    p.order, p.total = torch.randperm(len(train_idx), generator=generator), 0.0
                    good = trainer.capture()
                model.train()
                batch_order = p.order.to(device)
                while p.step < steps_per_epoch:
                    batch = batch_order[p.step * config.batch_size : (p.step + 1) * config.batch_size]
                    x_batch = dequantize(x_train[batch], width, generator) if np.any(width) else x_train[batch]
                    value = train_step(model, optimizer, x_batch, u_train[batch], config.clip_grad)
                    if value is None:
                        good = recover(f"epoch {p.epoch + 1}, step {p.step + 1}")
                        break
                    schedule.step()
                    p.total += value
                    p.step += 1
                    if checkpoint is not None and (stops or time.monotonic() - last_save >= checkpoint.every):
                        saved_state = save()
                        good, last_save = saved_state or good, time.monotonic()
                        if stops:
                            raise TrainingInterrupted(f"checkpoint saved to {checkpoint.path}; continue with --resume")
                if trainer.progress is not p or p.step < steps_per_epoch:
                    continue  # rolled back
                # one pass over all rows serves MCC and, on continuous data, the refits (which change
                # the latents only through the last linear layer, by a known matrix)
                latents = encode(model, x, u) if data.s is not None else None
                if config.prior_fit == "epoch" and hasattr(model, "expected_prior_stats"):
                    refit_prior(model, x_fit, u_train)  # a VAE: the M-step reads its posteriors, not z
                elif config.prior_fit == "epoch":
                    shared = latents is not None and x_fit is x_train
                    z_fit = latents[train_idx] if shared else encode(model, x_fit, u_train)
                    applied = refit_epoch(model, optimizer, z_fit, u_train, linear_fit)
                    if applied is not None and latents is not None:
                        latents = latents @ applied.t()
                record = {
                    "epoch": p.epoch + 1,
                    "train_loss": p.total / steps_per_epoch,
                    "val_log_likelihood": mean_log_likelihood(model, x_val, u_val),
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds": trainer.seconds(),
                }
                if not math.isfinite(record["val_log_likelihood"]):
                    good = recover(f"the validation of epoch {p.epoch + 1}")
                    continue
                if latents is not None:
                    record["mcc"] = mcc(latents.cpu().numpy(), data.s).mcc
                result = p.result
                result.history.append(record)
                if record["val_log_likelihood"] > result.best_val_log_likelihood:
                    result.best_val_log_likelihood = record["val_log_likelihood"]
                    result.best_epoch = p.epoch + 1
                    p.best_state = copy.deepcopy(model.state_dict())
                p.epoch, p.step, p.order = p.epoch + 1, 0, None
                postfix = {"loss": f"{record['train_loss']:.3f}", "val_ll": f"{record['val_log_likelihood']:.3f}"}
                if "mcc" in record:
                    postfix["mcc"] = f"{record['mcc']:.3f}"
                bar.set_postfix(postfix, refresh=False)
                bar.update(1)
            if checkpoint is not None:
                save()
        finally:
            bar.close()
    result = trainer.progress.result
    model.load_state_dict(trainer.progress.best_state)
    model.eval()
    result.seconds = trainer.seconds()
    return result
