"""Atomic writes: a file appears whole or not at all, an old version survives a failed write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iflow.errors import UserError
from iflow.files import atomic_write


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    atomic_write(path, lambda f: f.write(b"old"))

    def half_then_crash(f) -> None:
        f.write(b"new but incomplete")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(path, half_then_crash)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "x", lambda f: f.write(b"1"))
    finally:
        os.umask(old)
    assert (tmp_path / "x").stat().st_mode & 0o777 == 0o644


def test_an_unwritable_place_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UserError, match="cannot write"):
        atomic_write(tmp_path / "file" / "x.npz", lambda f: f.write(b"1"))


def test_to_json_writes_non_finite_numbers_as_null():
    import json
    import math

    from iflow.files import to_json

    text = to_json({"a": math.nan, "b": [1.5, -math.inf], "c": {"d": math.inf, "e": "x"}})
    assert json.loads(text) == {"a": None, "b": [1.5, None], "c": {"d": None, "e": "x"}}
