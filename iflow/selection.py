"""Model selection by held-out likelihood: train several restarts (and priors, ``--prior auto``), keep the best.

The likelihood of a flow is exact, so it is a principled criterion: restarts share
one validation split and the run with the highest validation log-likelihood is kept.
MCC (when true sources are known) is recorded for the report only, never used to choose.
With ``jobs > 1`` the restarts train in that many worker processes at once (one torch
thread each, as set in the train config), so K restarts on K cores take the wall time of one.
The workers end with their parent whatever stops it: an exception, Ctrl-C or SIGTERM in the
parent terminates them, and each worker watches its parent and exits when it is gone (SIGKILL).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import torch
from tqdm import tqdm  # text bars: tqdm.auto warns "IProgress not found" in Jupyter without ipywidgets

from .config import ModelConfig, TrainConfig
from .data.dataset import Dataset
from .defaults import chooses_prior
from .errors import UserError, param
from .models.build import model_entry
from .runs import Run, RunPlan, plan_run, train
from .training import distributed
from .training.trainer import TrainingInterrupted, TrainResult

Trainer = Callable[[Dataset, ModelConfig, TrainConfig, bool], tuple[Run, TrainResult]]

AUTO_PRIOR = "auto"  # --prior auto: one candidate per prior of AUTO_PRIORS, the best held-out likelihood kept
# the label priors of the flows; chosen among by held-out likelihood at the library defaults, the kept prior had the
# best MCC of the three on 21 of 24 data sets and met the recovery target on all 8 (cell, size) pairs measured
# (benchmarks/robustness.md, "Selection without ground truth")
AUTO_PRIORS = ("gauss", "student-t", "shape")


def plan_candidates(data: Dataset, model_config: ModelConfig, train_config: TrainConfig) -> tuple[RunPlan, tuple[str, ...]]:
    """The run planned as :func:`iflow.runs.plan_run` does, and the priors to choose among: for
    ``--prior auto`` every one of :data:`AUTO_PRIORS` (each planned, so that each fails here, before
    any training) and the plan of the first; otherwise ``()``. A config naming no prior gets
    :func:`default_prior`'s choice where every candidate can be planned, else one run with the
    Gaussian (so an option that rules out a candidate, such as ``--linear-fit epoch``, keeps it)."""
    if model_config.prior is None and default_prior(data, model_config, train_config) == AUTO_PRIOR:
        try:
            return plan_candidates(data, replace(model_config, prior=AUTO_PRIOR), train_config)
        except UserError:
            pass  # planned again below as the one Gaussian run, which raises its own error if it has one
    if model_config.prior != AUTO_PRIOR:
        return plan_run(data, model_config, train_config), ()
    entry = model_entry(model_config.model)
    if entry.variational or "prior" not in entry.options:
        raise UserError(f"{param('prior')} auto chooses among the flows' label priors ({', '.join(AUTO_PRIORS)}); "
                        f"{param('model')} {model_config.model} cannot take them all; name one {param('prior')}")  # fmt: skip
    plans = []
    for prior in AUTO_PRIORS:
        try:
            plans.append(plan_run(data, replace(model_config, prior=prior), train_config))
        except UserError as error:
            raise UserError(f"{param('prior')} auto tries {prior}: {error}") from error
    return plans[0], AUTO_PRIORS


def default_prior(data: Dataset, model_config: ModelConfig, train_config: TrainConfig) -> str | None:
    """:data:`AUTO_PRIOR` where the task chooses the prior (:func:`iflow.defaults.chooses_prior`) of a
    flow that takes the label priors, outside torchrun (one model for all ranks); else None (the task's one prior)."""
    entry = model_entry(model_config.model)
    takes_label_priors = not entry.variational and "prior" in entry.options
    chosen = takes_label_priors and not distributed.launched() and chooses_prior(data, train_config)
    return AUTO_PRIOR if chosen else None


@dataclass
class Restart:
    """One candidate: its training seed, prior, validation log-likelihood (nats) and, if known, MCC."""

    seed: int
    prior: str
    val_log_likelihood: float
    mcc: float | None
    seconds: float
    chosen: bool = False

    def as_dict(self) -> dict:
        """The result fields, without ``seconds`` (timings are kept apart from results)."""
        return {k: v for k, v in asdict(self).items() if k != "seconds"}


def train_with_restarts(
    data: Dataset,
    model_config: ModelConfig,
    train_config: TrainConfig,
    restarts: int,
    progress: bool = True,
    trainer: Trainer = train,
    jobs: int = 1,
    priors: tuple[str, ...] = (),
) -> tuple[Run, TrainResult, list[Restart]]:
    """Train ``restarts`` models (seeds ``seed, seed + 1, ...``) on one split, for each of
    ``priors`` (none: ``model_config``'s prior alone); keep the best held-out likelihood.

    ``jobs``: how many candidates train at once, each in its own process (``trainer`` must
    then be a module-level function). Returns the kept run, its training result and one
    :class:`Restart` per candidate, by prior, then seed.
    """
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    split_seed = train_config.seed if train_config.split_seed is None else train_config.split_seed
    models = [replace(model_config, prior=prior) for prior in priors] or [model_config]
    plans = [(model, replace(train_config, seed=train_config.seed + k, split_seed=split_seed))
             for model in models for k in range(restarts)]  # fmt: skip
    if jobs == 1:
        outcomes = [trainer(data, model, config, progress) for model, config in plans]
    else:
        outcomes = list(_train_in_processes(data, plans, progress, trainer, jobs))
    candidates = []
    for (model, config), (_, result) in zip(plans, outcomes, strict=True):
        kept_epoch = result.history[result.best_epoch - 1] if result.history else {}
        candidates.append(Restart(config.seed, model.prior, result.best_val_log_likelihood, kept_epoch.get("mcc"),
                                  result.seconds))  # fmt: skip
    best = max(range(len(plans)), key=lambda k: _score(candidates[k].val_log_likelihood))  # first of equals
    candidates[best].chosen = True
    return outcomes[best][0], outcomes[best][1], candidates


def _train_in_processes(
    data: Dataset, plans: list[tuple[ModelConfig, TrainConfig]], progress: bool, trainer: Trainer, jobs: int
) -> Iterator[tuple[Run, TrainResult]]:
    """The trainer's outcomes in the order of ``plans``, trained ``jobs`` at a time.

    Workers are spawned, not forked (a forked torch may hang on its thread pool), and train
    without their own progress bars; one bar counts finished restarts.
    """
    context = multiprocessing.get_context("spawn")
    others = set(multiprocessing.active_children())
    workers = min(jobs, len(plans))
    with sigterm_interrupts(), ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=exit_with_parent, initargs=(os.getpid(),)
    ) as pool:  # fmt: skip
        try:
            futures = [pool.submit(_train_worker, trainer, data, model, config) for model, config in plans]
            with tqdm(total=len(futures), desc="restarts", mininterval=1.0, disable=None if progress else True) as bar:
                for future in futures:
                    yield future.result()
                    bar.update()
        except BaseException:
            for worker in set(multiprocessing.active_children()) - others:
                worker.terminate()  # the pool would otherwise wait for restarts nobody will use
            pool.shutdown(wait=False, cancel_futures=True)
            raise


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """In the main thread: SIGTERM raises :class:`TrainingInterrupted`, so the workers are ended, not orphaned."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise TrainingInterrupted("SIGTERM: restarts stopped and their worker processes ended; nothing was saved")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_with_parent(parent: int, poll: float = 0.2) -> None:
    """In a worker: a daemon thread ends the process once ``parent`` is gone (even killed by SIGKILL)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _train_worker(trainer: Trainer, data: Dataset, model_config: ModelConfig, config: TrainConfig) -> tuple[Run, TrainResult]:
    torch.set_num_threads(config.threads)
    return trainer(data, model_config, config, False)


def _score(value: float) -> float:
    """Validation log-likelihood as a ranking key; a diverged (nan) run ranks last."""
    return value if math.isfinite(value) else -math.inf
