"""Bad input: every case gives exit status 2, one line ``iflow: error: ...`` naming the problem
and the file, no traceback, and leaves the file system exactly as it was.

One row per case in ``CASES``; a row names the command line (``{d}``: the case's
own folder, ``{run}``: a trained run, ``{good}``: a valid data file), the files
to create first, and the fragments the message must contain.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from iflow.cli import main

N, DIM, LABELS = 240, 3, 4
TINY = ["--epochs", "1", "--batch-size", "32", "--flow", "realnvp", "--depth", "1", "--hidden", "8"]


def good_arrays(n: int = N, dim: int = DIM) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x": rng.normal(size=(n, dim)).astype(np.float32),
        "u": np.arange(n) % LABELS,
        "s": rng.normal(size=(n, dim)).astype(np.float32),
    }


def npz(name: str, **changes) -> Callable[[Path, Path], None]:
    """A maker writing ``name`` with the good arrays, some replaced (or removed with None)."""

    def make(d: Path, run: Path) -> None:
        arrays = {**good_arrays(), **changes}
        np.savez(d / name, **{k: v for k, v in arrays.items() if v is not None})

    return make


def raw(name: str, content: bytes) -> Callable[[Path, Path], None]:
    def make(d: Path, run: Path) -> None:
        (d / name).write_bytes(content)

    return make


def truncated(d: Path, run: Path) -> None:
    npz("full.npz")(d, run)
    data = (d / "full.npz").read_bytes()
    (d / "bad.npz").write_bytes(data[: len(data) // 2])
    (d / "full.npz").unlink()


def npy(d: Path, run: Path) -> None:
    np.save(d / "bad.npy", good_arrays()["x"])


def copy_run(edit: Callable[[Path], None]) -> Callable[[Path, Path], None]:
    def make(d: Path, run: Path) -> None:
        shutil.copytree(run, d / "run")
        edit(d / "run")

    return make


def edit_weights(**changes) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        checkpoint = torch.load(run / "model.pt", weights_only=True)
        torch.save({**checkpoint, **changes}, run / "model.pt")

    return edit


def existing_run(d: Path, run: Path) -> None:
    (d / "new_run").mkdir()
    (d / "new_run" / "notes.txt").write_text("keep me")


@dataclass
class Case:
    name: str
    argv: str
    expect: tuple[str, ...]
    make: Callable[[Path, Path], None] | None = None


TRAIN_BAD = "train --data {d}/bad.npz --out {d}/new_run " + " ".join(TINY)
TRAIN_GOOD = "train --data {good} --out {d}/new_run " + " ".join(TINY)
ROWS = np.arange(N)

# fmt: off
CASES = [
    Case("nan in x", TRAIN_BAD, ("bad.npz", "NaN or inf"), npz("bad.npz", x=np.where(ROWS[:, None] == 5, np.nan, 1.0) * np.ones((N, DIM)))),
    Case("inf in x", TRAIN_BAD, ("bad.npz", "NaN or inf"), npz("bad.npz", x=np.full((N, DIM), np.inf))),
    Case("x beyond float32", TRAIN_BAD, ("bad.npz", "beyond float32"), npz("bad.npz", x=np.full((N, DIM), 1e300))),
    Case("x of rank 1", TRAIN_BAD, ("bad.npz", "x must have shape (n, d)"), npz("bad.npz", x=np.ones(N))),
    Case("x of rank 3", TRAIN_BAD, ("bad.npz", "x must have shape (n, d)"), npz("bad.npz", x=np.ones((N, DIM, 2)))),
    Case("x complex", TRAIN_BAD, ("bad.npz", "real numbers"), npz("bad.npz", x=np.ones((N, DIM), dtype=complex))),
    Case("u rows differ from x", TRAIN_BAD, ("bad.npz", "u has 10 rows but x has"), npz("bad.npz", u=np.zeros(10, dtype=int))),
    Case("u negative labels", TRAIN_BAD, ("bad.npz", "negative labels"), npz("bad.npz", u=ROWS % 3 - 1)),
    Case("u non-integer floats", TRAIN_BAD, ("bad.npz", "not integer labels"), npz("bad.npz", u=ROWS * 0.5)),
    Case("u strings", TRAIN_BAD, ("bad.npz", "u must be numbers"), npz("bad.npz", u=np.array(["a"] * N))),
    Case("u label far beyond rows", TRAIN_BAD, ("bad.npz", "labels must be 0, 1, 2"), npz("bad.npz", u=ROWS * 10**9)),
    Case("u unseen at encode", "encode --run {run} --data {d}/bad.npz --out {d}/z.npz", ("bad.npz", "unseen in training [99]"),
         npz("bad.npz", u=np.where(ROWS == 3, 99, ROWS % LABELS))),
    Case("s wrong rows", TRAIN_BAD, ("bad.npz", "s must have shape"), npz("bad.npz", s=np.ones((7, DIM)))),
    Case("true_log_likelihood wrong shape", TRAIN_BAD, ("bad.npz", "true_log_likelihood"),
         npz("bad.npz", true_log_likelihood=np.ones((N, 2)))),
    Case("empty data", TRAIN_BAD, ("bad.npz", "empty"), npz("bad.npz", x=np.ones((0, DIM)), u=np.zeros(0, int), s=None)),
    Case("x without columns", TRAIN_BAD, ("bad.npz", "no columns"), npz("bad.npz", x=np.ones((N, 0)))),
    Case("smaller than one batch", TRAIN_BAD, ("bad.npz", "fewer than one batch"),
         npz("bad.npz", x=np.ones((20, DIM)), u=np.arange(20) % 2, s=None)),
    Case("no validation rows", "train --data {d}/bad.npz --out {d}/new_run --batch-size 4", ("bad.npz", "no validation rows"),
         npz("bad.npz", x=np.random.default_rng(1).normal(size=(4, DIM)), u=np.zeros(4, int), s=None)),
    Case("one-dimensional x for a coupling flow", TRAIN_BAD, ("realnvp", "at least 2 dimensions"),
         npz("bad.npz", x=np.random.default_rng(1).normal(size=(N, 1)), s=None)),
    Case("missing key u", TRAIN_BAD, ("bad.npz", "missing array 'u'"), npz("bad.npz", u=None)),
    Case("missing data file", TRAIN_BAD, ("bad.npz", "no such file"), None),
    Case("data path is a folder", "train --data {d} --out {d}/new_run", ("is a folder",), None),
    Case("not an npz (text)", TRAIN_BAD, ("bad.npz", "not an .npz file"), raw("bad.npz", b"x,u\n1,2\n")),
    Case("not an npz (random bytes)", TRAIN_BAD, ("bad.npz", "not an .npz file"), raw("bad.npz", bytes(range(256)) * 8)),
    Case("a .npy, not an .npz", "train --data {d}/bad.npy --out {d}/new_run", ("bad.npy", ".npy array"), npy),
    Case("truncated npz", TRAIN_BAD, ("bad.npz", "not a readable .npz"), truncated),
    Case("pickled object array", TRAIN_BAD, ("bad.npz", "not a readable .npz"), npz("bad.npz", u=np.array([None] * N, dtype=object))),
    Case("dimension differs from run", "eval --run {run} --data {d}/bad.npz", ("bad.npz", "x has 4 dimensions", "trained on 3"),
         npz("bad.npz", x=np.ones((N, 4)))),
    Case("run directory missing", "eval --run {d}/nope --data {good}", ("nope", "no such run directory")),
    Case("run without weights", "eval --run {d}/run --data {good}", ("run", "missing model.pt"),
         copy_run(lambda r: (r / "model.pt").unlink())),
    Case("weights corrupt", "eval --run {d}/run --data {good}", ("model.pt", "unreadable weights"),
         copy_run(lambda r: (r / "model.pt").write_bytes(b"garbage"))),
    Case("weights of another model type", "eval --run {d}/run --data {good}", ("model.pt", "weights of a 'ivae' model"),
         copy_run(edit_weights(model="ivae"))),
    Case("weights of a newer format", "encode --run {d}/run --data {good} --out {d}/z.npz", ("model.pt", "newer iflow"),
         copy_run(edit_weights(format_version=99))),
    Case("existing run dir without --overwrite", TRAIN_GOOD, ("new_run", "--overwrite", "--resume"), existing_run),
    Case("run dir path is a file", "train --data {good} --out {good} " + " ".join(TINY), ("exists and is not a directory",)),
    Case("unwritable run dir", "train --data {good} --out /proc/iflow-test-run " + " ".join(TINY), ("/proc/iflow-test-run", "cannot create")),
    Case("unwritable output file", "encode --run {run} --data {good} --out /proc/iflow-z.npz", ("/proc/iflow-z.npz", "not writable")),
    Case("output folder missing", "sample --run {run} --u 0 --n 5 --out {d}/nope/x.npz", ("x.npz", "does not exist")),
    Case("output path is a folder", "data synthetic --out {d}", ("is a directory",)),
    Case("negative epochs", TRAIN_GOOD + " --epochs -1", ("--epochs", "positive integer")),
    Case("zero batch size", TRAIN_GOOD + " --batch-size 0", ("--batch-size", "positive integer")),
    Case("zero max epochs", TRAIN_GOOD + " --max-epochs 0", ("--max-epochs", "positive integer")),
    Case("fixed budget and a cap", TRAIN_GOOD + " --epochs 2 --max-epochs 3", ("--epochs", "--max-epochs", "give one")),
    Case("zero patience", TRAIN_GOOD + " --patience 0", ("--patience", "positive integer")),
    Case("negative tolerance", TRAIN_GOOD + " --tolerance -0.1", ("--tolerance", ">= 0")),
    Case("zero time limit", TRAIN_GOOD + " --time-limit 0", ("--time-limit", "> 0")),
    Case("lr zero", TRAIN_GOOD + " --lr 0", ("--lr", "> 0")),
    Case("lr negative", TRAIN_GOOD + " --lr -0.001", ("--lr", "> 0")),
    Case("lr nan", TRAIN_GOOD + " --lr nan", ("--lr", "> 0")),
    Case("lr not a number", TRAIN_GOOD + " --lr fast", ("--lr", "'fast'")),
    Case("weight decay negative", TRAIN_GOOD + " --weight-decay -1", ("--weight-decay", ">= 0")),
    Case("val fraction 1.5", TRAIN_GOOD + " --val-fraction 1.5", ("--val-fraction", "(0, 1)")),
    Case("threads zero", TRAIN_GOOD + " --threads 0", ("--threads", "positive integer")),
    Case("tail bound zero", TRAIN_GOOD + " --tail-bound 0", ("--tail-bound", "> 0")),
    Case("checkpoint interval negative", TRAIN_GOOD + " --checkpoint-every -5", ("--checkpoint-every", ">= 0")),
    Case("segments zero", "data synthetic --segments 0 --out {d}/s.npz", ("--segments", "positive integer")),
    Case("noise negative", "data synthetic --noise -1 --out {d}/s.npz", ("--noise", ">= 0")),
    Case("sample n zero", "sample --run {run} --u 0 --n 0 --out {d}/x.npz", ("--n", "positive integer")),
    Case("sample unseen label", "sample --run {run} --u 99 --n 5 --out {d}/x.npz", ("--u 99", "unknown label")),
    Case("unknown flow", TRAIN_GOOD + " --flow nope", ("--flow", "'nope'")),
    Case("linear fit without a final linear layer", TRAIN_GOOD + " --linear-fit epoch", ("--linear-fit epoch", "--flow spline")),
    Case("linear fit without the prior fit", TRAIN_GOOD + " --linear-fit epoch --prior-fit none", ("--linear-fit epoch", "--prior-fit epoch")),
    Case("unknown model", TRAIN_GOOD + " --model nope", ("--model", "'nope'")),
    Case("cuda without CUDA", TRAIN_GOOD + " --device cuda", ("--device cuda", "CUDA is not available")),
    Case("unknown device", "eval --run {run} --data {good} --device tpu", ("--device", "'tpu'")),
    Case("missing required option", "train --data {good}", ("--out", "required")),
    Case("unknown command", "fly", ("invalid choice",)),
]
# fmt: on


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny trained run and the valid data file it was trained on."""
    folder = tmp_path_factory.mktemp("shared")
    good = folder / "good.npz"
    np.savez(good, **good_arrays())
    assert main(["train", "--data", str(good), "--out", str(folder / "run"), *TINY]) == 0
    return folder / "run", good


