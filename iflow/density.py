"""A trained run as a density in data units: per-point log-densities, grids and per-class samples."""

from __future__ import annotations

import numpy as np

from .data.dataset import make_dataset
from .runs import Run, sample
from .runtime import as_tensors, batched


def log_density(run: Run, x: np.ndarray, u: np.ndarray | None = None) -> np.ndarray:
    """log p(x | u) in nats, in the units of the given x: ``(n, d) -> (n,)`` (u defaults to label 0)."""
    u = np.zeros(len(x), dtype=np.int64) if u is None else u
    std = run.standardized(make_dataset(x, u))
    run.model.eval()
    values = batched(run.model.log_prob, *as_tensors(std.x, std.u, run.device)).cpu().numpy()
    return values + run.standardizer.log_abs_det


def grid_log_density(run: Run, limits: tuple[float, float, float, float], n: int = 200) -> tuple[np.ndarray, ...]:
    """A 2-D model's log-density on an ``n x n`` grid over (xmin, xmax, ymin, ymax): ``(xs, ys, log_p (n, n))``."""
    xs = np.linspace(limits[0], limits[1], n)
    ys = np.linspace(limits[2], limits[3], n)
    xx, yy = np.meshgrid(xs, ys)
    log_p = log_density(run, np.stack([xx.ravel(), yy.ravel()], axis=1))
    return xs, ys, log_p.reshape(n, n)


def class_samples(run: Run, per_class: int, seed: int = 0) -> np.ndarray:
    """``per_class`` draws for every label, in data units: ``(n_labels, per_class, d)``."""
    labels = run.model_config.aux.n_labels or 1
    return np.stack([sample(run, label, per_class, seed + label) for label in range(labels)])
