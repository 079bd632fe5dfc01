"""Robustness of recovery beyond the six tuned generators: a suite of cells, each prior beside the Gaussian.

Each cell is one generator setting (sources, modulation, mixing, layers, conditioning, d = n,
segments, points per segment), varied one axis at a time from the base cell (5 Gaussian
sources, mean- and scale-modulated, 3 xtanh layers, 25th-percentile conditioning, 40 segments
x 1000), plus combinations in the target region. A data set of 2 L points per segment is drawn
with `iflow.data.synthetic.generate`; alternate points of each segment train (`iflow.runs.train`
with the library defaults, or `--epochs N`) and are held out. Per row: MCC on the held-out
points, held-out gap to the true model (true minus model log-likelihood, nats/sample), the
trainer's validation log-likelihood (what selection may use), seconds and epochs to stop.
Rows are cached in robustness.json (a rerun skips done rows); the report is robustness.md.

    # what was run for robustness.md (one process, nice -n 10, on a shared 2-core machine):
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/robustness.py --quick --epochs 16 \\
        --cells student-t --priors gauss student-t shape --seeds 1 2 3
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/robustness.py --quick \\
        --cells student-t uniform --priors gauss student-t shape --seeds 1 2 3
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/robustness.py --quick \\
        --cells student-t --priors gauss student-t --seeds 1 2 3 --train-seeds 1   # restarts
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/robustness.py --quick \\
        --cells student-t --priors gauss --seeds 1 2 3 --linear-fit none   # the Gaussian without its linear fit
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/robustness.py --quick \\
        --cells base --priors gauss student-t shape --seeds 1 2 3   # where the Gaussian is right
    # the full grid, with the library defaults (324 runs of 1-3 minutes: about 10 hours on one core):
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/robustness.py --priors gauss student-t shape --seeds 1 2 3
    python benchmarks/robustness.py --report      # robustness.md from the cache only
    python benchmarks/robustness.py --readme      # the README's table from the cache
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from iflow.config import ModelConfig, TrainConfig
from iflow.data.dataset import Dataset, make_dataset
from iflow.data.synthetic import SyntheticConfig, generate
from iflow.files import atomic_write
from iflow.metrics import mcc
from iflow.runs import evaluate, train

HERE = Path(__file__).parent
CACHE, REPORT = HERE / "robustness.json", HERE / "robustness.md"
BASE = {"sources": 5, "segments": 40, "per_segment": 1000, "layers": 3}
QUICK = {"segments": 20, "per_segment": 500}  # --quick: the base's data, smallest in the target region

CELLS: dict[str, dict] = {  # name: SyntheticConfig options beside BASE; one axis at a time, then combinations
    "base": {},
    # sources x modulation
    "laplace": {"prior": "laplace"},
    "student-t": {"prior": "student-t", "dof": 3.0},
    "student-t-dof1.5": {"prior": "student-t", "dof": 1.5},
    "uniform": {"prior": "uniform"},
    "gauss-scale-only": {"centered": True},
    "laplace-scale-only": {"prior": "laplace", "centered": True},
    "student-t-scale-only": {"prior": "student-t", "centered": True},
    "uniform-scale-only": {"prior": "uniform", "centered": True},
    # mixing
    "leaky0.05": {"activation": "leaky", "slope": 0.05},
    "leaky0.2": {"activation": "leaky", "slope": 0.2},
    "leaky0.5": {"activation": "leaky", "slope": 0.5},
    "smooth-leaky0.2": {"activation": "smooth-leaky", "slope": 0.2},
    # depth
    "layers2": {"layers": 2},
    "layers4": {"layers": 4},
    "layers5": {"layers": 5},
    # conditioning of the mixing matrices
    "percentile50": {"condition_percentile": 50.0},
    "cond25": {"max_condition": 25.0},
    "cond50": {"max_condition": 50.0},
    # d = n
    "d2": {"sources": 2},
    "d3": {"sources": 3},
    "d8": {"sources": 8},
    "d10": {"sources": 10},
    "d20": {"sources": 20},
    # segments and points per segment
    "segments5": {"segments": 5},
    "segments10": {"segments": 10},
    "segments20": {"segments": 20},
    "segments100": {"segments": 100},
    "points100": {"per_segment": 100},
    "points500": {"per_segment": 500},
    "points5000": {"per_segment": 5000},
    # combinations (the held-out cases of the issue, and the target region's corners)
    "leaky0.2-cond25-laplace": {"activation": "leaky", "slope": 0.2, "max_condition": 25.0, "prior": "laplace"},
    "leaky0.5-cond50": {"activation": "leaky", "slope": 0.5, "max_condition": 50.0},
    "d8-segments60": {"sources": 8, "segments": 60},
    "d10-layers4-student-t": {"sources": 10, "layers": 4, "prior": "student-t"},
    "layers4-cond25-uniform": {"layers": 4, "max_condition": 25.0, "prior": "uniform"},
}
SIZE_AXES = ("segments", "per_segment")  # what --quick replaces unless the cell sets it


def cell_config(cell: str, seed: int, quick: bool) -> SyntheticConfig:
    options = {**BASE, **(QUICK if quick else {}), **CELLS[cell]}
    return SyntheticConfig(seed=seed, **options)


def in_target(config: SyntheticConfig) -> bool:
    """The issue's target region: d = n <= 10, >= 20 segments of >= 500 points, <= 4 layers."""
    return config.sources <= 10 and config.segments >= 20 and config.per_segment >= 500 and config.layers <= 4


