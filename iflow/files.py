"""Atomic file writing: every file iflow writes appears whole or not at all."""

from __future__ import annotations

import json
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
    :func:`remove_stale_temporaries`), never a truncated ``path``. Failing to
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


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files a killed :func:`atomic_write` left in ``directory``; return them."""
    stale = [p for p in Path(directory).glob(f".*{TMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_json(path: Path, obj: dict) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, allow_nan=True).encode() + b"\n"))


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Atomically write an ``.npz`` (the name is kept exactly as given)."""
    atomic_write(Path(path), lambda f: np.savez(f, **arrays))
