"""Figures. Every function draws on the ``ax`` (or axes) it is given and returns it;
none calls ``plt.show()`` or touches the backend."""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes

from .metrics import MCCResult
from .units import VAL_DATA_KEY


def plot_source_pair(ax: Axes, source: np.ndarray, latent: np.ndarray, title: str, max_points: int = 2000) -> Axes:
    """Scatter one true source against its matched recovered latent."""
    step = max(1, len(source) // max_points)
    ax.scatter(source[::step], latent[::step], s=2, alpha=0.4, linewidths=0)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("true source", fontsize=8)
    ax.set_ylabel("recovered", fontsize=8)
    ax.tick_params(labelsize=7)
    return ax


def plot_recovered_sources(axes: np.ndarray, s: np.ndarray, z: np.ndarray, result: MCCResult) -> np.ndarray:
    """One panel per matched pair (true source j vs its latent), |r| in the title."""
    flat = np.ravel(axes)
    for ax, j, k, r in zip(flat, result.sources, result.latents, result.per_component, strict=False):
        plot_source_pair(ax, s[:, j], z[:, k], f"s{j} ~ z{k}  |r| = {r:.3f}")
    for ax in flat[len(result.sources) :]:
        ax.axis("off")
    return axes


def plot_training_curves(axes: np.ndarray, history: list[dict]) -> np.ndarray:
    """Training loss, validation log-likelihood and (when known) MCC per epoch.

    The log-likelihood is shown in the units of the x given when the records carry it
    (``val_log_likelihood_data``, see :mod:`iflow.units`), else in standardised units; the axis says which.
    """
    epochs = [h["epoch"] for h in history]
    in_data_units = bool(history) and all(VAL_DATA_KEY in h for h in history)
    validation = (VAL_DATA_KEY, "validation log-lik.\n(nats/sample, x as given)") if in_data_units else (
        "val_log_likelihood", "validation log-lik.\n(nats/sample, standardised x)")  # fmt: skip
    panels = [("train_loss", "training loss\n(standardised x)"), validation, ("mcc", "MCC")]
    for ax, (key, label) in zip(np.ravel(axes), panels, strict=False):
        values = [h.get(key) for h in history]
        if any(v is None for v in values):
            ax.axis("off")
            continue
        ax.plot(epochs, values, marker=".")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    return axes


def plot_density_contours(
    ax: Axes, xs: np.ndarray, ys: np.ndarray, log_density: np.ndarray, samples: np.ndarray | None = None
) -> Axes:
    """Filled contours of a density exp(log_density) on the grid (xs, ys), with optional samples on top."""
    ax.contourf(xs, ys, np.exp(log_density), levels=30, cmap="viridis")
    if samples is not None:
        ax.scatter(samples[:, 0], samples[:, 1], s=1, c="white", alpha=0.4, linewidths=0)
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(ys[0], ys[-1])
    ax.set_aspect("equal")
    return ax


def plot_image_grid(ax: Axes, images: np.ndarray, vmax: float | None = None) -> Axes:
    """Tile ``images: (rows, cols, H, W)`` into one grey picture, one image per cell."""
    rows, cols, h, w = images.shape
    canvas = np.ones((rows * (h + 1) - 1, cols * (w + 1) - 1)) * np.nan
    for i in range(rows):
        for j in range(cols):
            canvas[i * (h + 1) : i * (h + 1) + h, j * (w + 1) : j * (w + 1) + w] = images[i, j]
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=vmax if vmax is not None else np.nanmax(canvas))
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def plot_restarts(
    ax: Axes, val_log_likelihood: list[float], mcc: list[float], chosen: int, labels: list[str] | None = None
) -> Axes:
    """Held-out log-likelihood vs MCC, one point per restart; the kept one ringed; ``labels``
    (e.g. each candidate's prior, ``--prior auto``) written beside the points."""
    ax.scatter(val_log_likelihood, mcc, s=25, label="restart")
    for x, y, text in zip(val_log_likelihood, mcc, labels or [], strict=False):
        ax.annotate(text, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7)
    ax.scatter([val_log_likelihood[chosen]], [mcc[chosen]], s=120, facecolors="none", edgecolors="red", label="kept")
    ax.set_xlabel("held-out log-likelihood (nats, standardised x)")
    ax.set_ylabel("MCC")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax
