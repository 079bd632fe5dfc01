"""Identifiability under observation noise: which model to pick for a noise level.

Data: the iFlow generator (5 sources, 40 segments, 3 xtanh mixing layers, means and standard
deviations modulated by the segment) with x = f(s) + N(0, sd^2 I), sd in :data:`NOISE_LEVELS`
(the raw mixed signal has a standard deviation of about 1 per dimension). Each segment has
``per_segment`` training points and ``test_per_segment`` more, drawn with them, held out. Models
(:data:`MODELS`): the identifiable flow, the iVAE with a Gaussian posterior (started from the flow's
latents, its default, and from random weights) and with a flow posterior (from random weights), the
VAE. Each row: MCC and log-likelihood (exact for the flow, the importance-weighted bound for the
VAEs) on the held-out points, beside the Bayes ceiling on MCC and the true log p(x | u) of the same
points (:mod:`iflow.data.noisy_ceiling`; exact at sd 0, where the ceiling is 1) and MCC of x itself.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes

from ..config import ModelConfig, TrainConfig
from ..data.dataset import Dataset, make_dataset
from ..data.noisy_ceiling import bayes_ceiling, posterior_summaries
from ..data.synthetic import SyntheticConfig, SyntheticData, generate
from ..figures import save_figure
from ..files import atomic_write, save_csv
from ..metrics import mcc
from ..runs import evaluate, train

DESCRIPTION = (
    "MCC and held-out log-likelihood against observation noise sd (0 to 0.5) for the identifiable flow, the iVAE "
    "with a Gaussian and with a flow posterior, and the VAE, beside the Bayes ceiling"
)
PUBLISHED = None  # no paper sweeps the noise; the iVAE paper's 0.952 (noise variance 0.01) is experiments.ivae_fig2a

NOISE_LEVELS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.5)
MODELS: dict[str, tuple[ModelConfig, TrainConfig]] = {  # each with its defaults (iflow/defaults.py)
    "iflow": (ModelConfig(model="iflow"), TrainConfig()),
    "ivae": (ModelConfig(model="ivae"), TrainConfig()),
    "ivae-random": (ModelConfig(model="ivae"), TrainConfig(start="random")),  # the default before start flow
    # from random weights: measured before start flow was the iVAE's default (at 5-10x the Gaussian iVAE's time)
    "ivae-flow": (ModelConfig(model="ivae", posterior="flow"), TrainConfig(start="random")),
    "vae": (ModelConfig(model="vae"), TrainConfig()),
}
LABELS = {
    "iflow": "identifiable flow",
    "ivae": "iVAE, Gaussian posterior",
    "ivae-random": "iVAE, Gaussian posterior, random start",
    "ivae-flow": "iVAE, flow posterior, random start",
    "vae": "VAE",
}
CEILING_ROWS, CEILING_SAMPLES = 2000, 300  # held-out points and importance samples of the Bayes ceiling


def settings(quick: bool) -> list[dict]:
    """One setting per (model, noise sd); ``quick``: small data and few epochs, three noise levels."""
    levels = (0.0, 0.1, 0.5) if quick else NOISE_LEVELS
    size = {"segments": 10, "per_segment": 200, "test_per_segment": 50, "epochs": 2} if quick else {
        "segments": 40, "per_segment": 1000, "test_per_segment": 250, "epochs": None}  # fmt: skip
    return [{"model": name, "noise": sd, **size} for sd in levels for name in MODELS]


def split_data(
    synthetic: SyntheticData, per_segment: int, test_per_segment: int
) -> tuple[Dataset, Dataset, np.ndarray]:
    """Training and held-out sets (the last ``test_per_segment`` points of every segment), and the held-out rows."""
    position = np.arange(len(synthetic.u)) % (per_segment + test_per_segment)
    rows = np.flatnonzero(position >= per_segment), np.flatnonzero(position < per_segment)
    test_rows, train_rows = rows
    true_ll = synthetic.log_likelihood
    sets = [make_dataset(synthetic.x[r], synthetic.u[r], synthetic.s[r], None if true_ll is None else true_ll[r])
            for r in (train_rows, test_rows)]  # fmt: skip
    return sets[0], sets[1], test_rows


def limits(synthetic: SyntheticData, sd: float, test_rows: np.ndarray, seed: int) -> dict:
    """The Bayes ceiling on MCC and the true log p(x | u) on (a subset of) the held-out rows."""
    if sd == 0:  # x determines s: the ceiling is 1 and the likelihood exact
        return {"bayes_ceiling": 1.0, "true_log_likelihood": float(np.mean(synthetic.log_likelihood[test_rows]))}
    rng = np.random.default_rng(seed)
    rows = rng.choice(test_rows, size=min(CEILING_ROWS, len(test_rows)), replace=False)
    log_lik, post_mean, _ = posterior_summaries(synthetic, sd, CEILING_SAMPLES, rng, rows)
    return {
        "bayes_ceiling": bayes_ceiling(post_mean, synthetic.s[rows])[0],
        "true_log_likelihood": float(log_lik.mean()),
    }


def run(setting: dict, seed: int) -> dict:
    """Train the setting's model on data seed ``seed`` (training seed 0) and score it on the held-out points."""
    model_config, train_config = MODELS[setting["model"]]
    if setting.get("epochs"):
        train_config = replace(train_config, epochs=setting["epochs"])
    data_config = SyntheticConfig(noise=setting["noise"], seed=seed, segments=setting["segments"],
                                  per_segment=setting["per_segment"] + setting["test_per_segment"])  # fmt: skip
    synthetic = generate(data_config)
    train_data, test_data, test_rows = split_data(synthetic, setting["per_segment"], setting["test_per_segment"])
    started = time.process_time()
    trained, result = train(train_data, model_config, train_config, progress=False)
    seconds = time.process_time() - started
    scores = evaluate(trained, test_data)
    return {
        **setting,
        "seed": seed,
        "mcc": scores["mcc"],
        "log_likelihood": scores["log_likelihood"],
        "likelihood": "exact" if scores["exact"] else "IW bound",
        "mcc_x": mcc(test_data.x, test_data.s).mcc,
        "cpu_seconds": seconds,
        "best_epoch": result.best_epoch,
        **limits(synthetic, setting["noise"], test_rows, seed),
    }


