"""Model selection by held-out likelihood: train several restarts, keep the best.

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
from .runs import Run, train
from .training.trainer import TrainingInterrupted, TrainResult

Trainer = Callable[[Dataset, ModelConfig, TrainConfig, bool], tuple[Run, TrainResult]]


@dataclass
class Restart:
    """One candidate: its training seed, validation log-likelihood (nats) and, if known, MCC."""

    seed: int
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
) -> tuple[Run, TrainResult, list[Restart]]:
    """Train ``restarts`` models (seeds ``seed, seed + 1, ...``) on one split; keep the best.

    ``jobs``: how many restarts train at once, each in its own process (``trainer`` must
    then be a module-level function). Returns the kept run, its training result and one
    :class:`Restart` per candidate, in seed order.
    """
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    split_seed = train_config.seed if train_config.split_seed is None else train_config.split_seed
    configs = [replace(train_config, seed=train_config.seed + k, split_seed=split_seed) for k in range(restarts)]
    if jobs == 1:
        outcomes = [trainer(data, model_config, config, progress) for config in configs]
    else:
        outcomes = list(_train_in_processes(data, model_config, configs, progress, trainer, jobs))
    candidates = []
    for config, (_, result) in zip(configs, outcomes, strict=False):
        kept_epoch = result.history[result.best_epoch - 1] if result.history else {}
        candidates.append(Restart(config.seed, result.best_val_log_likelihood, kept_epoch.get("mcc"), result.seconds))
    best = max(range(restarts), key=lambda k: _score(candidates[k].val_log_likelihood))  # first of equals
    candidates[best].chosen = True
    return outcomes[best][0], outcomes[best][1], candidates


def _train_in_processes(
    data: Dataset, model_config: ModelConfig, configs: list[TrainConfig], progress: bool, trainer: Trainer, jobs: int
) -> Iterator[tuple[Run, TrainResult]]:
    """The trainer's outcomes in the order of ``configs``, trained ``jobs`` at a time.

    Workers are spawned, not forked (a forked torch may hang on its thread pool), and train
    without their own progress bars; one bar counts finished restarts.
    """
    context = multiprocessing.get_context("spawn")
    others = set(multiprocessing.active_children())
    workers = min(jobs, len(configs))
    with sigterm_interrupts(), ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=exit_with_parent, initargs=(os.getpid(),)
    ) as pool:  # fmt: skip
        try:
            futures = [pool.submit(_train_worker, trainer, data, model_config, config) for config in configs]
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
