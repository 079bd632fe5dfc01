"""Scoring recovered latents against true sources: the mean correlation coefficient (MCC)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata

CORRELATIONS = ("pearson", "spearman")


@dataclass
class MCCResult:
    """``mcc``: mean matched |r|; ``per_component[j]``: |r| of true source
    ``sources[j]`` with latent ``latents[j]`` (matched pairs, by source index)."""

    mcc: float
    per_component: np.ndarray
    latents: np.ndarray
    sources: np.ndarray
    correlation: str

    def as_dict(self) -> dict:
        return {
            "mcc": self.mcc,
            "correlation": self.correlation,
            "per_component": self.per_component.tolist(),
            "latents": self.latents.tolist(),
            "sources": self.sources.tolist(),
        }


def abs_correlation_matrix(z: np.ndarray, s: np.ndarray, correlation: str = "pearson") -> np.ndarray:
    """|corr(z_i, s_j)|: ``(k, n)`` for ``z: (N, k)``, ``s: (N, n)``; constant columns give 0."""
    if correlation not in CORRELATIONS:
        raise ValueError(f"unknown correlation {correlation!r}; choose from {CORRELATIONS}")
    z = np.asarray(z, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    if z.ndim != 2 or s.ndim != 2 or z.shape[0] != s.shape[0]:
        raise ValueError(f"need z (N, k) and s (N, n) with the same N, got {z.shape} and {s.shape}")
    if correlation == "spearman":
        z = rankdata(z, axis=0)
        s = rankdata(s, axis=0)
    z = z - z.mean(0)
    s = s - s.mean(0)
    z_norm = np.linalg.norm(z, axis=0)
    s_norm = np.linalg.norm(s, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (z.T @ s) / np.outer(z_norm, s_norm)
    return np.nan_to_num(np.abs(corr), nan=0.0)


def mcc(z: np.ndarray, s: np.ndarray, correlation: str = "pearson") -> MCCResult:
    """Mean |correlation| over the best one-to-one matching (Hungarian) of latents to sources.

    Computed on the whole data set given. With k latents and n sources the
    min(k, n) best-matched pairs are averaged.
    """
    corr = abs_correlation_matrix(z, s, correlation)
    rows, cols = linear_sum_assignment(-corr)
    matched = corr[rows, cols]
    order = np.argsort(cols)
    return MCCResult(
        mcc=float(matched.mean()),
        per_component=matched[order],
        latents=rows[order],
        sources=cols[order],
        correlation=correlation,
    )


def bits_per_dim(log_likelihood: float, dim: int) -> float:
    """-log p(x) / (d ln 2) for a mean log-likelihood in nats on the data's own scale."""
    return -log_likelihood / (dim * math.log(2))