def snapshot(*folders: Path) -> dict:
    """Every file and folder under ``folders`` with its size and modification time."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for f in folders for p in [f, *f.rglob("*")] if p.exists()}


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits itself
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def check_one_line_error(code: int, err: str, expect: tuple[str, ...]) -> None:
    lines = err.strip("\n").splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("iflow: error: "), err
    assert "Traceback" not in err
    for fragment in expect:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_line_and_leaves_nothing(case: Case, trained_run, tmp_path: Path, capsys) -> None:
    run, good = trained_run
    if "--device cuda" in case.argv and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if case.make is not None:
        case.make(tmp_path, run)
    before = snapshot(tmp_path, run.parent)
    argv = case.argv.format(d=tmp_path, run=run, good=good).split()
    code, _, err = run_cli(argv, capsys)
    check_one_line_error(code, err, case.expect)
    assert snapshot(tmp_path, run.parent) == before, "the failed command changed the file system"


def test_table_has_enough_cases() -> None:
    assert len(CASES) >= 20
    assert len({c.name for c in CASES}) == len(CASES)


def test_real_entry_point_prints_one_line(tmp_path: Path) -> None:
    """The installed ``iflow`` program, not just ``main``: argparse and data errors."""
    np.savez(tmp_path / "bad.npz", **{**good_arrays(), "x": np.full((N, DIM), np.nan)})
    for argv in (["train", "--data", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "r"), "--epochs", "-2"],
                 ["train", "--data", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "r")]):  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "iflow.cli", *argv], capture_output=True, text=True, timeout=120, check=False
        )
        check_one_line_error(proc.returncode, proc.stderr, ("iflow: error:",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]


# --- fuzzing: random malformed npz files never produce a traceback ----------------------------

SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6)
DTYPES = st.sampled_from([np.float32, np.float64, np.int64, np.int8, np.bool_, np.complex64, np.uint8, "U2"])
FLOATS = st.sampled_from([0.0, 1.0, -1.0, 2.5, np.nan, np.inf, -np.inf, 1e300, 7.0])


@st.composite
def arrays(draw) -> np.ndarray:
    dtype = draw(DTYPES)
    shape = draw(SHAPES)
    if dtype == "U2":
        return np.full(shape, draw(st.sampled_from(["a", "1", ""])), dtype="U2")
    values = np.asarray(draw(st.lists(FLOATS, min_size=1, max_size=4)))
    flat = np.resize(values, int(np.prod(shape)))
    with np.errstate(invalid="ignore", over="ignore"):
        return flat.reshape(shape).astype(dtype)


@st.composite
def npz_contents(draw) -> dict[str, np.ndarray]:
    """Mostly-plausible archives: some keys valid, others replaced, dropped or added."""
    base = good_arrays(n=draw(st.sampled_from([0, 1, 5, 40])))
    out = {}
    for key in ("x", "u", "s", "true_log_likelihood", "junk"):
        choice = draw(st.sampled_from(["keep", "random", "drop"]))
        if choice == "random":
            out[key] = draw(arrays())
        elif choice == "keep" and key in base:
            out[key] = base[key]
    return out


def write_fuzzed(path: Path, contents: dict, cut: float | None) -> None:
    np.savez(path, **contents)
    if cut is not None:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * cut)])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(contents=npz_contents(), cut=st.one_of(st.none(), st.floats(0.0, 0.99)))
def test_fuzzed_npz_never_gives_a_traceback(contents, cut, trained_run, tmp_path: Path, capsys) -> None:
    run, _ = trained_run
    path = tmp_path / "fuzz.npz"
    write_fuzzed(path, contents, cut)
    for argv in (["eval", "--run", str(run), "--data", str(path), "--json"],
                 ["encode", "--run", str(run), "--data", str(path), "--out", str(tmp_path / "z.npz")]):  # fmt: skip
        code, _, err = run_cli(argv, capsys)  # any exception other than SystemExit fails the test
        assert code in (0, 2), err
        assert "Traceback" not in err
        if code == 2:
            check_one_line_error(code, err, ())
    (tmp_path / "z.npz").unlink(missing_ok=True)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(contents=npz_contents())
def test_fuzzed_npz_training_never_gives_a_traceback(contents, tmp_path_factory, capsys) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    np.savez(folder / "fuzz.npz", **contents)
    argv = ["train", "--data", str(folder / "fuzz.npz"), "--out", str(folder / "run"), *TINY, "--batch-size", "2"]
    code, _, err = run_cli(argv, capsys)
    assert code in (0, 2), err
    if code == 2:
        check_one_line_error(code, err, ())
        assert not (folder / "run").exists()
