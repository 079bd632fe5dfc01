"""Orchestration: train a planned run (with restarts), evaluate it, save its directory with figures.

This is the layer the command line, the demo, the benchmarks and the notebooks call; it
takes configs and data, never command-line arguments. Data flow one way:
``data -> plan_run -> train (restarts) -> evaluate -> save_run + figures``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import ModelConfig, TrainConfig
from .data.dataset import Dataset
from .files import save_json
from .protocols import NO_LIKELIHOOD
from .runs import TIMING_FILE, Run, RunPlan, encode_dataset, evaluate, save_run, train_planned
from .selection import Restart, plan_candidates, train_with_restarts
from .splits import subset
from .training import distributed
from .training.checkpoint import Checkpointing
from .training.trainer import TrainResult


@dataclass
class Outcome:
    """A saved run: the run, its training result, its metrics (``metrics["test"]`` on a test set),
    the candidate restarts and the wall ``seconds`` (in ``timing.json``, apart from the results)."""

    run: Run
    result: TrainResult
    metrics: dict
    restarts: list[Restart] = field(default_factory=list)
    seconds: float = 0.0


def default_jobs(restarts: int) -> int:
    """Restarts trained at once by default: one per CPU, at most ``restarts``."""
    return min(restarts, os.cpu_count() or 1)


def train_restarts(
    plan: RunPlan, restarts: int, jobs: int | None, progress: bool, priors: tuple[str, ...] = ()
) -> tuple[Run, TrainResult, list[Restart], float]:
    """The kept run of ``restarts`` candidates for each of ``priors`` (short-lived, not checkpointed),
    and the wall time of all of them (parallel or not)."""
    started = time.perf_counter()
    count = restarts * max(1, len(priors))
    run, result, candidates = train_with_restarts(
        plan.data, plan.run.model_config, plan.run.train_config, restarts, progress,
        jobs=jobs or default_jobs(count), priors=priors,
    )  # fmt: skip
    return run, result, candidates, time.perf_counter() - started


def train_as_cli(
    data: Dataset, model_config: ModelConfig, train_config: TrainConfig, progress: bool = True, jobs: int | None = 1
) -> tuple[Run, TrainResult]:
    """Plan and train one model as ``iflow train`` does without restarts: the prior chosen among the
    label priors where the config or its task asks (:func:`iflow.selection.plan_candidates`), the
    candidates ``jobs`` at a time (1: one after another in this process; None: one process per CPU)."""
    plan, priors = plan_candidates(data, model_config, train_config)
    if not priors:
        return train_planned(plan, progress)
    run, result, _, _ = train_restarts(plan, 1, jobs, progress, priors)
    return run, result


def save_figures(run: Run, data: Dataset, result: TrainResult, restarts: list[Restart], directory: Path) -> None:
    """The run's standard figures in ``directory/figures``: training curves, and as the data allow
    restarts, the 2-D density, class samples of images, recovered against true sources."""
    from .figures import (
        save_class_samples_figure,
        save_density_figure,
        save_restarts_figure,
        save_sources_figure,
        save_training_figure,
    )  # fmt: skip

    figures = directory / "figures"
    save_training_figure(result.history, figures / "training.png")
    if restarts and data.s is not None:
        save_restarts_figure([r.as_dict() for r in restarts], figures / "restarts.png")
    if data.dim == 2 and run.model_config.aux.kind == "labels" and run.model.likelihood != NO_LIKELIHOOD:  # a density per label
        save_density_figure(run, data, figures / "density.png")
    if data.image_shape is not None:
        save_class_samples_figure(run, figures / "samples.png")
    if data.s is not None:
        save_sources_figure(data.s, encode_dataset(run, data), figures / "sources.png")


def train_and_evaluate(
    plan: RunPlan,
    restarts: int = 1,
    jobs: int | None = None,
    test: Dataset | None = None,
    checkpoint: Checkpointing | None = None,
    progress: bool = True,
    priors: tuple[str, ...] = (),
) -> Outcome:
    """Train the planned run (best of ``restarts``, and of ``priors`` when given: the plan's prior
    replaced by each, as ``--prior auto`` does) and evaluate it on its data (and on ``test``).

    ``Outcome.seconds`` is the wall time of training (of all restarts, parallel or not); it is kept
    out of ``metrics``, so identical runs give identical metrics.
    """
    if restarts > 1 or priors:
        run, result, candidates, seconds = train_restarts(plan, restarts, jobs, progress, priors)
    else:
        (run, result), candidates = train_planned(plan, progress, checkpoint), []
        seconds = result.seconds
    metrics = evaluate(run, plan.data)
    metrics.update(split="all", best_epoch=result.best_epoch, data=plan.data.source)
    metrics.update(epochs_trained=len(result.history), stop_reason=result.stop_reason,
                   returns_to_best=result.returns_to_best)
    for name, rows in zip(("train", "val"), plan.split, strict=True):  # the rows trained on and the held-out rows, apart
        metrics[name] = evaluate(run, subset(plan.data, rows, f"{name} rows"))
    if candidates:
        metrics["restarts"] = [c.as_dict() for c in candidates]
    if test is not None:
        metrics["test"] = evaluate(run, test)
    return Outcome(run, result, metrics, candidates, seconds)


def train_to_directory(plan: RunPlan, directory: Path, checkpoint: Checkpointing | None = None, **options: object) -> Outcome:
    """:func:`train_and_evaluate`, then save the run with its figures (and its wall times in
    ``timing.json``) into ``directory`` and delete the resume ``checkpoint`` once saved.
    ``options``: those of :func:`train_and_evaluate`. Under torchrun only rank 0 writes."""
    outcome = train_and_evaluate(plan, checkpoint=checkpoint, **options)
    if not distributed.is_main():
        return outcome
    save_run(outcome.run, directory, outcome.result, outcome.metrics)
    timing = {"seconds": outcome.seconds}
    if outcome.restarts:
        timing["restarts"] = [c.seconds for c in outcome.restarts]
    save_json(directory / TIMING_FILE, timing)
    save_figures(outcome.run, plan.data, outcome.result, outcome.restarts, directory)
    if checkpoint is not None:
        checkpoint.path.unlink(missing_ok=True)
    return outcome


def train_and_save(
    data: Dataset,
    directory: Path,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    **options: object,
) -> Outcome:
    """:func:`iflow.selection.plan_candidates` then :func:`train_to_directory`, with the default configs
    where none is given (and the prior chosen where the configs or their task ask)."""
    plan, priors = plan_candidates(data, model_config or ModelConfig(), train_config or TrainConfig())
    return train_to_directory(plan, Path(directory), priors=priors, **options)
