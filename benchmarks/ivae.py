"""iVAE and the VAE baselines on the iVAE/iFlow synthetic benchmarks; writes benchmarks/ivae.md.

    OMP_NUM_THREADS=1 python benchmarks/ivae.py                 # everything (long: one model at a time)
    python benchmarks/ivae.py --parts noisy --seeds 1 2          # a subset

Parts (noisy, noiseless: 40 segments x 1000 points, 3 xtanh mixing layers, sources mean- and
variance-modulated, the iFlow generator):
- noisy: 5 sources, x = f(s) + N(0, 0.01 I) (noise std 0.1); iVAE, VAE, beta-VAE, beta-TC-VAE.
- discrete: the iVAE paper's protocol: 10 centred sources, 20 segments x 3000, d = 100,
  x ~ Bernoulli(sigmoid(s A)) with one random 10 x 100 matrix A; iVAE and VAE with 10 latents.
- noiseless: 5 sources; iVAE next to the identifiable flow (exact log-likelihood vs the
  importance-weighted bound, both in nats per sample in the units of x).

Results are cached per (part, model, seed) in benchmarks/ivae_results.json so an
interrupted run resumes; --fresh discards the cache.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from iflow.config import ModelConfig, TrainConfig
from iflow.data import make_dataset
from iflow.metrics import mcc
from iflow.runs import evaluate, train
from iflow.synthetic import SyntheticConfig, generate

HERE = Path(__file__).parent
RESULTS, REPORT = HERE / "ivae_results.json", HERE / "ivae.md"

VAE_TRAIN = TrainConfig(epochs=30, batch_size=256, lr=3e-3, prior_fit="none")  # as measured
DISCRETE_TRAIN = TrainConfig(epochs=50, batch_size=200, lr=1e-2, prior_fit="none")  # the paper's discrete settings
FLOW_TRAIN = TrainConfig(epochs=30, lr=1e-3, prior_fit="none")  # as measured (the defaults of the time)
PARTS = {
    "noisy": (SyntheticConfig(noise=0.1), ["ivae", "vae", "betavae", "tcvae"]),
    "discrete": (  # the iVAE paper's protocol (its discrete.py): one linear map, centred sources, 20 x 3000
        SyntheticConfig(sources=10, dim=100, obs="bernoulli", layers=1, centered=True, segments=20, per_segment=3000),
        ["ivae", "vae"],
    ),
    "noiseless": (SyntheticConfig(), ["ivae", "iflow"]),
}
PAPER = {
    ("noisy", "ivae"): "0.952 (iVAE data, centred); 0.496 (iFlow data)",
    ("noisy", "vae"): "0.682",
    ("noisy", "betavae"): "0.665",
    ("noisy", "tcvae"): "0.722",
    ("discrete", "ivae"): "0.823",
    ("discrete", "vae"): "0.539",
    ("noiseless", "iflow"): "0.724 +- 0.064 (iFlow paper)",
    ("noiseless", "ivae"): "0.496 +- 0.072 (iFlow paper)",
}


NOTES = """Notes:
- Targets (issue 3): noisy iVAE mean MCC >= 0.90 over seeds 1-5, each model <= 3 minutes: NOT met (see table);
  discrete d = 100, n = 10 iVAE >= 0.85: met (0.901 +- 0.001, seeds 1-5). Times are wall-clock on a shared 2-core machine, 1 thread.
- The discrete part first ran with the 3 x 64 SiLU networks and lr 3e-3 / 30 epochs: iVAE 0.345 (seed 1, on the
  nonlinear uncentred generator) and 0.452 (seed 2, paper protocol); linear networks at lr 3e-3: 0.769.
- Data are the iFlow generator's (means U(-5, 5), a new matrix per layer); the iVAE paper's 0.952 is on centred
  data with one matrix reused in all layers and a re-weighted objective (reconstruction x 100, see PAPERS.md),
  so it is not the same protocol. With the plain ELBO used here, sanity checks behave: 2 sources, linear mixing,
  centred: MCC 0.995; 5 sources, linear, centred: 0.68 after 8 epochs.
- Diagnosis on the nonlinear benchmark: the learned prior's per-segment variances lag far behind the empirical
  per-segment variances of the posterior means (natural parameter eta2 = -1/(2 v) is a softplus of a table entry
  that Adam moves by about lr per step), so the variance modulation that identifies the sources is barely used.
  Multiplying the prior table's effective learning rate by 10 (a parametrisation, tried outside the package)
  raised linear 5-source MCC from 0.69 to 0.83 (mean-modulated, 30 vs 15 epochs) and 0.68 to 0.86 (centred,
  8 vs 15 epochs), but not the nonlinear noisy benchmark (0.45). Tried on the noisy benchmark, seed 1, without reaching 0.60: lr 1e-3 / 3e-3 /
  1e-2, batch 64, batch 200 at lr 1e-2 for 40 epochs (0.549), beta 0.1, KL annealing over 1000-2000 steps,
  decoder variance 0.001, learned decoder variance.