def halves(config: SyntheticConfig) -> tuple[Dataset, Dataset]:
    """2 L points per segment from one generator draw; alternate points train and are held out."""
    synthetic = generate(replace(config, per_segment=2 * config.per_segment))
    parts = []
    for start in (0, 1):
        rows = slice(start, None, 2)
        parts.append(
            make_dataset(
                synthetic.x[rows], synthetic.u[rows], synthetic.s[rows], synthetic.log_likelihood[rows],
                name=f"seed {config.seed} {'held-out' if start else 'train'}",
            )
        )  # fmt: skip
    return parts[0], parts[1]


def run_row(config: SyntheticConfig, prior: str, train_config: TrainConfig) -> dict:
    """Train on the training half with ``prior``; score on the held-out half."""
    train_data, held_out = halves(config)
    start = time.perf_counter()
    run, result = train(train_data, ModelConfig(prior=prior), train_config, progress=False)
    seconds = time.perf_counter() - start
    metrics = evaluate(run, held_out)
    return {
        "mcc": metrics["mcc"],
        "gap": metrics["gap"],
        "val_log_likelihood": result.best_val_log_likelihood,
        "held_out_log_likelihood": metrics["log_likelihood"],
        "seconds": seconds,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "x_mcc": mcc(held_out.x, held_out.s).mcc,
        "target": in_target(config),
    }


def row_key(budget: str, cell: str, prior: str, seed: int, train_seed: int) -> str:
    return f"{budget}/{cell}/{prior}/data{seed}/train{train_seed}"


def budget_name(quick: bool, epochs: int | None) -> str:
    """What the rows of one budget share: the data size and the training length."""
    return ("quick" if quick else "full") + ("-defaults" if epochs is None else f"-epochs{epochs}")


def load_cache() -> dict:
    return json.loads(CACHE.read_text()) if CACHE.exists() else {}


def save_row(key: str, row: dict) -> None:
    cache = load_cache()
    cache[key] = row
    atomic_write(CACHE, lambda f: f.write(json.dumps(cache, indent=1).encode()))


