"""Data-parallel speed-up: ``torchrun --nproc_per_node 2 -m iflow train`` beside one process at
the same global batch, on the default benchmark's kind of data (synthetic, 5 sources, 40 segments).

Both run as subprocesses of the real command line, interleaved over rounds (one at a time), with
1 torch thread per process. Reported: the training seconds the run records (``timing.json``: the
steps and the per-epoch work, which every rank repeats on the full data), the wall time of the
whole command (start-up and saving included), the speed-up as the median of the per-round ratios,
and the held-out log-likelihood of both. Each step equals the one-process step up to float rounding,
but training amplifies rounding: for scale, one process also trains once on x perturbed by a relative
1e-7 (float32 rounding); its held-out log-likelihood, and the largest flow-weight difference from
the one-process run of both, are reported beside.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/ddp.py [--rounds 3] [--epochs 4] [--batch 512 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
WORLD = 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def launcher(processes: int) -> list[str]:
    if processes == 1:
        return [sys.executable, "-m", "iflow"]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_port", str(free_port()), "-m", "iflow"]  # fmt: skip


def run(processes: int, data: Path, out: Path, epochs: int, batch: int) -> dict:
    """One training run; its training seconds, wall seconds and held-out log-likelihood."""
    argv = [*launcher(processes), "train", "--data", str(data), "--out", str(out), "--overwrite",
            "--epochs", str(epochs), "--batch-size", str(batch), "--checkpoint-every", "1e9"]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - started
    training = json.loads((out / "timing.json").read_text())["seconds"]
    val = json.loads((out / "metrics.json").read_text())["val"]["log_likelihood"]
    return {"training": training, "wall": wall, "val": val}


def make_data(folder: Path, per_segment: int) -> tuple[Path, Path]:
    """The synthetic data, and the same with x perturbed by a relative 1e-7 (seeded)."""
    path, perturbed = folder / "data.npz", folder / "perturbed.npz"
    argv = [sys.executable, "-m", "iflow", "data", "synthetic", "--per-segment", str(per_segment), "--out", str(path)]
    subprocess.run(argv, check=True, capture_output=True)
    with np.load(path) as arrays:
        x = arrays["x"] * (1 + 1e-7 * np.random.default_rng(0).standard_normal(arrays["x"].shape))
        np.savez(perturbed, x=x, u=arrays["u"], s=arrays["s"])
    return path, perturbed


def weight_distance(a: Path, b: Path) -> float:
    """The largest absolute difference between the flow weights of two runs (the prior's natural
    parameters, refitted each epoch, are 1 / variances in the thousands)."""
    first, second = (torch.load(run / "model.pt", weights_only=True)["state_dict"] for run in (a, b))
    return max(float((first[k].double() - second[k].double()).abs().max()) for k in first if k.startswith("flow."))


def table(results: dict, perturbed: dict, batches: list[int]) -> list[str]:
    lines = ["| global batch | processes | training s (median) | wall s (median) | speed-up, training | speed-up, wall "
             "| held-out log-likelihood | max flow-weight difference from 1 process |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for batch in batches:
        one, two = results[batch][1], results[batch][WORLD]
        for processes, rows in ((1, one), (WORLD, two)):
            ratios = {key: statistics.median(a[key] / b[key] for a, b in zip(one, rows, strict=True))
                      for key in ("training", "wall")}  # fmt: skip
            medians = {key: statistics.median(r[key] for r in rows) for key in ("training", "wall")}
            lines.append(f"| {batch} | {processes} | {medians['training']:.1f} | {medians['wall']:.1f} | "
                         f"{ratios['training']:.2f}x | {ratios['wall']:.2f}x | {rows[-1]['val']:.4f} | "
                         f"{rows[-1]['distance']:.3g} |")  # fmt: skip
        row = perturbed[batch]
        lines.append(f"| {batch} | 1, x perturbed by 1e-7 | {row['training']:.1f} | {row['wall']:.1f} | | | "
                     f"{row['val']:.4f} | {row['distance']:.3g} |")  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--per-segment", type=int, default=500, help="rows per segment (40 segments)")
    args = parser.parse_args()
    results: dict = {batch: {1: [], WORLD: []} for batch in args.batch}
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        data, perturbed_data = make_data(Path(tmp), args.per_segment)
        perturbed = {batch: run(1, perturbed_data, Path(tmp) / f"perturbed-{batch}", args.epochs, batch)
                     for batch in args.batch}  # fmt: skip
        for round_ in range(args.rounds):
            for batch in args.batch:
                order = (1, WORLD) if round_ % 2 == 0 else (WORLD, 1)  # alternate who goes first
                for processes in order:
                    row = run(processes, data, Path(tmp) / f"run{processes}-{batch}", args.epochs, batch)
                    results[batch][processes].append(row)
                    print(f"round {round_ + 1}, batch {batch}, {processes} process(es): {row}", flush=True)
            loads.append(os.getloadavg()[0])
        for batch in args.batch:
            reference = Path(tmp) / f"run1-{batch}"
            results[batch][WORLD][-1]["distance"] = weight_distance(reference, Path(tmp) / f"run{WORLD}-{batch}")
            results[batch][1][-1]["distance"] = 0.0
            perturbed[batch]["distance"] = weight_distance(reference, Path(tmp) / f"perturbed-{batch}")
    command = "OMP_NUM_THREADS=1 nice -n 10 python benchmarks/ddp.py"
    command += f" --rounds {args.rounds} --epochs {args.epochs} --batch {' '.join(map(str, args.batch))}"
    command += f" --per-segment {args.per_segment}"
    text = [
        "# Data-parallel training: 2 processes beside 1 at the same global batch",
        "",
        f"Generated by `{command}`: the default model (spline flow, d = 5) on synthetic data with 40 segments x "
        f"{args.per_segment} rows, {args.epochs} epochs, 1 torch thread per process, gloo on the CPU; the two "
        f"launches interleaved over {args.rounds} rounds. Speed-up: the median of the per-round ratios "
        "(1 process / 2 processes; above 1 means the 2 processes were faster). Training seconds are the run's own "
        "(steps and per-epoch work); wall seconds include start-up (torchrun's and each rank's imports) and saving.",
        "",
        f"The machine has 2 cores shared with other jobs: load average {min(loads):.1f}-{max(loads):.1f} during "
        "the run.",
        "",
        *table(results, perturbed, args.batch),
        "",
    ]
    (HERE / "ddp.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