def summarise(rows: list[dict]) -> dict[tuple[str, float], dict]:
    """Mean and standard deviation over seeds per (model, noise sd)."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["noise"]), []).append(row)
    out = {}
    for key, group in groups.items():
        stats = {}
        for name in ("mcc", "log_likelihood", "bayes_ceiling", "true_log_likelihood", "mcc_x", "cpu_seconds"):
            values = np.array([r[name] for r in group], dtype=float)
            stats[name] = (float(values.mean()), float(values.std()))
        out[key] = {**stats, "seeds": sorted(r["seed"] for r in group), "likelihood": group[0]["likelihood"]}
    return out


def best_models(summary: dict) -> dict[float, str | None]:
    """The model with the highest mean held-out MCC at each noise sd; None where none beats x itself
    (the observations, unmixed, are then the better estimate of the sources)."""
    best: dict[float, str | None] = {}
    for sd in sorted({sd for _, sd in summary}):
        name, stats = max(((n, st) for (n, s), st in summary.items() if s == sd), key=lambda item: item[1]["mcc"][0])
        best[sd] = name if stats["mcc"][0] > stats["mcc_x"][0] else None
    return best


def plot_noise_curves(ax_mcc: Axes, ax_ll: Axes, summary: dict) -> None:
    """MCC and held-out log-likelihood against noise sd, one line per model, with the Bayes limits (dashed)."""
    levels = sorted({sd for _, sd in summary})
    reference = [next(stats for (_, s), stats in summary.items() if s == sd) for sd in levels]
    for name in MODELS:
        points = [(sd, summary[(name, sd)]) for sd in levels if (name, sd) in summary]
        if points:
            sds = [sd for sd, _ in points]
            ax_mcc.errorbar(sds, [p["mcc"][0] for _, p in points], [p["mcc"][1] for _, p in points], marker="o",
                            capsize=3, label=LABELS[name])  # fmt: skip
            ax_ll.plot(sds, [p["log_likelihood"][0] for _, p in points], marker="o", label=LABELS[name])
    ax_mcc.plot(levels, [r["bayes_ceiling"][0] for r in reference], "k--", label="Bayes ceiling")
    ax_mcc.plot(levels, [r["mcc_x"][0] for r in reference], "k:", label="x itself")
    ax_ll.plot(levels, [r["true_log_likelihood"][0] for r in reference], "k--", label="true model")
    for ax, label in ((ax_mcc, "held-out MCC"), (ax_ll, "held-out log-likelihood (nats/sample)")):
        ax.set_xscale("symlog", linthresh=0.02)
        ax.set_xlabel("observation noise sd")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_mcc.legend(fontsize=8)


def markdown(summary: dict) -> str:
    """A table per noise sd: each model's held-out MCC and log-likelihood, the limits, the best model."""
    best = best_models(summary)
    lines = ["| noise sd | model | MCC | log-likelihood (kind) | Bayes ceiling | true log-lik. | x itself | CPU s | seeds |",
             "|---:|---|---|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for (name, sd), stats in sorted(summary.items(), key=lambda item: (item[0][1], list(MODELS).index(item[0][0]))):
        mark = "**" if best[sd] == name else ""
        lines.append(
            f"| {sd:g} | {LABELS[name]} | {mark}{stats['mcc'][0]:.3f} +- {stats['mcc'][1]:.3f}{mark} | "
            f"{stats['log_likelihood'][0]:.3f} ({stats['likelihood']}) | {stats['bayes_ceiling'][0]:.3f} | "
            f"{stats['true_log_likelihood'][0]:.3f} | {stats['mcc_x'][0]:.3f} | {stats['cpu_seconds'][0]:.0f} | "
            f"{', '.join(map(str, stats['seeds']))} |"
        )
    header = f"# {DESCRIPTION}\n\n{__doc__.split(chr(10), 2)[2].strip()}\n\n"
    return header + "\n".join(lines) + "\n\nBest model by held-out MCC per noise sd: " + crossover(best) + "\n"


def crossover(best: dict[float, str | None]) -> str:
    """The best model at each noise sd (None: no model beats x itself), and the first sd from which the
    flow is not the best."""
    text = ", ".join(f"{sd:g}: {LABELS[name] if name else 'no model above x itself'}" for sd, name in sorted(best.items()))
    lost = [sd for sd, name in sorted(best.items()) if name != "iflow"]
    if not lost:
        return text + ". The flow is the best choice at every level."
    if len(lost) == len(best):
        return text + ". The flow is the best choice at no level."
    return text + f". The flow stops being the best choice at sd {lost[0]:g}."


def report(rows: list[dict], out: Path) -> None:
    """Write ``noise.csv`` (one line per row), ``noise.png`` (the curves) and ``noise.md`` (the table) into ``out``."""
    from matplotlib.figure import Figure

    out = Path(out)
    save_csv(out / "noise.csv", rows)
    summary = summarise(rows)
    fig = Figure(figsize=(11, 4))
    plot_noise_curves(*fig.subplots(1, 2), summary)
    fig.tight_layout()
    save_figure(fig, out / "noise.png")
    atomic_write(out / "noise.md", lambda f: f.write(markdown(summary).encode()))