def run_grid(args: argparse.Namespace) -> None:
    budget = budget_name(args.quick, args.epochs)
    train_config = TrainConfig() if args.epochs is None else TrainConfig(epochs=args.epochs)
    if args.linear_fit is not None:
        train_config = replace(train_config, linear_fit=args.linear_fit)
    variant = "" if args.linear_fit is None else f"+linear-fit-{args.linear_fit}"  # kept apart in the cache
    for cell in args.cells:  # a cell complete (every seed and prior) before the next
        for seed in args.seeds:
            for prior in args.priors:
                for train_seed in args.train_seeds:
                    key = row_key(budget, cell, prior + variant, seed, train_seed)
                    if key in load_cache():
                        continue
                    config = cell_config(cell, seed, args.quick)
                    row = run_row(config, prior, replace(train_config, seed=train_seed))
                    save_row(key, row)
                    print(key, {k: round(v, 3) for k, v in row.items()}, flush=True)


def rows_by(cache: dict) -> dict[tuple[str, str, str], dict[tuple[int, int], dict]]:
    """(budget, cell, prior) -> {(data seed, train seed): row}."""
    out: dict[tuple[str, str, str], dict[tuple[int, int], dict]] = {}
    for key, row in cache.items():
        budget, cell, prior, data, trained = key.split("/")
        out.setdefault((budget, cell, prior), {})[(int(data[4:]), int(trained[5:]))] = row
    return out


def cell_summary(rows: dict[tuple[int, int], dict]) -> str:
    """MCC mean (lowest) over data seeds, mean held-out gap, median seconds (epochs), of training seed 0."""
    first = [row for (_, trained), row in sorted(rows.items()) if trained == 0]
    if not first:
        return "-"
    m = np.array([r["mcc"] for r in first])
    mark = "**" if m.mean() >= 0.95 and m.min() >= 0.90 else ""
    seconds = statistics.median(r["seconds"] for r in first)
    epochs = statistics.median(r["epochs"] for r in first)
    gap = np.mean([r["gap"] for r in first])
    return f"{mark}{m.mean():.3f}{mark} ({m.min():.3f}) | {gap:.2f} | {seconds:.0f} s ({epochs:.0f})"


def results_table(cache: dict, cells: dict[str, dict]) -> list[str]:
    grouped = rows_by(cache)
    budgets = sorted({budget for budget, _, _ in grouped})
    lines = []
    for budget in budgets:
        priors = sorted({p for b, _, p in grouped if b == budget}, key=lambda p: (p != "gauss", p))
        header = " | ".join(f"{p}: MCC mean (lowest) | gap | time (epochs)" for p in priors)
        lines += [f"### Budget `{budget}`", "", f"| cell | target | seeds | {header} | x itself |",
                  "|---|---|---|" + "---|---|---|" * len(priors) + "---|"]  # fmt: skip
        for cell in cells:
            found = [grouped.get((budget, cell, p), {}) for p in priors]
            if not any(found):
                continue
            any_rows = next(rows for rows in found if rows)
            seeds = sorted({seed for seed, _ in any_rows})
            target = "yes" if next(iter(any_rows.values()))["target"] else "no"
            x_mcc = np.mean([r["x_mcc"] for r in any_rows.values()])
            cols = " | ".join(cell_summary(rows) if rows else "- | - | -" for rows in found)
            lines.append(f"| {cell} | {target} | {', '.join(map(str, seeds))} | {cols} | {x_mcc:.3f} |")
        lines.append("")
    return lines


