"""iflow's training speed against another copy of iflow (e.g. the commit before a change), side by side.

    git archive BASE iflow | tar -x -C /tmp/iflow-base     # the other version's package, anywhere
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/speedup.py --baseline /tmp/iflow-base [--rounds 10] [--demo-rounds 2]

The machine is shared, so everything is a comparison side by side:

1. the default training step of ``iflow demo``'s model (spline, dim 5, batch 512, one
   thread), each tree set up by its own ``start_trainer`` (its optimizer, its compiled
   loss) in one process, the baseline's ``iflow/`` imported as ``iflow_baseline``; 30 steps
   of each in turn per round: the baseline, this tree, this tree with ``TrainConfig.compile``;
2. the compilation: the first step of this tree's compiled training in two fresh
   processes, the first from an empty inductor cache, the second reusing it;
3. ``iflow demo``'s training (its data, the default model, training to convergence) in
   fresh processes whose ``PYTHONPATH`` is one tree or the other, alternating: wall
   seconds of training, epochs, MCC, the seconds to MCC 0.95; this tree also compiled
   (with the cache of 2, so warm).

Writes ``benchmarks/speedup.md``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

HERE = Path(__file__).resolve().parent
OUT = HERE / "speedup.md"

STEP = """
import json, time, torch
from iflow.config import ModelConfig, TrainConfig
from iflow.data.dataset import make_dataset
from iflow.data.synthetic import SyntheticConfig, generate
from iflow.runs import plan_run
from iflow.training.trainer import start_trainer, train_step
torch.set_num_threads(1)
synthetic = generate(SyntheticConfig(seed=1))
data = make_dataset(synthetic.x, synthetic.u, synthetic.s, synthetic.log_likelihood, name="demo")
plan = plan_run(data, ModelConfig(), TrainConfig(**({"compile": True} if COMPILE else {})))
model, config = plan.run.model, plan.run.train_config
trainer = start_trainer(model, plan.train_data, config, plan.split, None)  # this tree's optimizer and step
x, u = trainer.tensors.x_train[:512], trainer.tensors.u_train[:512]
model.train()
start = time.perf_counter()
train_step(trainer.loss_module, trainer.optimizer, x, u, config.clip_grad)
first = time.perf_counter() - start
for _ in range(20):
    train_step(trainer.loss_module, trainer.optimizer, x, u, config.clip_grad)
start = time.perf_counter()
for _ in range(150):
    train_step(trainer.loss_module, trainer.optimizer, x, u, config.clip_grad)
