"""Run directories: only a folder iflow marked as a run is ever resumed into, overwritten or cleared,
and clearing one removes only the files iflow writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from iflow.cli import main
from iflow.errors import UserError
from iflow.rundir import (
    MARKER,
    RUN_FILES,
    clear_run_dir,
    discard_if_unused,
    is_run_dir,
    prepare_run_dir,
    remove_iflow_temporaries,
)

TINY = ["--epochs", "1", "--batch-size", "32", "--flow", "realnvp", "--depth", "1", "--hidden", "8", "--prior", "gauss"]


@pytest.fixture(scope="module")
def data_and_run(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("rundir")
    rng = np.random.default_rng(0)
    np.savez(folder / "d.npz", x=rng.normal(size=(200, 3)), u=np.arange(200) % 4, s=rng.normal(size=(200, 3)))
    assert main(["train", "--data", str(folder / "d.npz"), "--out", str(folder / "run"), *TINY]) == 0
    return folder / "d.npz", folder / "run"


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def notes_folder(root: Path) -> Path:
    """A folder of a user's own files, some with the names iflow writes into runs."""
    notes = root / "notes"
    (notes / "figures").mkdir(parents=True)
    (notes / "thesis.txt").write_text("years of work")
    (notes / "model.pt").write_bytes(b"someone else's model")
    (notes / "figures" / "training.png").write_bytes(b"a user's figure")
    (notes / ".draft.tmp").write_text("a user's temporary file")
    return notes


def commands_at(notes: Path, data: Path, run: Path) -> list[list[str]]:
    """Every command, pointed at ``notes`` wherever it takes a folder."""
    train = ["train", "--data", str(data), "--out", str(notes), *TINY]
    return [
        train, [*train, "--overwrite"], [*train, "--resume"], [*train, "--overwrite", "--resume"],
        ["train", "--data", str(notes / "thesis.txt"), "--out", str(notes), "--overwrite", *TINY],
        ["encode", "--run", str(notes), "--data", str(data), "--out", str(notes.parent / "z.npz")],
        ["eval", "--run", str(notes), "--data", str(data)],
        ["sample", "--run", str(notes), "--u", "0", "--n", "5", "--out", str(notes.parent / "x.npz")],
        ["consistency", str(notes), str(run), "--data", str(data)],
        ["demo", "--out", str(notes)], ["demo", "--out", str(notes), "--overwrite"],
    ]  # fmt: skip


def test_files_of_a_folder_that_is_not_a_run_survive_every_command(data_and_run, tmp_path, capsys) -> None:
    data, run = data_and_run
    notes = notes_folder(tmp_path)
    before = files_of(notes)
    for argv in commands_at(notes, data, run):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("iflow: error: "), (argv, err)
        assert files_of(notes) == before, f"{argv} changed a folder that is not a run"


def test_overwrite_of_a_non_run_folder_names_the_reason(data_and_run, tmp_path, capsys) -> None:
    data, _ = data_and_run
    notes = notes_folder(tmp_path)
    assert main(["train", "--data", str(data), "--out", str(notes), "--overwrite", *TINY]) == 2
    assert "not an iflow run directory" in capsys.readouterr().err


def test_overwrite_keeps_the_data_file_and_user_files_in_a_run_directory(data_and_run, tmp_path, capsys) -> None:
    data, _ = data_and_run
    proj = tmp_path / "proj"
    assert main(["train", "--data", str(data), "--out", str(proj), *TINY]) == 0
    assert is_run_dir(proj)
    (proj / "d.npz").write_bytes(data.read_bytes())  # the data kept inside the run, then trained on again
    (proj / "notes.txt").write_text("mine")
    old_weights = (proj / "model.pt").stat().st_mtime_ns
    assert main(["train", "--data", str(proj / "d.npz"), "--out", str(proj), "--overwrite", *TINY, "--seed", "3"]) == 0
    assert (proj / "d.npz").read_bytes() == data.read_bytes() and (proj / "notes.txt").read_text() == "mine"
    assert (proj / "model.pt").stat().st_mtime_ns != old_weights


def test_a_folder_with_only_data_in_it_is_not_a_run(tmp_path, capsys) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    np.savez(proj / "d.npz", x=np.random.default_rng(1).normal(size=(200, 3)), u=np.arange(200) % 4)
    with pytest.raises(UserError, match="not an iflow run directory"):
        prepare_run_dir(proj, overwrite=True)
    assert sorted(p.name for p in proj.iterdir()) == ["d.npz"]


def test_clearing_a_run_removes_only_what_iflow_wrote(data_and_run, tmp_path) -> None:
    import shutil

    _, run = data_and_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "figures" / "mine.png").write_bytes(b"mine")
    (copy / "notes.txt").write_text("mine")
    (copy / ".config.json.abc.tmp").write_text("a stale temporary of iflow's")
    clear_run_dir(copy)
    assert sorted(files_of(copy)) == [MARKER, "figures/mine.png", "notes.txt"]


def test_a_new_run_directory_is_marked_and_a_failed_run_leaves_nothing(tmp_path) -> None:
    out = tmp_path / "a" / "run"
    assert prepare_run_dir(out, overwrite=False) is False
    assert is_run_dir(out) and json.loads((out / MARKER).read_text())["created"] is True
    discard_if_unused(out)
    assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare_run_dir(empty, overwrite=False)
    discard_if_unused(empty)
    assert empty.is_dir() and not any(empty.iterdir()), "a folder the user made stays, emptied of the marker only"


def test_resume_and_overwrite_of_a_run(data_and_run, tmp_path, capsys) -> None:
    import shutil

    _, run = data_and_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    with pytest.raises(UserError, match="--overwrite"):
        prepare_run_dir(copy, overwrite=False, resume=False, resumable=True)
    with pytest.raises(UserError, match="the run is complete"):
        prepare_run_dir(copy, overwrite=False, resume=True)
    assert prepare_run_dir(copy, overwrite=True) is False
    assert sorted(files_of(copy)) == [MARKER]


def test_a_folder_holding_a_run_is_cleared_with_it(tmp_path) -> None:
    """The demo's layout: DIR is a run directory holding the run DIR/run."""
    demo = tmp_path / "demo"
    prepare_run_dir(demo, overwrite=False)
    prepare_run_dir(demo / "run", overwrite=True)
    (demo / "run" / "model.pt").write_bytes(b"weights")
    (demo / "run" / "figures").mkdir()
    (demo / "run" / "figures" / "sources.png").write_bytes(b"png")
    with pytest.raises(UserError, match="--overwrite"):
        prepare_run_dir(demo, overwrite=False)
    prepare_run_dir(demo, overwrite=True)
    assert sorted(files_of(demo)) == [MARKER]


def test_only_the_temporaries_of_iflow_files_are_removed(tmp_path) -> None:
    (tmp_path / ".checkpoint.pt.abc123.tmp").write_bytes(b"half")
    (tmp_path / ".thesis.txt.abc123.tmp").write_bytes(b"the user's")
    (tmp_path / "model.pt").write_bytes(b"whole")
    remove_iflow_temporaries(tmp_path, RUN_FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".thesis.txt.abc123.tmp", "model.pt"]