def prior_selection(cache: dict) -> list[str]:
    """Per (budget, cell, data seed) with two or more priors: does the higher validation
    log-likelihood pick the higher MCC? Counted over pairs of priors and as the argmax; training
    variants (``prior+option``) are left out."""
    grouped = rows_by(cache)
    header = ("| budget | cell | data seeds | pairs where the likelihood orders MCC right | chosen by likelihood: MCC "
              "| best MCC among priors | Gaussian's MCC | priors chosen |")  # fmt: skip
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    cells = sorted({(b, c) for b, c, _ in grouped})
    totals = {"right": 0, "pairs": 0, "best": 0, "seeds": 0}
    for budget, cell in cells:
        priors = sorted(p for b, c, p in grouped if (b, c) == (budget, cell) and "+" not in p)  # no variants
        seeds = sorted(set.intersection(*({s for s, t in grouped[(budget, cell, p)] if t == 0} for p in priors)))
        if len(priors) < 2 or not seeds:
            continue
        right = pairs = 0
        chosen, best, gauss, names = [], [], [], []
        for seed in seeds:
            rows = {p: grouped[(budget, cell, p)][(seed, 0)] for p in priors}
            for i, a in enumerate(priors):
                for b in priors[i + 1 :]:
                    pairs += 1
                    ll = rows[a]["val_log_likelihood"] - rows[b]["val_log_likelihood"]
                    right += (ll > 0) == (rows[a]["mcc"] - rows[b]["mcc"] > 0)
            pick = max(priors, key=lambda p: rows[p]["val_log_likelihood"])
            totals["best"] += rows[pick]["mcc"] == max(r["mcc"] for r in rows.values())
            totals["seeds"] += 1
            chosen.append(rows[pick]["mcc"])
            names.append(pick)
            best.append(max(r["mcc"] for r in rows.values()))
            gauss.append(rows["gauss"]["mcc"] if "gauss" in rows else float("nan"))
        lines.append(
            f"| {budget} | {cell} | {', '.join(map(str, seeds))} | {right}/{pairs} | {np.mean(chosen):.3f} "
            f"| {np.mean(best):.3f} | {np.mean(gauss):.3f} | {', '.join(names)} |"
        )
        totals["right"], totals["pairs"] = totals["right"] + right, totals["pairs"] + pairs
    total = (f"In all: the likelihood ordered MCC right in {totals['right']} of {totals['pairs']} pairs of priors, "
             f"and chose the prior with the best MCC on {totals['best']} of {totals['seeds']} data sets.")  # fmt: skip
    lines += ["", total]
    return lines


