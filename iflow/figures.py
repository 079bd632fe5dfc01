"""Saving a run's standard figures to PNG files (uses the non-interactive Agg canvas)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .data.dataset import Dataset
from .files import atomic_write
from .metrics import mcc
from .plotting import plot_recovered_sources, plot_restarts, plot_training_curves
from .runs import Run


def save_figure(fig: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def save_sources_figure(s: np.ndarray, z: np.ndarray, path: Path) -> None:
    result = mcc(z, s)
    n = len(result.sources)
    cols = min(n, 5)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(2.6 * cols, 2.5 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    plot_recovered_sources(axes, s, z, result)
    fig.suptitle(f"true vs recovered sources, MCC = {result.mcc:.3f}")
    fig.tight_layout()
    save_figure(fig, path)


def save_training_figure(history: list[dict], path: Path) -> None:
    fig = Figure(figsize=(12, 3.2))
    plot_training_curves(fig.subplots(1, 3), history)
    fig.tight_layout()
    save_figure(fig, path)


def save_density_figure(run: Run, data: Dataset, path: Path, n_samples: int = 2000) -> None:
    """2-D data: the model's density with its own samples beside the data."""
    from .density import class_samples, grid_log_density
    from .plotting import plot_density_contours

    low, high = np.percentile(data.x, [0.5, 99.5], axis=0)
    pad = 0.15 * (high - low)
    limits = (low[0] - pad[0], high[0] + pad[0], low[1] - pad[1], high[1] + pad[1])
    xs, ys, log_p = grid_log_density(run, limits)
    model_samples = class_samples(run, n_samples)[0]
    fig = Figure(figsize=(8, 4))
    left, right = fig.subplots(1, 2)
    plot_density_contours(left, xs, ys, log_p, data.x[:n_samples]).set_title("model density, data points")
    plot_density_contours(right, xs, ys, log_p, model_samples).set_title("model density, model samples")
    fig.tight_layout()
    save_figure(fig, path)


def save_class_samples_figure(run: Run, path: Path, per_class: int = 10) -> None:
    """Image data: a grid of samples, one row per class (label); images of C > 1 channels as C cells side by side."""
    from .density import class_samples
    from .plotting import plot_image_grid

    shape = run.model_config.image_shape
    samples = class_samples(run, per_class)
    images = samples.reshape(samples.shape[0], per_class * shape[0], *shape[-2:])
    fig = Figure(figsize=(per_class * 0.6, samples.shape[0] * 0.6 + 0.4))
    title = "samples, one row per class" if run.model_config.model != "flow" else "samples (unconditional prior)"
    plot_image_grid(fig.subplots(), images.clip(0, None)).set_title(title)
    fig.tight_layout()
    save_figure(fig, path)


def save_restarts_figure(restarts: list[dict], path: Path) -> None:
    """Scatter of held-out log-likelihood vs MCC over restarts (needs MCC, i.e. known sources)."""
    fig = Figure(figsize=(4.2, 3.4))
    chosen = next(i for i, r in enumerate(restarts) if r["chosen"])
    priors = [r["prior"] for r in restarts]
    labels = priors if len(set(priors)) > 1 else None  # --prior auto: say which point is which prior
    ax = plot_restarts(fig.subplots(), [r["val_log_likelihood"] for r in restarts], [r["mcc"] for r in restarts], chosen,
                       labels)  # fmt: skip
    ax.set_title("restarts: selection by held-out likelihood", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
