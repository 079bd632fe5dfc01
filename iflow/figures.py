"""Saving a run's standard figures to PNG files (uses the non-interactive Agg canvas)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .metrics import mcc
from .plotting import plot_recovered_sources, plot_restarts, plot_training_curves
from .runs import atomic_write


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


def save_restarts_figure(restarts: list[dict], path: Path) -> None:
    """Scatter of held-out log-likelihood vs MCC over restarts (needs MCC, i.e. known sources)."""
    fig = Figure(figsize=(4.2, 3.4))
    chosen = next(i for i, r in enumerate(restarts) if r["chosen"])
    ax = plot_restarts(fig.subplots(), [r["val_log_likelihood"] for r in restarts], [r["mcc"] for r in restarts], chosen)
    ax.set_title("restarts: selection by held-out likelihood", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
