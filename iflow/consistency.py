"""Identifiability without ground truth: agreement between independently trained runs.

If a model is identifiable and well estimated, two runs trained from different seeds
recover the same latents up to permutation and sign (and per-component monotone maps),
so the MCC between their latents is near 1. It needs no true sources.

The converse does not hold: agreement is necessary for recovery, not sufficient. Runs stopped
early can agree on the same wrong latents (``benchmarks/consistency_caveat.md``: on the default
benchmark two 2-epoch runs agreed at 0.940 while recovering the sources at 0.678 and 0.670).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .config import TrainConfig
from .data.dataset import Dataset
from .metrics import mcc
from .runs import Run, encode_dataset


def pairwise_mcc(latents: Sequence[np.ndarray], correlation: str = "pearson") -> np.ndarray:
    """Symmetric ``(R, R)`` matrix of MCC between the latents of R runs (ones on the diagonal).

    ``latents[r]: (n, k)``, rows aligned across runs.
    """
    count = len(latents)
    table = np.eye(count)
    for i in range(count):
        for j in range(i + 1, count):
            table[i, j] = table[j, i] = mcc(latents[i], latents[j], correlation).mcc
    return table


def consistency(runs: Sequence[Run], data: Dataset) -> dict:
    """Pairwise MCC between runs on ``data``; with true sources, each run's MCC too.

    Keys: ``runs`` (names), ``pairwise`` (R x R list), ``mean`` and ``min`` over pairs,
    ``true_mcc`` (per run, or None when ``data.s`` is absent), ``caveat`` (see :func:`caveat`).
    """
    latents = [encode_dataset(run, data) for run in runs]
    table = pairwise_mcc(latents)
    pairs = table[np.triu_indices(len(runs), k=1)]
    return {
        "runs": [str(run.directory) for run in runs],
        "pairwise": table.tolist(),
        "mean": float(pairs.mean()),
        "min": float(pairs.min()),
        "true_mcc": None if data.s is None else [mcc(z, data.s).mcc for z in latents],
        "caveat": caveat(runs),
    }


def caveat(runs: Sequence[Run]) -> str:
    """What agreement does not show, and which runs trained for fewer epochs than the default."""
    default = TrainConfig().epochs
    short = [f"{run.directory or 'run'} ({run.train_config.epochs})" for run in runs if run.train_config.epochs < default]
    note = (
        "agreement between runs is necessary for recovery, not sufficient: runs stopped early can agree on the "
        "same wrong latents (default benchmark: two 2-epoch runs agreed at 0.940 and recovered the sources at "
        "0.678 and 0.670)"
    )
    return note + (f"; trained for fewer than the default {default} epochs: {', '.join(short)}" if short else "")
