"""Run an experiment's grid of (setting, seed) rows, locally with joblib or on SLURM with submitit.

Each row is trained by the experiment module's ``run(setting, seed)`` in a worker with one
torch thread and written atomically to ``rows/`` as soon as it finishes; a rerun skips the
rows already there, so a crashed or preempted run resumes where it stopped. Every row
seeds itself, so the results do not depend on the launcher or the number of jobs. At the
end: ``grid.json`` (the resolved settings and seeds), ``results.csv``, the module's
``report`` (figure, ``table.md``) and ``timing.json``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

from ..errors import UserError, param
from ..files import save_json
from .report import write_csv

LAUNCHERS = ("local", "slurm")
ROWS = "rows"


@dataclass(frozen=True)
class SlurmOptions:
    """What a SLURM job asks for; ``cluster="local"`` runs the same jobs with submitit's local executor."""

    partition: str | None = None
    minutes: int = 60
    mem_gb: float = 4.0
    gpus: int = 0
    array_parallelism: int = 64
    cluster: str = "slurm"


@dataclass(frozen=True)
class Task:
    """One row to compute: the module that runs it, its setting and seed, and where it is written."""

    module: str
    setting: dict
    seed: int
    path: Path


def row_name(setting: dict, seed: int) -> str:
    """A file name that identifies (setting, seed): the model, a hash of the setting, the seed."""
    digest = hashlib.sha1(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:12]
    return f"{setting['model']}-{digest}-seed{seed}.json"


def tasks_for(module: str, settings: list[dict], seeds: list[int], out: Path) -> list[Task]:
    return [Task(module, s, seed, out / ROWS / row_name(s, seed)) for s in settings for seed in seeds]


def run_task(task: Task) -> dict:
    """Compute one row with one torch thread and write it atomically; returns the row."""
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    result = importlib.import_module(task.module).run(task.setting, task.seed)
    row = {"setting": task.setting, "seed": task.seed, **result, "seconds": time.perf_counter() - started}
    save_json(task.path, row)
    return row


def run_local(tasks: list[Task], jobs: int) -> None:
    """``jobs`` joblib (loky) worker processes; one job runs in this process."""
    if jobs == 1:
        for task in tasks:
            run_task(task)
        return
    from joblib import Parallel, delayed

    Parallel(n_jobs=jobs)(delayed(run_task)(task) for task in tasks)


def run_slurm(tasks: list[Task], options: SlurmOptions, folder: Path) -> None:
    """One job array through submitit (one CPU per task); waits for every task, re-raises the first error."""
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster=options.cluster)
    parameters = {"timeout_min": options.minutes, "mem_gb": options.mem_gb, "cpus_per_task": 1,
                  "slurm_array_parallelism": options.array_parallelism}  # fmt: skip
    if options.gpus:
        parameters["gpus_per_node"] = options.gpus
    if options.partition:
        parameters["slurm_partition"] = options.partition
    executor.update_parameters(**parameters)
    jobs = executor.map_array(run_task, tasks)
    for job in jobs:
        job.result()


def load_rows(tasks: list[Task]) -> list[dict]:
    return [json.loads(task.path.read_text()) for task in tasks]


def of_models(settings: list[dict], models: list[str]) -> list[dict]:
    """The settings whose model is one of ``models``; :class:`UserError` for a model the grid does not have."""
    present = list(dict.fromkeys(s["model"] for s in settings))
    unknown = [m for m in models if m not in present]
    if unknown:
        raise UserError(f"{param('models')} {','.join(unknown)}: not in this experiment, whose models are {', '.join(present)}")
    return [s for s in settings if s["model"] in models]


def seeds_for(module: ModuleType, seeds: int | list[int] | None, quick: bool) -> list[int]:
    """Seeds 1..K: K given, else the module's ``SEEDS`` (1 with ``quick``)."""
    if isinstance(seeds, list):
        return seeds
    count = seeds or (1 if quick else getattr(module, "SEEDS", 5))
    return list(range(1, count + 1))


def run_experiment(
    module: ModuleType,
    out: Path,
    seeds: int | list[int] | None = None,
    quick: bool = False,
    jobs: int = 1,
    launcher: str = "local",
    slurm: SlurmOptions | None = None,
    settings: list[dict] | None = None,
    models: list[str] | None = None,
) -> list[dict]:
    """Every (setting, seed) row of ``module`` (``settings``: instead of its own; ``models``: only the
    settings of these models), then its reports in ``out``."""
    if launcher not in LAUNCHERS:
        raise UserError(f"unknown launcher {launcher!r}; choose from {LAUNCHERS}")
    if jobs < 1:
        raise UserError(f"jobs must be >= 1, got {jobs}")
    out = Path(out)
    settings = module.settings(quick) if settings is None else settings
    if models is not None:
        settings = of_models(settings, models)
    seeds = seeds_for(module, seeds, quick)
    tasks = tasks_for(module.__name__, settings, seeds, out)
    grid = {"experiment": module.__name__, "quick": quick, "seeds": seeds, "settings": settings, "models": models}
    save_json(out / "grid.json", grid)
    todo = [task for task in tasks if not task.path.is_file()]
    started = time.perf_counter()
    if launcher == "local":
        run_local(todo, jobs)
    else:
        run_slurm(todo, slurm or SlurmOptions(), out / "submitit")
    wall = time.perf_counter() - started
    rows = load_rows(tasks)
    write_csv(rows, out / "results.csv")
    module.report(rows, out)
    timing = {"wall_seconds": wall, "rows_run": len(todo), "rows_skipped": len(tasks) - len(todo),
              "row_seconds": sum(r["seconds"] for r in rows), "launcher": launcher, "jobs": jobs,
              "slurm": asdict(slurm) if launcher == "slurm" and slurm else None}  # fmt: skip
    if todo or not (out / "timing.json").is_file():  # a rerun with nothing left to do keeps the measured time
        save_json(out / "timing.json", timing)
    return rows
