"""Data sets as tensors: loading and validating user files, auxiliary variables, splits.

A data file is an ``.npz`` with ``x`` (n, d) floats, ``u`` integer labels (n,)
or floats (n, m), and optionally ``s`` (n, k) true sources and
``true_log_likelihood`` (n,) (written by the synthetic generator).
"""

from __future__ import annotations

import math
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError, param


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


@dataclass(frozen=True)
class Dataset:
    """``x: (n, d)`` float32, ``u: (n,)`` int64 labels or ``(n, m)`` float32 (continuous), ``s: (n, k)`` or None.

    Optional descriptions used by density estimation:
    ``entropy``: the true differential entropy of x (nats), when known;
    ``dequantize``: bin width of discrete x (uniform noise U(0, width) is added in
    training, fresh per batch, and in evaluation, with a fixed seed), 0 for continuous x;
    ``bounds``: (lo, hi) range of the dequantised x, mapped to [0, 1) by a fixed affine map;
    ``image_shape``: (C, H, W) when each row of x is a flattened image.

    Frozen: derive a changed data set with :func:`dataclasses.replace`.
    """

    x: np.ndarray
    u: np.ndarray
    s: np.ndarray | None = None
    true_log_likelihood: np.ndarray | None = None
    source: str = "<memory>"
    u_was_one_hot: bool = False
    entropy: float | None = None
    dequantize: float | np.ndarray = 0.0
    bounds: tuple[float, float] | None = None
    image_shape: tuple[int, int, int] | None = None
    layout: dict = field(default_factory=dict)  # how a file was read: {"u_cols": K} or {"levels": K}; see load_data

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def dim(self) -> int:
        return self.x.shape[1]