def restart_selection(cache: dict) -> list[str]:
    """Per (budget, cell, prior, data seed) with two or more training seeds: does the restart with
    the higher validation log-likelihood have the higher MCC?"""
    grouped = rows_by(cache)
    lines = ["| budget | cell | prior | data seeds | chosen restart has the best MCC | MCC: chosen | best | mean |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (budget, cell, prior), rows in sorted(grouped.items()):
        by_seed: dict[int, list[dict]] = {}
        for (seed, _), row in sorted(rows.items()):
            by_seed.setdefault(seed, []).append(row)
        restarted = {seed: rs for seed, rs in by_seed.items() if len(rs) > 1}
        if not restarted:
            continue
        hits, chosen, best, mean = 0, [], [], []
        for rs in restarted.values():
            pick = max(rs, key=lambda r: r["val_log_likelihood"])
            hits += pick["mcc"] == max(r["mcc"] for r in rs)
            chosen.append(pick["mcc"])
            best.append(max(r["mcc"] for r in rs))
            mean.append(np.mean([r["mcc"] for r in rs]))
        lines.append(
            f"| {budget} | {cell} | {prior} | {', '.join(map(str, restarted))} | {hits}/{len(restarted)} "
            f"| {np.mean(chosen):.3f} | {np.mean(best):.3f} | {np.mean(mean):.3f} |"
        )
    return lines


README_BUDGET, README_PRIORS = "quick-defaults", ("gauss", "student-t", "shape")


def readme_table(cache: dict, cells: dict[str, dict]) -> str:
    """The README's table: MCC mean (lowest) and held-out gap per prior, library defaults, --quick data."""
    grouped = rows_by(cache)
    lines = ["| cell (data seeds) | " + " | ".join(f"`--prior {p}`: MCC (lowest), gap" for p in README_PRIORS) + " |",
             "|---|" + "---|" * len(README_PRIORS)]  # fmt: skip
    for cell in cells:
        found = [[r for (_, trained), r in sorted(grouped.get((README_BUDGET, cell, p), {}).items()) if trained == 0]
                 for p in README_PRIORS]  # fmt: skip
        if not all(found):
            continue
        cols = [f"{np.mean([r['mcc'] for r in rs]):.3f} ({min(r['mcc'] for r in rs):.3f}), "
                f"{np.mean([r['gap'] for r in rs]):.2f}" for rs in found]  # fmt: skip
        lines.append(f"| {cell} ({len(found[0])}) | " + " | ".join(cols) + " |")
    return "\n".join(lines)


def recovery_restarts() -> list[str]:
    """The well-specified comparison: the restarts `recovery.py --restarts 2` recorded (Gaussian sources)."""
    recovery = json.loads((HERE / "recovery.json").read_text())
    lines = ["| recovery.json entry | restarts: seed, validation log-likelihood, MCC (kept: *) | kept has the best MCC |",
             "|---|---|---|"]  # fmt: skip
    for key, row in sorted(recovery.items()):
        restarts = row.get("restarts") or []
        if len(restarts) < 2:
            continue
        cells = ", ".join(
            f"{r['seed']}: {r['val_log_likelihood']:.3f}, {r['mcc']:.3f}{'*' * r['chosen']}" for r in restarts
        )
        kept = next(r for r in restarts if r["chosen"])
        lines.append(f"| {key} | {cells} | {'yes' if kept['mcc'] >= max(r['mcc'] for r in restarts) else 'no'} |")
    return lines


def report(cache: dict, cells: dict[str, dict]) -> str:
    lines = [
        "# Robustness: recovery across a generator suite, with the new priors beside the Gaussian",
        "",
        "Generated by `python benchmarks/robustness.py` (its docstring has the exact commands, and the",
        "full grid's). Cells: the options of `CELLS` in the script beside the base (5 sources, 40 x 1000,",
        "3 xtanh layers); budget `quick-*`: cells not setting them use 20 segments x 500 points;",
        "`*-epochs16`: 16 epochs instead of the library default; `*-defaults`: the library defaults.",
        "MCC: Pearson, on the held-out half; bold where mean >= 0.95 and no data seed below 0.90;",
        "gap: true minus model log-likelihood on the held-out half (nats/sample); time: median wall",
        "seconds on a shared 2-core machine (one process, one thread) and epochs run. Target: the",
        "issue's region (d = n <= 10, >= 20 segments of >= 500 points, <= 4 layers).",
        "",
        *results_table(cache, cells),
        "## Selection without ground truth",
        "",
        "Between priors: for each data seed, every pair of priors is compared by the trainer's",
        "validation log-likelihood (of the kept epoch) and by MCC; the likelihood 'orders MCC right'",
        "when the prior with the higher likelihood also has the higher MCC.",
        "",
        *prior_selection(cache),
        "",
        "Between restarts (training seeds on one split of one data set):",
        "",
        *restart_selection(cache),
        "",
        "For comparison, restarts where the Gaussian prior is right (Gaussian sources, 4 mixing layers,",
        "40 x 1000, library defaults; `OMP_NUM_THREADS=1 python benchmarks/recovery.py --model iflow --restarts 2",
        "--generators layers4`), read from `benchmarks/recovery.json`:",
        "",
        *recovery_restarts(),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", choices=list(CELLS), default=list(CELLS))
    parser.add_argument("--priors", nargs="+", default=["gauss"], help="--prior values of iflow train")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="data seeds")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0], help="training seeds (restarts)")
    parser.add_argument("--quick", action="store_true", help=f"cells not setting them use {QUICK}")
    parser.add_argument("--epochs", type=int, default=None, help="a fixed budget instead of the library default")
    parser.add_argument("--linear-fit", choices=["auto", "epoch", "none"], default=None, help="TrainConfig.linear_fit")
    parser.add_argument("--report", action="store_true", help="only write robustness.md from the cache")
    parser.add_argument("--readme", action="store_true", help="only print the README's table from the cache")
    args = parser.parse_args()
    if args.readme:
        print(readme_table(load_cache(), CELLS))
        return
    torch.set_num_threads(1)
    if not args.report:
        run_grid(args)
    REPORT.write_text(report(load_cache(), CELLS))
    print(REPORT.read_text())


if __name__ == "__main__":
    main()
