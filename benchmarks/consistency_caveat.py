"""When consistency misleads: two short runs that agree with each other far better than with the truth.

On the default benchmark (data seed 1), train the default identifiable flow with training seeds
0 and 1 for each epoch budget, then report the MCC between the two runs' latents (what
``iflow consistency`` prints, needing no true sources) beside each run's MCC to the true sources.
Writes benchmarks/consistency_caveat.md.

    OMP_NUM_THREADS=1 python benchmarks/consistency_caveat.py                 # 2 epochs
    OMP_NUM_THREADS=1 python benchmarks/consistency_caveat.py --epochs 2 32   # and the default budget
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from iflow.config import ModelConfig, TrainConfig
from iflow.consistency import consistency
from iflow.data.dataset import make_dataset
from iflow.data.synthetic import SyntheticConfig, generate
from iflow.runs import train

REPORT = Path(__file__).parent / "consistency_caveat.md"


def measure(epochs: int, data_seed: int, seeds: tuple[int, ...]) -> dict:
    synthetic = generate(SyntheticConfig(seed=data_seed))
    data = make_dataset(synthetic.x, synthetic.u, synthetic.s, synthetic.log_likelihood)
    started = time.process_time()
    runs = [train(data, ModelConfig(), TrainConfig(epochs=epochs, seed=seed), progress=False)[0] for seed in seeds]
    report = consistency(runs, data)
    return {"epochs": epochs, "between": report["mean"], "true": report["true_mcc"], "cpu": time.process_time() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[2])
    parser.add_argument("--data-seed", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [measure(epochs, args.data_seed, (0, 1)) for epochs in args.epochs]
    lines = [
        "# Consistency between runs is not recovery",
        "",
        f"Default benchmark, data seed {args.data_seed}; the default identifiable flow with training seeds 0 and 1.",
        f"`OMP_NUM_THREADS=1 python benchmarks/consistency_caveat.py --epochs {' '.join(map(str, args.epochs))}`",
        "",
        "| epochs | MCC between the two runs | MCC of each run to the true sources | CPU s (both) |",
        "|---:|---:|---|---:|",
    ]
    for row in rows:
        true = ", ".join(f"{value:.3f}" for value in row["true"])
        lines.append(f"| {row['epochs']} | {row['between']:.3f} | {true} | {row['cpu']:.0f} |")
    REPORT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