print(json.dumps({"ms": (time.perf_counter() - start) / 150 * 1e3, "first_s": first}))
"""

DEMO = """
import json, sys
sys.path.insert(0, HERE)
from demo_run import demo_training
print(json.dumps(demo_training(**({"compile": True} if COMPILE else {}))))
"""


def step_of(package: str, compiled: bool) -> Callable[[], object]:
    """One default training step of ``iflow demo``'s model, as ``package`` (iflow, or the baseline's copy) sets it up."""

    def mod(name: str) -> ModuleType:
        return importlib.import_module(f"{package}.{name}")

    synthetic = mod("data.synthetic").generate(mod("data.synthetic").SyntheticConfig(seed=1))
    data = mod("data.dataset").make_dataset(synthetic.x, synthetic.u, synthetic.s, synthetic.log_likelihood, name="demo")
    config = mod("config").TrainConfig(**({"compile": True} if compiled else {}))
    plan = mod("runs").plan_run(data, mod("config").ModelConfig(), config)
    trainer_module, model, config = mod("training.trainer"), plan.run.model, plan.run.train_config
    trainer = trainer_module.start_trainer(model, plan.train_data, config, plan.split, None)  # its own optimizer
    x, u = trainer.tensors.x_train[:512], trainer.tensors.u_train[:512]
    model.train()
    if "model" not in inspect.signature(trainer_module.train_step).parameters:  # trees since data-parallel training
        return lambda: trainer_module.train_step(trainer.loss_module, trainer.optimizer, x, u, config.clip_grad)
    return lambda: trainer_module.train_step(model, trainer.optimizer, x, u, config.clip_grad)  # older trees


def interleaved_steps(rounds: int, steps: int = 30) -> dict[str, list[float]]:
    """ms per step of the baseline (imported as ``iflow_baseline``), this tree, and this tree compiled,
    ``steps`` steps of each in turn per round, the order alternating between rounds."""
    torch.set_num_threads(1)
    variants = {"baseline": step_of("iflow_baseline", False), "this tree": step_of("iflow", False),
                "this tree, --compile": step_of("iflow", True)}  # fmt: skip
    for step in variants.values():
        for _ in range(5):  # warm-up, and the compilation
            step()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        for name in list(variants) if r % 2 == 0 else list(reversed(variants)):
            start = time.perf_counter()
            for _ in range(steps):
                variants[name]()
            times[name].append((time.perf_counter() - start) / steps * 1e3)
    return times


def run_interleaved(baseline: Path, rounds: int, cache: Path) -> dict[str, list[float]]:
    """:func:`interleaved_steps` in a fresh process, the baseline's ``iflow/`` copied in as ``iflow_baseline``."""
    with tempfile.TemporaryDirectory() as packages:
        shutil.copytree(baseline / "iflow", Path(packages) / "iflow_baseline")
        code = (f"import json, sys; sys.path[:0] = [{str(HERE)!r}, {packages!r}]; import speedup\n"
                f"print(json.dumps(speedup.interleaved_steps({rounds})))")  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(HERE.parent), "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": str(cache)}
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=HERE.parent, capture_output=True, text=True,
                             check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(tree: Path, code: str, compiled: bool, cache: Path) -> dict:
    """Run ``code`` in a fresh process importing iflow from ``tree`` (its working directory too); its JSON line."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    script = f"COMPILE = {compiled}\nHERE = {str(HERE)!r}\n{code}"
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def rounds_of(variants: dict[str, tuple[Path, bool]], code: str, rounds: int, cache: Path) -> dict[str, list[dict]]:
    """Each variant once per round, the order alternating between rounds."""
    results: dict[str, list[dict]] = {name: [] for name in variants}
    for r in range(rounds):
        names = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in names:
            tree, compiled = variants[name]
            results[name].append(run(tree, code, compiled, cache))
            print(f"round {r + 1}: {name} {results[name][-1]}", file=sys.stderr)
    return results


def median(rows: list[dict], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def report(interleaved: dict[str, list[float]], compiles: list[dict], demos: dict[str, list[dict]],
           args: argparse.Namespace) -> str:  # fmt: skip
    base = interleaved["baseline"]
    lines = [
        "# Training speed against the baseline tree, side by side",
        "",
        f"Generated by `OMP_NUM_THREADS=1 nice -n 10 python benchmarks/speedup.py --baseline BASE --rounds {args.rounds}"
        f" --demo-rounds {args.demo_rounds}`, BASE a copy of {args.label}'s `iflow/` (a 2-core machine shared with"
        " other jobs).",
        "",
        f"Default training step of `iflow demo`'s model (spline, dim 5, batch 512, 1 thread), each tree set up by its"
        f" own `start_trainer` in one process, 30 steps of each in turn over {args.rounds} rounds:",
        "",
        "| tree | ms per step (median) | speed-up over the baseline (median of per-round ratios) |",
        "|---|---:|---:|",
    ]
    for name, times in interleaved.items():
        ratio = statistics.median(b / t for b, t in zip(base, times, strict=True))
        lines.append(f"| {name} | {statistics.median(times):.2f} | {ratio:.2f}x |")
    firsts = ", ".join(f"{row['first_s']:.1f}" for row in compiles)
    step_ms = ", ".join(f"{row['ms']:.1f}" for row in compiles)
    lines += ["", f"`--compile`'s first step (the compilation), in fresh processes, the first from an empty inductor"
              f" cache, the next reusing it: {firsts} s; ms per step in those processes: {step_ms}."]  # fmt: skip
    if demos:
        base_s = median(demos["baseline"], "s")
        lines += ["", "`iflow demo`'s training (data seed 1, default model and training, to convergence), medians:", "",
                  "| tree | training s | speed-up over the baseline | epochs | MCC | s to MCC 0.95 per round |",
                  "|---|---:|---:|---:|---:|---|"]  # fmt: skip
        for name, rows in demos.items():
            s = median(rows, "s")
            reached = ", ".join("-" if row["to_target"] is None else f"{row['to_target']:.1f}" for row in rows)
            lines.append(f"| {name} | {s:.1f} | {base_s / s:.2f}x | {median(rows, 'epochs'):.0f} |"
                         f" {median(rows, 'mcc'):.3f} | {reached} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a folder holding the other version's iflow/")
    parser.add_argument("--label", default="the base commit", help="what the baseline is, for the report")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of the interleaved steps")
    parser.add_argument("--demo-rounds", type=int, default=2, help="0: no demo training")
    args = parser.parse_args()
    this = HERE.parent
    variants = {"baseline": (args.baseline.resolve(), False), "this tree": (this, False),
                "this tree, --compile": (this, True)}  # fmt: skip
    with tempfile.TemporaryDirectory() as cache:  # the first compile is cold, later ones reuse this cache
        compiles = rounds_of({"this tree, --compile": variants["this tree, --compile"]}, STEP, 2, Path(cache))
        interleaved = run_interleaved(args.baseline.resolve(), args.rounds, Path(cache))
        demos = rounds_of(variants, DEMO, args.demo_rounds, Path(cache)) if args.demo_rounds else {}
    text = report(interleaved, compiles["this tree, --compile"], demos, args)
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
