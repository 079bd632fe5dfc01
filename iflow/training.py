"""One trainer for every model: Adam, a learning-rate schedule, a validation split scored
by log-likelihood, the best checkpoint kept, MCC on the full data when sources are known."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .config import TrainConfig
from .data import Dataset, split_indices
from .errors import UserError
from .metrics import mcc

EVAL_BATCH = 8192


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


def refit_prior(model: nn.Module, x: Tensor, u: Tensor) -> bool:
    """Closed-form M-step of a label prior at the current flow (False when the model has none).

    Sets each segment's natural parameters to the maximum-likelihood values for the
    current latents z = g(x): a data-dependent start, and exact ascent on the prior's block.
    """
    prior = getattr(model, "prior", None)
    if getattr(prior, "n_labels", None) is None or u.dtype != torch.long:
        return False
    prior.fit_labels(encode(model, x, u), u)
    return True


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


def fit(model: nn.Module, data: Dataset, config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train ``model`` in place on (standardised) ``data``; load the best weights at the end.

    The model provides ``loss(x, u)`` (minimised), ``log_prob(x, u)`` (validation score)
    and ``encode(x, u)`` (latents, for MCC when ``data.s`` is known).
    """
    config.validate()
    device = resolve_device(config.device)
    seed_everything(config.seed)
    split_seed = config.seed if config.split_seed is None else config.split_seed
    train_idx, val_idx = split_indices(len(data), config.val_fraction, split_seed)
    if len(train_idx) < config.batch_size:
        raise UserError(
            f"{data.source}: {len(train_idx)} training rows is fewer than one batch ({config.batch_size}); "
            "lower --batch-size or give more data"
        )
    model.to(device)
    x, u = as_tensors(data, device)
    x_train, u_train, x_val, u_val = x[train_idx], u[train_idx], x[val_idx], u[val_idx]
    if config.prior_fit in ("init", "epoch"):
        warm_start(model, x_train, u_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = len(train_idx) // config.batch_size
    schedule = make_schedule(optimizer, config, config.epochs * steps_per_epoch)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)

    result = TrainResult()
    best_state = copy.deepcopy(model.state_dict())
    start = time.perf_counter()
    bar = tqdm(range(config.epochs), desc="train", mininterval=1.0, disable=None if progress else True)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(train_idx), generator=generator).to(device)
        total = 0.0
        for step in range(steps_per_epoch):
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            loss = model.loss(x_train[batch], u_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
            optimizer.step()
            schedule.step()
            total += loss.item()
        if config.prior_fit == "epoch":
            refit_prior(model, x_train, u_train)
        record = {
            "epoch": epoch + 1,
            "train_loss": total / steps_per_epoch,
            "val_log_likelihood": mean_log_likelihood(model, x_val, u_val),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - start,
        }
        if data.s is not None:
            record["mcc"] = mcc(encode(model, x, u).cpu().numpy(), data.s).mcc
        result.history.append(record)
        if record["val_log_likelihood"] > result.best_val_log_likelihood:
            result.best_val_log_likelihood = record["val_log_likelihood"]
            result.best_epoch = epoch + 1
            best_state = copy.deepcopy(model.state_dict())
        postfix = {"loss": f"{record['train_loss']:.3f}", "val_ll": f"{record['val_log_likelihood']:.3f}"}
        if "mcc" in record:
            postfix["mcc"] = f"{record['mcc']:.3f}"
        bar.set_postfix(postfix, refresh=False)
    model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - start
    return result
