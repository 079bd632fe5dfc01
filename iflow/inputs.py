"""What the command line reads from a user beside the data: conditions u to sample at, and
the warning for a data set whose u cannot make a model identifiable."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .data.dataset import AuxSpec
from .errors import UserError
from .priors import ConditionalExpFamilyPrior
from .runs import Run


def read_u_file(path: Path) -> np.ndarray:
    """The array ``u`` of an ``.npz``: one condition per draw, ``(n,)`` labels or ``(n, m)`` floats."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "u" not in archive.files:
                raise UserError(f"{path}: missing array 'u' (found {sorted(archive.files) or 'none'})")
            u = archive["u"]
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, AttributeError) as exc:
        raise UserError(f"{path}: not a readable .npz file with an array u ({exc})") from None
    if u.ndim not in (1, 2) or len(u) == 0:
        raise UserError(f"{path}: u must have shape (n,) or (n, m) with n >= 1, got {u.shape}")
    return u


def conditions_per_draw(u: int | np.ndarray, aux: AuxSpec, n: int) -> np.ndarray:
    """The condition of each of ``n`` draws, as written beside samples: ``(n,)`` labels or ``(n, aux_dim)``."""
    if aux.kind == "labels":
        return np.broadcast_to(np.asarray(u, dtype=np.int64), (n,)).copy()
    values = np.asarray(u, dtype=np.float32)
    if values.size == aux.aux_dim:  # one condition for every draw
        return np.tile(values.reshape(1, aux.aux_dim), (n, 1))
    return values.reshape(n, aux.aux_dim)


def single_label_warning(run: Run) -> str | None:
    """A warning when an identifiable model would train on one label: its prior then does not vary."""
    aux = run.model_config.aux
    if not isinstance(run.model.prior, ConditionalExpFamilyPrior) or aux.kind != "labels" or aux.n_labels != 1:
        return None
    return (
        "iflow: warning: u holds a single label, so p(z | u) does not vary and the latents are not "
        "identifiable (fine for density estimation); give u in the .npz, or --u-cols K for the last K "
        "columns of a CSV"
    )