- Ceiling on the noisy benchmark (seed 1): a supervised MLP predicting s from (x, u) (held-out, 25 epochs)
  reaches mean correlation 0.923 with noise std 0.1 and 0.964 without noise, so no method's posterior mean can
  score much above ~0.92 there: the 0.90 target leaves little room. (Saturated xtanh layers contract some source
  directions ~10x per layer, and the noise hides them.)"""


def model_config(part: str, name: str) -> ModelConfig:
    if name == "iflow":
        return ModelConfig(model="iflow")
    config = ModelConfig(model=name, hidden=64)
    if part == "discrete":  # linear encoder and decoder, as the paper's networks (activation "none")
        config = replace(config, obs="bernoulli", latent_dim=10, depth=0)
    return config


def run_one(part: str, name: str, seed: int) -> dict:
    torch.set_num_threads(1)
    synthetic = generate(replace(PARTS[part][0], seed=seed))
    data = make_dataset(synthetic.x, synthetic.u, synthetic.s, synthetic.log_likelihood, name=f"{part} seed {seed}")
    config = model_config(part, name)
    train_config = FLOW_TRAIN if name == "iflow" else DISCRETE_TRAIN if part == "discrete" else VAE_TRAIN
    start = time.perf_counter()
    run, result = train(data, config, train_config, progress=False)
    seconds = time.perf_counter() - start
    torch.manual_seed(0)  # the importance-weighted bound is random
    metrics = evaluate(run, data)
    return {
        "mcc": metrics["mcc"],
        "log_likelihood": metrics["log_likelihood"],
        "estimator": metrics["estimator"],
        "true_log_likelihood": metrics.get("true_log_likelihood"),
        "mcc_x": mcc(data.x, data.s).mcc,
        "seconds": seconds,
        "best_epoch": result.best_epoch,
        "model_config": {k: v for k, v in asdict(config).items() if k != "aux"},
        "train_config": asdict(train_config),
    }


def mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} +- {np.std(values, ddof=1):.3f}"


def report(results: dict) -> str:
    lines = [
        "# iVAE and VAE baselines on the synthetic benchmarks",
        "",
        "Regenerate: `OMP_NUM_THREADS=1 python benchmarks/ivae.py` (one model at a time, 1 CPU thread).",
        (
            f"VAE family: {VAE_TRAIN.epochs} epochs, batch {VAE_TRAIN.batch_size}, Adam lr {VAE_TRAIN.lr}, cosine "
            "schedule; encoder/decoder MLPs 3 x 64 SiLU; Gaussian decoder variance 0.01 (standardised x); "
            f"discrete part: linear encoder and decoder, {DISCRETE_TRAIN.epochs} epochs, batch "
            f"{DISCRETE_TRAIN.batch_size}, lr {DISCRETE_TRAIN.lr}; "
            "MCC (Pearson) of the posterior mean on all points; best epoch by validation IW bound (K = 100)."
        ),
        (
            "Log-likelihoods: nats per sample in the units of x; the flow's is exact, the VAEs' is the "
            "importance-weighted lower bound with K = 100."
        ),
        "",
        "| part | model | seeds | MCC | MCC of x itself | log-likelihood (kind) | true log-lik. | s / model | paper |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for part, (_, names) in PARTS.items():
        for name in names:
            rows = [r for key, r in sorted(results.items()) if key.startswith(f"{part}/{name}/")]
            if not rows:
                continue
            seeds = ", ".join(key.split("/")[2] for key in sorted(results) if key.startswith(f"{part}/{name}/"))
            kind = "exact" if rows[0]["estimator"] == "exact" else "IW bound"
            true_ll = [r["true_log_likelihood"] for r in rows if r["true_log_likelihood"] is not None]
            lines.append(
                f"| {part} | {name} | {seeds} | {mean_sd([r['mcc'] for r in rows])} "
                f"| {mean_sd([r['mcc_x'] for r in rows])} "
                f"| {mean_sd([r['log_likelihood'] for r in rows])} ({kind}) | {mean_sd(true_ll)} "
                f"| {np.mean([r['seconds'] for r in rows]):.0f} | {PAPER.get((part, name), '')} |"
            )
    lines += [
        "",
        NOTES,
        "",
        "Per seed:",
        "",
        "| run | MCC | log-likelihood | seconds | best epoch |",
        "|---|---|---|---|---|",
    ]
    for key, r in sorted(results.items()):
        lines.append(f"| {key} | {r['mcc']:.3f} | {r['log_likelihood']:.3f} | {r['seconds']:.0f} | {r['best_epoch']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--models", nargs="+", default=None, help="only these models")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--fresh", action="store_true", help="ignore cached results")
    args = parser.parse_args()
    results = {} if args.fresh or not RESULTS.exists() else json.loads(RESULTS.read_text())
    for part in args.parts:
        for seed in args.seeds:
            for name in PARTS[part][1]:
                key = f"{part}/{name}/{seed}"
                if (args.models and name not in args.models) or key in results:
                    continue
                results[key] = run_one(part, name, seed)
                r = results[key]
                print(f"{key}: MCC {r['mcc']:.3f}, log-lik {r['log_likelihood']:.3f}, {r['seconds']:.0f} s", flush=True)
                RESULTS.write_text(
                    json.dumps(
                        results, indent=1, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v
                    )
                )
                REPORT.write_text(report(results))
    REPORT.write_text(report(results))


if __name__ == "__main__":
    main()