@dataclass
class Standardizer:
    """Per-dimension affine map x -> (x - mean) / std, remembered in the run.

    Statistics and the map are computed in float64, so x scaled by 1e-30 or 1e30 gives
    the same standardised data as x (float32 would underflow or overflow the variance).
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        """Mean and standard deviation of ``x: (n, d)``, in float64 (exact through config.json)."""
        x = np.asarray(x, dtype=np.float64)
        std = x.std(0)
        return cls(x.mean(0), np.where(std > 0, std, 1.0))

    @classmethod
    def unit_range(cls, lo: float, hi: float, dim: int) -> Standardizer:
        """The fixed map x -> (x - lo) / (hi - lo) onto [0, 1), for bounded (dequantised) data."""
        return cls(np.full(dim, float(lo)), np.full(dim, float(hi - lo)))

    def __call__(self, x: np.ndarray, name: str = "x") -> np.ndarray:
        """``x: (n, d)`` in standardised units, float32; :class:`UserError` if that overflows float32."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.std
        if not np.all(np.abs(z) < np.finfo(np.float32).max):
            raise UserError(f"{name}: x is beyond float32 in the run's standardised units (far outside its training data)")
        return z.astype(np.float32)

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

    Returns int64 labels (n,) or float32 (n, m). Integers (n,) or (n, 1) and integer-valued
    floats (n,) are labels; a float column (n, 1), or floats (n,) that are not all integers,
    is one continuous auxiliary variable (a time stamp), returned as (n, 1).
    """
    integer_typed = np.issubdtype(u.dtype, np.integer) or np.issubdtype(u.dtype, np.bool_)
    if u.ndim == 2 and u.shape[1] == 1 and integer_typed:
        u = u[:, 0]
    if u.ndim == 1:
        if integer_typed:
            if u.size and u.max() > len(u):  # also keeps uint64 beyond int64 from wrapping round
                raise UserError(f"{name}: u has label {u.max()} but only {len(u)} rows; labels must be 0, 1, 2, ...")
            labels = u.astype(np.int64)
        else:
            if not np.all(np.isfinite(u)):
                raise UserError(f"{name}: u contains NaN or inf")
            if not np.all(u == np.round(u)):
                return u[:, None].astype(np.float32)
            if u.size and (u.min() < 0 or u.max() > len(u)):  # checked before the cast, which would overflow
                raise UserError(f"{name}: u has labels outside 0..{len(u)} (min {u.min():g}, max {u.max():g}); labels must be 0, 1, 2, ...")
            labels = u.astype(np.int64)
        if labels.min() < 0:
            raise UserError(f"{name}: u has negative labels (min {labels.min()}); labels must be 0, 1, 2, ...")
        return labels
    if u.ndim == 2:
        if u.shape[1] == 0:
            raise UserError(f"{name}: u has no columns (shape {u.shape}); give labels (n,) or floats (n, m)")
        with np.errstate(over="ignore", invalid="ignore"):
            if not np.all(np.isfinite(u.astype(np.float32))):
                raise UserError(f"{name}: u contains NaN or inf, or values beyond float32")
        if looks_one_hot(u):
            return u.argmax(1).astype(np.int64)
        return u.astype(np.float32)
    raise UserError(f"{name}: u must have shape (n,) or (n, m), got {u.shape}")


def is_real_numeric(a: np.ndarray) -> bool:
    """Integers, floats or booleans (not complex, strings or objects)."""
    return bool(np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating) or a.dtype == np.bool_)


def validate(x: np.ndarray, u: np.ndarray, s: np.ndarray | None, name: str, ll: np.ndarray | None = None) -> None:
    """Raise :class:`UserError` naming the file and the problem for any malformed array."""
    if x.ndim != 2:
        raise UserError(f"{name}: x must have shape (n, d), got {x.shape}")
    if x.shape[0] == 0:
        raise UserError(f"{name}: the data set is empty")
    if x.shape[1] == 0:
        raise UserError(f"{name}: x has no columns (shape {x.shape})")
    if not is_real_numeric(x):
        raise UserError(f"{name}: x must be real numbers, got dtype {x.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        bad = int((~np.isfinite(x.astype(np.float32))).sum())
    if bad:
        raise UserError(f"{name}: x contains NaN or inf, or values beyond float32 ({bad} entries)")
    if u.ndim == 0 or u.shape[0] != x.shape[0]:
        raise UserError(f"{name}: u has {u.shape[0] if u.ndim else 0} rows but x has {x.shape[0]}")
    if not is_real_numeric(u):
        raise UserError(f"{name}: u must be numbers (integer labels or floats), got dtype {u.dtype}")
    if s is not None:
        if s.ndim != 2 or s.shape[0] != x.shape[0]:
            raise UserError(f"{name}: s must have shape ({x.shape[0]}, k), got {s.shape}")
        if not is_real_numeric(s):
            raise UserError(f"{name}: s must be finite real numbers, got dtype {s.dtype}")
        with np.errstate(over="ignore", invalid="ignore"):
            if not np.all(np.isfinite(s.astype(np.float32))):
                raise UserError(f"{name}: s contains NaN or inf, or values beyond float32")
    if ll is not None and (ll.shape != (x.shape[0],) or not is_real_numeric(ll)):
        raise UserError(f"{name}: true_log_likelihood must be {x.shape[0]} numbers, got shape {ll.shape} ({ll.dtype})")


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
    s = None if s is None else np.asarray(s)
    true_log_likelihood = None if true_log_likelihood is None else np.asarray(true_log_likelihood)
    validate(x, u, s, name, true_log_likelihood)
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
    return dataset_from_arrays(read_npz(path), str(path))


def dataset_from_arrays(arrays: dict[str, np.ndarray], name: str) -> Dataset:
    """A :class:`Dataset` from the arrays of a data file (``x``, ``u``, optionally ``s``, ``true_log_likelihood``)."""
    return make_dataset(arrays["x"], arrays["u"], arrays.get("s"), arrays.get("true_log_likelihood"), name)


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` data file, which must hold ``x`` and ``u`` (:class:`UserError` otherwise)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_file():
        with open(path, "rb") as f:
            magic = f.read(6)
        if not magic.startswith((b"PK", b"\x93NUMPY")):  # numpy would call anything else "pickled data"
            raise UserError(f"{path}: not an .npz file (it does not start like a zip archive)")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise UserError(f"{path}: a single .npy array, not an .npz archive with x and u")
        with archive:
            check_npz_sizes(archive, path)
            arrays = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError, RuntimeError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({exc})") from None
    except MemoryError:
        raise UserError(f"{path}: its arrays do not fit in this machine's memory") from None
    for key in ("x", "u"):
        if key not in arrays:
            raise UserError(f"{path}: missing array {key!r} (found {sorted(arrays) or 'none'})")
    return arrays


def check_npz_sizes(archive: np.lib.npyio.NpzFile, path: Path) -> None:
    """Refuse an array whose header claims more bytes than its archive member holds (before allocating it)."""
    for info in archive.zip.infolist():
        with archive.zip.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version not in ((1, 0), (2, 0)):
                continue  # read_array reports what it cannot read
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(member)
            claimed = math.prod(shape) * dtype.itemsize
            if not dtype.hasobject and claimed > info.file_size:
                raise UserError(f"{path}: array {info.filename} claims shape {shape} ({claimed} bytes) but holds {info.file_size} bytes")



def load_csv(path: str | Path, u_cols: int = 0) -> Dataset:
    """A comma-separated file of floats, one sample per row, no header.

    The last ``u_cols`` columns are u: one integer-valued column is labels, one column
    of other numbers a continuous u (n, 1), several columns one-hot labels or continuous
    u (n, m). With ``u_cols = 0``, u = 0 for every row (a single label).
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": make_dataset says it is empty
            table = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError:
        raise UserError(f"{path}: {first_csv_problem(path)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV file ({exc})") from None
    if u_cols < 0 or u_cols >= table.shape[1]:
        raise UserError(f"{path}: {param('u_cols')} {u_cols} leaves no x columns ({table.shape[1]} columns in the file)")
    if u_cols == 0:
        return make_dataset(table, np.zeros(table.shape[0], dtype=np.int64), name=str(path))
    u = table[:, -u_cols:]
    return make_dataset(table[:, :-u_cols], u[:, 0] if u_cols == 1 else u, name=str(path))


def first_csv_problem(path: Path) -> str:
    """Describe the first line that keeps a CSV from being a rectangular table of floats."""
    width = None
    with open(path, errors="replace") as f:  # bytes that are not text become U+FFFD, which is not a float
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            cells = line.strip().split(",")
            for cell in cells:
                try:
                    float(cell)
                except ValueError:
                    kind = "a header or text" if number == 1 else "a non-number"
                    text = cell.strip()[:30]
                    return f"line {number}: {text!r} is not a float ({kind}; the CSV must hold floats only, no header)"
            if width is not None and len(cells) != width:
                return f"line {number}: {len(cells)} columns, but earlier rows have {width} (ragged rows)"
            width = len(cells)
    return "not a rectangular table of floats"


def aux_spec(u: np.ndarray, name: str = "<memory>") -> AuxSpec:
    """The prior input a data set calls for (labels must be 0..K-1 with K at most the number of rows)."""
    if u.ndim == 1:
        n_labels = int(u.max()) + 1
        if n_labels > len(u):
            raise UserError(f"{name}: u has label {n_labels - 1} but only {len(u)} rows; labels must be 0, 1, 2, ...")
        return AuxSpec("labels", n_labels=n_labels)
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


def validation_rows(n: int, val_fraction: float) -> int:
    """How many of ``n`` rows :func:`split_indices` holds out for validation."""
    return round(n * val_fraction)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split into (train, validation) row indices."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = validation_rows(n, val_fraction)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
