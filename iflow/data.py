"""Data sets as tensors: loading and validating user files, auxiliary variables, splits.

A data file is an ``.npz`` with ``x`` (n, d) floats, ``u`` integer labels (n,)
or floats (n, m), and optionally ``s`` (n, k) true sources and
``true_log_likelihood`` (n,) (written by the synthetic generator).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError


@dataclass
class AuxSpec:
    """How u is fed to the prior: integer labels (``n_labels``) or floats (``aux_dim``)."""

    kind: str  # "labels" or "continuous"
    n_labels: int | None = None
    aux_dim: int | None = None

    def describe(self) -> str:
        if self.kind == "labels":
            return f"u: {self.n_labels} integer labels -> prior parameters from an embedding table"
        return f"u: {self.aux_dim}-dim floats -> prior parameters from an MLP"


@dataclass
class Dataset:
    """``x: (n, d)`` float32, ``u: (n,)`` int64 or ``(n, m)`` float32, ``s: (n, k)`` or None."""

    x: np.ndarray
    u: np.ndarray
    s: np.ndarray | None = None
    true_log_likelihood: np.ndarray | None = None
    source: str = "<memory>"
    u_was_one_hot: bool = False

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def dim(self) -> int:
        return self.x.shape[1]


@dataclass
class Standardizer:
    """Per-dimension affine map x -> (x - mean) / std, remembered in the run."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        std = x.std(0)
        return cls(x.mean(0), np.where(std > 0, std, 1.0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def inverse(self, x: np.ndarray) -> np.ndarray:
        return (x * self.std + self.mean).astype(np.float32)

    @property
    def log_abs_det(self) -> float:
        """log|det| of the standardisation, added to log-likelihoods of standardised x."""
        return float(-np.log(self.std).sum())

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Standardizer:
        return cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64))


def looks_one_hot(u: np.ndarray) -> bool:
    """True for a float (n, m) array whose rows are one-hot vectors."""
    return u.ndim == 2 and u.shape[1] > 1 and bool(np.all((u == 0) | (u == 1))) and bool(np.all(u.sum(1) == 1))


def normalize_aux(u: np.ndarray, name: str) -> np.ndarray:
    """Validate u and convert one-hot rows to integer labels.

    Returns int64 labels (n,) or float32 (n, m).
    """
    if u.ndim == 2 and u.shape[1] == 1:
        u = u[:, 0]
    if u.ndim == 1:
        if np.issubdtype(u.dtype, np.integer) or np.issubdtype(u.dtype, np.bool_):
            labels = u.astype(np.int64)
        else:
            if not np.all(np.isfinite(u)):
                raise UserError(f"{name}: u contains NaN or inf")
            if not np.all(u == np.round(u)):
                raise UserError(f"{name}: u is 1-D but not integer labels (non-integer values such as {u[u != np.round(u)][0]})")
            labels = u.astype(np.int64)
        if labels.min() < 0:
            raise UserError(f"{name}: u has negative labels (min {labels.min()}); labels must be 0, 1, 2, ...")
        return labels
    if u.ndim == 2:
        if not np.all(np.isfinite(u)):
            raise UserError(f"{name}: u contains NaN or inf")
        if looks_one_hot(u):
            return u.argmax(1).astype(np.int64)
        return u.astype(np.float32)
    raise UserError(f"{name}: u must have shape (n,) or (n, m), got {u.shape}")


def validate(x: np.ndarray, u: np.ndarray, s: np.ndarray | None, name: str) -> None:
    if x.ndim != 2:
        raise UserError(f"{name}: x must have shape (n, d), got {x.shape}")
    if x.shape[0] == 0:
        raise UserError(f"{name}: the data set is empty")
    if not np.issubdtype(x.dtype, np.number):
        raise UserError(f"{name}: x must be numeric, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise UserError(f"{name}: x contains NaN or inf ({int((~np.isfinite(x)).sum())} entries)")
    if u.shape[0] != x.shape[0]:
        raise UserError(f"{name}: u has {u.shape[0]} rows but x has {x.shape[0]}")
    if s is not None:
        if s.ndim != 2 or s.shape[0] != x.shape[0]:
            raise UserError(f"{name}: s must have shape ({x.shape[0]}, k), got {s.shape}")
        if not np.all(np.isfinite(s)):
            raise UserError(f"{name}: s contains NaN or inf")


def make_dataset(
    x: np.ndarray,
    u: np.ndarray,
    s: np.ndarray | None = None,
    true_log_likelihood: np.ndarray | None = None,
    name: str = "<memory>",
) -> Dataset:
    """Validate arrays and build a :class:`Dataset` (raises :class:`UserError`)."""
    x = np.asarray(x)
    u = np.asarray(u)
    validate(x, u, s, name)
    return Dataset(
        x=x.astype(np.float32),
        u=normalize_aux(u, name),
        s=None if s is None else np.asarray(s, dtype=np.float32),
        true_log_likelihood=true_log_likelihood,
        source=name,
        u_was_one_hot=looks_one_hot(u),
    )


def load_npz(path: str | Path) -> Dataset:
    """Load and validate a data file; every problem becomes one :class:`UserError`."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({exc})") from None
    for key in ("x", "u"):
        if key not in arrays:
            raise UserError(f"{path}: missing array {key!r} (found {sorted(arrays) or 'none'})")
    return make_dataset(arrays["x"], arrays["u"], arrays.get("s"), arrays.get("true_log_likelihood"), str(path))


def aux_spec(u: np.ndarray) -> AuxSpec:
    """The prior input a data set calls for."""
    if u.ndim == 1:
        return AuxSpec("labels", n_labels=int(u.max()) + 1)
    return AuxSpec("continuous", aux_dim=u.shape[1])


def check_aux(u: np.ndarray, spec: AuxSpec, name: str) -> None:
    """Raise :class:`UserError` if u does not fit a trained model's prior."""
    if spec.kind == "labels":
        if u.ndim != 1:
            raise UserError(f"{name}: the model was trained on integer labels u, got u of shape {u.shape}")
        if u.max() >= spec.n_labels:
            unseen = sorted(set(np.unique(u[u >= spec.n_labels]).tolist()))[:5]
            raise UserError(f"{name}: u has labels unseen in training {unseen} (the model knows 0..{spec.n_labels - 1})")
    elif u.ndim != 2 or u.shape[1] != spec.aux_dim:
        raise UserError(f"{name}: the model expects u of shape (n, {spec.aux_dim}), got {u.shape}")


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split into (train, validation) row indices."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
