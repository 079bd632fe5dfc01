"""The noisy benchmark's limits, from the true generator: log p(x | u) and the Bayes ceiling on MCC.

    OMP_NUM_THREADS=1 python benchmarks/noisy_ceiling.py --seeds 1 2 3 4 5     # about 3 CPU minutes per seed

The computation (importance sampling from a Laplace-approximation proposal, with the generator's own f
and source prior) is :mod:`iflow.data.noisy_ceiling`; it gives log p(x | u), the true model's log-likelihood
that no model's log-likelihood (or bound) can exceed on average, and the Bayes ceiling, the mean over
sources of corr(E[s_i | x, u], s_i), which bounds the MCC of every method.

Prints one line per seed (with the effective sample size of the weights); --json writes the numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from iflow.data.noisy_ceiling import bayes_ceiling, posterior_summaries
from iflow.data.synthetic import SyntheticConfig, generate
from iflow.metrics import mcc


def ceiling(seed: int, sigma: float, samples: int) -> dict:
    synthetic = generate(SyntheticConfig(noise=sigma, seed=seed))
    log_lik, post_mean, ess = posterior_summaries(synthetic, sigma, samples, np.random.default_rng(0))
    ceiling_mean, corr = bayes_ceiling(post_mean, synthetic.s)
    return {
        "seed": seed,
        "noise_std": sigma,
        "samples": samples,
        "true_log_likelihood": float(log_lik.mean()),
        "bayes_ceiling": ceiling_mean,
        "bayes_ceiling_per_source": corr,
        "mcc_posterior_mean": float(mcc(post_mean, synthetic.s).mcc),
        "mcc_x": float(mcc(synthetic.x, synthetic.s).mcc),
        "ess_median": float(np.median(ess)),
        "ess_1_percent": float(np.percentile(ess, 1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--noise", type=float, default=0.1, help="observation noise standard deviation")
    parser.add_argument("--samples", type=int, default=1000, help="importance samples per point")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        row = ceiling(seed, args.noise, args.samples)
        rows.append(row)
        print(
            f"seed {seed}: true log p(x | u) {row['true_log_likelihood']:.3f} nats/sample; Bayes ceiling on MCC "
            f"{row['bayes_ceiling']:.3f} (MCC of E[s | x, u] {row['mcc_posterior_mean']:.3f}, of x {row['mcc_x']:.3f}); "
            f"ESS median {row['ess_median']:.0f} of {args.samples}, 1st percentile {row['ess_1_percent']:.0f}",
            flush=True,
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
