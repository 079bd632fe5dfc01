"""Atomic file writing: every file iflow writes appears whole or not at all."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import UserError

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through ``write(file_object)`` into a temporary file beside ``path``, then rename over it.

    A process killed mid-write leaves at most a hidden ``.NAME.*.tmp`` file (see
    :func:`iflow.rundir.remove_iflow_temporaries`), never a truncated ``path``. Failing to
    create or rename the file (unwritable folder, full disk) raises :class:`UserError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    except OSError as exc:
        raise UserError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_json(path: Path, obj: dict) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write(path, lambda f: f.write(to_json(obj, indent=2).encode() + b"\n"))


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Atomically write an ``.npz`` (the name is kept exactly as given)."""
    atomic_write(Path(path), lambda f: np.savez(f, **arrays))


def to_json(obj: object, indent: int | None = None) -> str:
    """JSON text of ``obj`` with non-finite floats written as ``null`` (JSON has no NaN or Infinity)."""
    return json.dumps(_finite(obj), indent=indent, allow_nan=False)


def _finite(obj: object) -> object:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _finite(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(value) for value in obj]
    return obj
