"""Bad input: every case gives exit status 2, one line ``iflow: error: ...`` naming the problem
and the file, no traceback, and leaves the file system exactly as it was.

One row per case in ``CASES``; a row names the command line (``{d}``: the case's
own folder, ``{run}``: a trained run, ``{good}``: a valid data file), the files
to create first, and the fragments the message must contain.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
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
from iflow.rundir import prepare_run_dir

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


def edit_config(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        config = json.loads((run / "config.json").read_text())
        change(config)
        (run / "config.json").write_text(json.dumps(config))

    return edit


def set_in(*keys_and_value) -> Callable[[dict], None]:
    *keys, value = keys_and_value

    def change(config: dict) -> None:
        for key in keys[:-1]:
            config = config[key]
        config[keys[-1]] = value

    return change


def write_file(name: str, content: bytes) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        (run / name).write_bytes(content)

    return edit


def edit_state(change: Callable[[dict], object]) -> Callable[[Path], None]:
    """Replace model.pt's state dict by ``change(state_dict)``."""

    def edit(run: Path) -> None:
        checkpoint = torch.load(run / "model.pt", weights_only=True)
        torch.save({**checkpoint, "state_dict": change(checkpoint["state_dict"])}, run / "model.pt")

    return edit


def poisoned(state: dict) -> dict:
    first = next(k for k, v in state.items() if torch.is_floating_point(v))
    return {**state, first: torch.full_like(state[first], float("nan"))}


class RunsCode:
    """Unpickling this runs a command (a crafted file); the witness file shows whether it ran."""

    def __init__(self, witness: str):
        self.witness = witness

    def __reduce__(self):
        return os.system, (f"touch {self.witness}",)


def run_dir_with_checkpoint(content: Callable[[Path], object]) -> Callable[[Path, Path], None]:
    """A killed run's directory (marked, no model yet) holding ``checkpoint.pt`` = ``content(d)``."""

    def make(d: Path, run: Path) -> None:
        prepare_run_dir(d / "victim", overwrite=False)
        value = content(d)
        if isinstance(value, bytes):
            (d / "victim" / "checkpoint.pt").write_bytes(value)
        else:
            torch.save(value, d / "victim" / "checkpoint.pt")

    return make


def notes(d: Path, run: Path) -> None:
    """A folder of the user's own, with the data file beside a thesis."""
    (d / "notes").mkdir()
    (d / "notes" / "thesis.txt").write_text("years of work")
    np.savez(d / "notes" / "d.npz", **good_arrays())


def huge_header(d: Path, run: Path) -> None:
    """An .npz whose x header claims 10^12 x 3 floats but holds a few."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 3)})
    with zipfile.ZipFile(d / "bad.npz", "w") as archive:
        archive.writestr("x.npy", header.getvalue() + bytes(240))
        buffer = io.BytesIO()
        np.save(buffer, np.arange(N) % LABELS)
        archive.writestr("u.npy", buffer.getvalue())


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
    Case("x of rank 3 without levels", TRAIN_BAD, ("bad.npz", "x holds images", "--levels K"), npz("bad.npz", x=np.ones((N, DIM, 2)))),
    Case("x of rank 5", TRAIN_BAD, ("bad.npz", "x must have shape (n, d)"), npz("bad.npz", x=np.ones((N, 1, 1, DIM, 2)))),
    Case("images beyond their levels", TRAIN_BAD + " --levels 2", ("bad.npz", "outside 0..1"), npz("bad.npz", x=np.full((N, 4, 4), 3))),
    Case("levels for a CSV", "train --data {d}/p.csv --out {d}/new_run --levels 4", ("p.csv", "--levels is for an .npz of images"),
         raw("p.csv", b"1,2\n3,4\n")),
    Case("x complex", TRAIN_BAD, ("bad.npz", "real numbers"), npz("bad.npz", x=np.ones((N, DIM), dtype=complex))),
    Case("u rows differ from x", TRAIN_BAD, ("bad.npz", "u has 10 rows but x has"), npz("bad.npz", u=np.zeros(10, dtype=int))),
    Case("u negative labels", TRAIN_BAD, ("bad.npz", "negative labels"), npz("bad.npz", u=ROWS % 3 - 1)),
    Case("u continuous with NaN", TRAIN_BAD, ("bad.npz", "NaN or inf"), npz("bad.npz", u=np.where(ROWS == 3, np.nan, ROWS * 0.5))),
    Case("u-cols on an npz", TRAIN_GOOD + " --u-cols 1", ("--u-cols", "CSV")),
    Case("sample a label model at a non-integer u", "sample --run {run} --u 0.5 --n 5 --out {d}/x.npz", ("--u 0.5", "integer labels")),
    Case("sample labels not one per draw", "sample --run {run} --u 1,2 --n 5 --out {d}/x.npz", ("--u", "2 labels for 5 draws")),
    Case("sample --u not a number", "sample --run {run} --u soon --n 5 --out {d}/x.npz", ("--u", "'soon'")),
    Case("sample --u without --n", "sample --run {run} --u 1 --out {d}/x.npz", ("--n N", "required")),
    Case("sample --u-file without u", "sample --run {run} --u-file {d}/c.npz --out {d}/x.npz", ("c.npz", "missing array 'u'"),
         npz("c.npz", u=None)),
    Case("params at an unseen label", "params --run {run} --u-file {d}/c.npz --out {d}/l.npz", ("--u", "unknown label"),
         npz("c.npz", u=np.array([0, 99]))),
    Case("sample --u-file rows differ from --n", "sample --run {run} --u-file {d}/c.npz --n 3 --out {d}/x.npz",
         ("240 labels for 3 draws",), npz("c.npz")),
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
    Case("existing folder that is not a run", TRAIN_GOOD, ("new_run", "not an iflow run directory"), existing_run),
    Case("existing run dir without --overwrite", "train --data {good} --out {d}/run " + " ".join(TINY), ("run", "--overwrite", "--resume"),
         copy_run(lambda r: None)),
    Case("run dir path is a file", "train --data {good} --out {good} " + " ".join(TINY), ("exists and is not a directory",)),
    Case("unwritable run dir", "train --data {good} --out /proc/iflow-test-run " + " ".join(TINY), ("/proc/iflow-test-run", "cannot create")),
    Case("unwritable output file", "encode --run {run} --data {good} --out /proc/iflow-z.npz", ("/proc/iflow-z.npz", "not writable")),
    Case("output folder missing", "sample --run {run} --u 0 --n 5 --out {d}/nope/x.npz", ("x.npz", "does not exist")),
    Case("output path is a folder", "data synthetic --out {d}", ("is a directory",)),
    Case("negative epochs", TRAIN_GOOD + " --epochs -1", ("--epochs", "positive integer")),
    Case("zero batch size", TRAIN_GOOD + " --batch-size 0", ("--batch-size", "positive integer")),
    Case("zero max epochs", TRAIN_GOOD + " --max-epochs 0", ("--max-epochs", "positive integer")),
    Case("a KL weight for the noisy flow", TRAIN_GOOD + " --model noisy-iflow --beta 2", ("--beta", "noisy-iflow does not use it")),
    Case("fixed budget and a cap", TRAIN_GOOD + " --epochs 2 --max-epochs 3", ("--epochs", "--max-epochs", "give one")),
    Case("prior auto on a VAE", TRAIN_GOOD + " --model ivae --prior auto", ("--prior auto", "--model ivae", "name one")),
    Case("prior auto on float u", TRAIN_BAD + " --prior auto", ("--prior auto tries student-t", "integer labels"),
         npz("bad.npz", u=np.linspace(0, 1, N).reshape(N, 1))),
    Case("zero patience", TRAIN_GOOD + " --patience 0", ("--patience", "positive integer")),
    Case("negative tolerance", TRAIN_GOOD + " --tolerance -0.1", ("--tolerance", ">= 0")),
    Case("zero time limit", TRAIN_GOOD + " --time-limit 0", ("--time-limit", "> 0")),
    Case("rate cut of 1", TRAIN_GOOD + " --rate-cut 1", ("--rate-cut", "[0, 1)")),
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
    Case("tf32 on the cpu", TRAIN_GOOD + " --precision tf32", ("--precision tf32", "CUDA devices", "--device cpu")),
    Case("bf16 without conditioner networks", "train --data {good} --out {d}/new_run --epochs 1 --batch-size 32 --model ivae --precision bf16", ("--precision bf16", "--flow")),
    Case("unknown precision", TRAIN_GOOD + " --precision fp16", ("--precision", "invalid choice")),
    Case("flow start for a baseline", "train --data {good} --out {d}/new_run --epochs 1 --batch-size 32 --model vae --start flow", ("--start flow", "--model vae")),
    Case("flow start with fewer latents", "train --data {good} --out {d}/new_run --epochs 1 --batch-size 32 --model ivae --latent-dim 2 --start flow", ("--start flow", "--latent-dim 2", "(3)")),
    Case("flow start for count data", "train --data {d}/counts.npz --out {d}/new_run --epochs 1 --batch-size 32 --model ivae --obs poisson --start flow", ("--start flow", "--obs gaussian", "poisson"), npz("counts.npz", x=np.ones((N, DIM)))),
    Case("unknown start", TRAIN_GOOD + " --start zeros", ("--start", "invalid choice")),
    Case("unknown device", "eval --run {run} --data {good} --device tpu", ("--device", "'tpu'")),
    Case("missing required option", "train --data {good}", ("--out", "required")),
    Case("unknown command", "fly", ("invalid choice",)),
    # issue 13, 1: data loss. A folder that is not a run is never resumed into, overwritten or deleted.
    Case("resume into a folder that is not a run", "train --data {good} --out {d}/notes --resume " + " ".join(TINY), ("notes", "not an iflow run directory"), notes),
    Case("overwrite a folder that is not a run", "train --data {good} --out {d}/notes --overwrite " + " ".join(TINY), ("notes", "not an iflow run directory"), notes),
    Case("overwrite and resume a folder that is not a run", "train --data {good} --out {d}/notes --overwrite --resume " + " ".join(TINY), ("not an iflow run directory",), notes),
    Case("overwrite the folder holding the data", "train --data {d}/notes/d.npz --out {d}/notes --overwrite " + " ".join(TINY), ("not an iflow run directory",), notes),
    Case("demo into a folder that is not a run", "demo --out {d}/notes", ("not an iflow run directory",), notes),
    Case("demo overwriting a folder that is not a run", "demo --out {d}/notes --overwrite", ("not an iflow run directory",), notes),
    Case("resume a complete run", "train --data {good} --out {d}/run --resume " + " ".join(TINY), ("the run is complete", "--overwrite"), copy_run(lambda r: None)),
    # 2: code execution. Checkpoints load with weights_only=True and are checked before use.
    Case("checkpoint whose pickle runs a command", "train --data {good} --out {d}/victim --resume " + " ".join(TINY), ("checkpoint.pt", "unreadable checkpoint"),
         run_dir_with_checkpoint(lambda d: {"version": 2, "model": {}, "rng": RunsCode(str(d / "code-ran"))})),
    Case("checkpoint of random bytes", "train --data {good} --out {d}/victim --resume " + " ".join(TINY), ("checkpoint.pt", "unreadable checkpoint"),
         run_dir_with_checkpoint(lambda d: bytes(range(256)))),
    Case("checkpoint that is a list", "train --data {good} --out {d}/victim --resume " + " ".join(TINY), ("checkpoint.pt", "not an iflow checkpoint"),
         run_dir_with_checkpoint(lambda d: [torch.zeros(1)])),
    Case("checkpoint of an older iflow", "train --data {good} --out {d}/victim --resume " + " ".join(TINY), ("checkpoint.pt", "older iflow"),
         run_dir_with_checkpoint(lambda d: {"version": 1, "model": {}})),
    Case("checkpoint of a newer iflow", "train --data {good} --out {d}/victim --resume " + " ".join(TINY), ("checkpoint.pt", "newer iflow"),
         run_dir_with_checkpoint(lambda d: {"version": 99, "model": {}})),
    Case("checkpoint without its states", "train --data {good} --out {d}/victim --resume " + " ".join(TINY), ("checkpoint.pt", "missing"),
         run_dir_with_checkpoint(lambda d: {"version": 2, "model": {"w": torch.zeros(1)}})),
    Case("model.pt whose pickle runs a command", "eval --run {d}/run --data {good}", ("model.pt", "unreadable weights"),
         copy_run(lambda r: torch.save({"state_dict": RunsCode(str(r.parent / "code-ran"))}, r / "model.pt"))),
    # 6: tracebacks from edited run files
    Case("config standardizer of the wrong length", "eval --run {d}/run --data {good}", ("config.json", "standardizer mean", "3 finite numbers"),
         copy_run(edit_config(set_in("standardizer", "mean", [0.0, 1.0])))),
    Case("config standardizer std zero", "eval --run {d}/run --data {good}", ("config.json", "std must be > 0"), copy_run(edit_config(set_in("standardizer", "std", [1.0, 0.0, 1.0])))),
    Case("config standardizer NaN", "eval --run {d}/run --data {good}", ("config.json", "finite numbers"), copy_run(edit_config(set_in("standardizer", "mean", [float("nan")] * 3)))),
    Case("config n_labels -1", "eval --run {d}/run --data {good}", ("config.json", "aux.n_labels", "positive integer"), copy_run(edit_config(set_in("model", "aux", "n_labels", -1)))),
    Case("config aux kind unknown", "eval --run {d}/run --data {good}", ("config.json", "aux.kind"), copy_run(edit_config(set_in("model", "aux", "kind", "weird")))),
    Case("config aux not an object", "eval --run {d}/run --data {good}", ("config.json", "aux"), copy_run(edit_config(set_in("model", "aux", 3)))),
    Case("config depth abc", "eval --run {d}/run --data {good}", ("config.json", "depth must be"), copy_run(edit_config(set_in("model", "depth", "abc")))),
    Case("config depth negative", "eval --run {d}/run --data {good}", ("config.json", "depth must be >= 1"), copy_run(edit_config(set_in("model", "depth", -2)))),
    Case("config hidden huge", "eval --run {d}/run --data {good}", ("config.json", "hidden 1000000000", "does not fit the weights"),
         copy_run(edit_config(set_in("model", "hidden", 10**9)))),
    Case("config dim a boolean", "eval --run {d}/run --data {good}", ("config.json", "dim must be"), copy_run(edit_config(set_in("model", "dim", True)))),
    Case("config tail bound negative", "eval --run {d}/run --data {good}", ("config.json", "tail_bound must be > 0"), copy_run(edit_config(set_in("model", "tail_bound", -1.0)))),
    Case("config unknown model", "eval --run {d}/run --data {good}", ("config.json", "'nope'"), copy_run(edit_config(set_in("model", "model", "nope")))),
    Case("config train not an object", "eval --run {d}/run --data {good}", ("config.json", "train"), copy_run(edit_config(set_in("train", [])))),
    Case("config train seed a string", "eval --run {d}/run --data {good}", ("config.json", "seed must be"), copy_run(edit_config(set_in("train", "seed", "one")))),
    Case("config training_data not an object", "eval --run {d}/run --data {good}", ("config.json", "training_data must hold rows"), copy_run(edit_config(set_in("training_data", True)))),
    Case("config training_data layout negative", "eval --run {d}/run --data {good}", ("config.json", "u_cols (>= 0)"), copy_run(edit_config(set_in("training_data", "layout", {"u_cols": -1})))),
    Case("config a JSON list", "eval --run {d}/run --data {good}", ("config.json", "not a JSON object"), copy_run(write_file("config.json", b"[1, 2]"))),
    Case("config not JSON", "eval --run {d}/run --data {good}", ("config.json", "unreadable run config"), copy_run(write_file("config.json", b"{model: iflow"))),
    Case("config with the byte 0xff", "eval --run {d}/run --data {good}", ("config.json", "unreadable run config"), copy_run(write_file("config.json", b"{\xff}"))),
    Case("weights state dict a list", "eval --run {d}/run --data {good}", ("model.pt", "state_dict"), copy_run(edit_state(lambda st: list(st.values())))),
    Case("weights state dict empty", "eval --run {d}/run --data {good}", ("model.pt", "state_dict"), copy_run(edit_state(lambda st: {}))),
    Case("weights holding a number", "eval --run {d}/run --data {good}", ("model.pt", "named tensors"), copy_run(edit_state(lambda st: {**st, "extra": 3}))),
    Case("weights with an extra tensor", "eval --run {d}/run --data {good}", ("model.pt", "do not fit"), copy_run(edit_state(lambda st: {**st, "extra": torch.zeros(2)}))),
    Case("weights of another shape", "eval --run {d}/run --data {good}", ("model.pt", "do not fit"),
         copy_run(edit_state(lambda st: {k: torch.zeros(*v.shape, 2) if v.ndim else v for k, v in st.items()}))),
    Case("weights NaN", "eval --run {d}/run --data {good} --json", ("model.pt", "NaN or inf"), copy_run(edit_state(poisoned))),
    Case("weights NaN at sample", "sample --run {d}/run --u 0 --n 5 --out {d}/x.npz", ("model.pt", "NaN or inf"), copy_run(edit_state(poisoned))),
    Case("train seed negative", TRAIN_GOOD + " --seed -1", ("--seed", "0..4294967295")),
    Case("train seed 2**64", TRAIN_GOOD + " --seed 18446744073709551616", ("--seed", "0..4294967295")),
    Case("sample seed negative", "sample --run {run} --u 0 --n 5 --out {d}/x.npz --seed -1", ("--seed", "0..4294967295")),
    Case("sample seed 2**64", "sample --run {run} --u 0 --n 5 --out {d}/x.npz --seed 18446744073709551616", ("--seed", "0..4294967295")),
    Case("data seed negative", "data synthetic --seed -1 --out {d}/s.npz", ("--seed", "0..4294967295")),
    Case("demo seed negative", "demo --seed -1 --out {d}/demo", ("--seed", "0..4294967295")),
    Case("sample n beyond memory", "sample --run {run} --u 0 --n 10000000000000 --out {d}/x.npz", ("10000000000000", "memory")),
    Case("npz header claiming 10^12 x 3 floats", TRAIN_BAD, ("bad.npz", "claims shape (1000000000000, 3)"), huge_header),
    Case("csv with the byte 0xff", "train --data {d}/bad.csv --out {d}/new_run " + " ".join(TINY), ("bad.csv", "line 2", "not a float"), raw("bad.csv", b"1,2,3\n\xff,2,3\n")),
    # 7: smaller
    Case("u of shape (n, 0)", TRAIN_BAD, ("bad.npz", "u has no columns"), npz("bad.npz", u=np.zeros((N, 0)))),
    Case("u labels of 1e30", TRAIN_BAD, ("bad.npz", "labels outside"), npz("bad.npz", u=np.full(N, 1e30))),
    Case("u labels beyond int64", TRAIN_BAD, ("bad.npz", "labels must be 0, 1, 2"), npz("bad.npz", u=np.full(N, 2**63 + 5, dtype=np.uint64))),
    Case("u continuous beyond float32", TRAIN_BAD, ("bad.npz", "beyond float32"), npz("bad.npz", u=np.full((N, 2), 1e300))),
    Case("u continuous NaN", TRAIN_BAD, ("bad.npz", "NaN or inf"), npz("bad.npz", u=np.where(ROWS[:, None] == 1, np.nan, 0.5) * np.ones((N, 2)))),
    Case("empty csv", "train --data {d}/bad.csv --out {d}/new_run " + " ".join(TINY), ("bad.csv", "empty"), raw("bad.csv", b"")),
    Case("csv with a header", "train --data {d}/bad.csv --out {d}/new_run " + " ".join(TINY), ("bad.csv", "header"), raw("bad.csv", b"a,b\n1,2\n")),
    Case("csv with ragged rows", "train --data {d}/bad.csv --out {d}/new_run " + " ".join(TINY), ("bad.csv", "ragged"), raw("bad.csv", b"1,2\n1,2,3\n")),
    Case("s NaN", TRAIN_BAD, ("bad.npz", "s contains NaN"), npz("bad.npz", s=np.full((N, DIM), np.nan))),
    Case("missing key x", "eval --run {run} --data {d}/bad.npz", ("bad.npz", "missing array 'x'"), npz("bad.npz", x=None)),
    Case("continuous u for a labels model", "encode --run {run} --data {d}/bad.npz --out {d}/z.npz", ("bad.npz", "integer labels"), npz("bad.npz", u=np.random.default_rng(2).normal(size=(N, 2)))),
    Case("unknown built-in data set", "train --data nope --out {d}/new_run", ("nope", "unknown data set")),
    Case("eval of a folder that is not a run", "eval --run {d}/notes --data {good}", ("notes", "missing config.json"), notes),
    Case("encode with a folder that is not a run", "encode --run {d}/notes --data {good} --out {d}/z.npz", ("notes", "missing config.json"), notes),
    Case("consistency with a folder that is not a run", "consistency {d}/notes {run} --data {good}", ("notes", "missing config.json"), notes),
    Case("consistency of one run", "consistency {run} --data {good}", ("at least two",)),
    Case("sample negative label", "sample --run {run} --u -1 --n 5 --out {d}/x.npz", ("unknown label",)),
    Case("restarts zero", TRAIN_GOOD + " --restarts 0", ("--restarts", "positive integer")),
    Case("jobs zero", TRAIN_GOOD + " --restarts 2 --jobs 0", ("--jobs", "positive integer")),
    Case("bins zero", TRAIN_GOOD + " --bins 0", ("--bins", "positive integer")),
    Case("hidden negative", TRAIN_GOOD + " --hidden -1", ("--hidden", "positive integer")),
    Case("depth not a number", TRAIN_GOOD + " --depth abc", ("--depth", "'abc'")),
    Case("iw samples zero", TRAIN_GOOD + " --iw-samples 0", ("--iw-samples", "positive integer")),
    Case("checkpoint interval nan", TRAIN_GOOD + " --checkpoint-every nan", ("--checkpoint-every", ">= 0")),
    Case("val fraction zero", TRAIN_GOOD + " --val-fraction 0", ("--val-fraction", "(0, 1)")),
    Case("threads not a number", TRAIN_GOOD + " --threads abc", ("--threads", "'abc'")),
    Case("unknown prior", TRAIN_GOOD + " --prior nope", ("--prior", "'nope'")),
    Case("sources zero", "data synthetic --sources 0 --out {d}/s.npz", ("--sources", "positive integer")),
    Case("per segment zero", "data synthetic --per-segment 0 --out {d}/s.npz", ("--per-segment", "positive integer")),
    Case("layers zero", "data synthetic --layers 0 --out {d}/s.npz", ("--layers", "positive integer")),
    Case("dim negative", "data synthetic --dim -1 --out {d}/s.npz", ("--dim", ">= 0")),
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
    assert len(CASES) >= 100
    assert len({c.name for c in CASES}) == len(CASES)


def test_real_entry_point_prints_one_line(tmp_path: Path) -> None:
    """The installed ``iflow`` program, not just ``main``: argparse and data errors, and no warning
    printed before the error (u = 1e30 and an empty CSV printed numpy's warnings first)."""
    np.savez(tmp_path / "bad.npz", **{**good_arrays(), "x": np.full((N, DIM), np.nan)})
    np.savez(tmp_path / "huge_u.npz", **{**good_arrays(), "u": np.full(N, 1e30)})
    (tmp_path / "empty.csv").write_bytes(b"")
    for argv in (["train", "--data", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "r"), "--epochs", "-2"],
                 ["train", "--data", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "r")],
                 ["train", "--data", str(tmp_path / "huge_u.npz"), "--out", str(tmp_path / "r")],
                 ["train", "--data", str(tmp_path / "empty.csv"), "--out", str(tmp_path / "r")]):  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "iflow.cli", *argv], capture_output=True, text=True, timeout=120, check=False
        )
        check_one_line_error(proc.returncode, proc.stderr, ("iflow: error:",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz", "empty.csv", "huge_u.npz"]


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


# --- fuzzing the files of a saved run: config.json and model.pt ---------------------------------

JSON_VALUES = st.sampled_from([None, True, False, -1, 0, 1, 3, 8, 10**9, 2.5, -1e300, float("nan"), "abc", "", "iflow",
                               "labels", [], [1.0, 2.0, 3.0], {}, {"kind": "labels", "n_labels": 4}])  # fmt: skip


def json_paths(obj: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a JSON object, the nested ones too."""
    paths = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            paths += [(*prefix, key), *json_paths(value, (*prefix, key))]
    return paths


def apply_edit(config: dict, path: tuple, value: object, delete: bool) -> None:
    for key in path[:-1]:
        config = config[key]
    if delete:
        del config[path[-1]]
    else:
        config[path[-1]] = value


def fuzzed_eval(run: Path, good: Path, tmp_path: Path, capsys) -> None:
    """``eval --json`` of the edited run: exit 0 with real JSON, or 2 with one error line."""
    code, out, err = run_cli(["eval", "--run", str(run), "--data", str(good), "--json"], capsys)
    assert code in (0, 2), err
    if code == 0:
        json.loads(out, parse_constant=lambda name: pytest.fail(f"eval --json printed {name}, which is not JSON"))
    else:
        check_one_line_error(code, err, ())


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_config_json_never_gives_a_traceback(data, trained_run, tmp_path_factory, capsys) -> None:
    run, good = trained_run
    copy = tmp_path_factory.mktemp("fuzz-config") / "run"
    shutil.copytree(run, copy)
    config = json.loads((copy / "config.json").read_text())
    for _ in range(data.draw(st.integers(1, 3))):
        paths = json_paths(config)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        value = json.loads(json.dumps(data.draw(JSON_VALUES)))  # a fresh copy: edits must not reach the strategy
        apply_edit(config, path, value, delete=data.draw(st.booleans()))
    (copy / "config.json").write_text(json.dumps(config))
    fuzzed_eval(copy, good, copy.parent, capsys)


TENSORS = st.sampled_from([torch.zeros(0), torch.zeros(3), torch.ones(2, 2), torch.full((4,), float("inf")),
                           torch.arange(3), torch.tensor(True), torch.zeros(1, 1, 1, dtype=torch.float64)])  # fmt: skip


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_model_pt_never_gives_a_traceback(data, trained_run, tmp_path_factory, capsys) -> None:
    run, good = trained_run
    copy = tmp_path_factory.mktemp("fuzz-weights") / "run"
    shutil.copytree(run, copy)
    checkpoint = torch.load(copy / "model.pt", weights_only=True)
    state = dict(checkpoint["state_dict"])
    kind = data.draw(st.sampled_from(["replace", "delete", "add", "top", "cut"]))
    key = data.draw(st.sampled_from(sorted(state)))
    if kind == "replace":
        state[key] = data.draw(TENSORS)
    elif kind == "delete":
        del state[key]
    elif kind == "add":
        state[data.draw(st.sampled_from(["extra", "", key + ".x"]))] = data.draw(TENSORS)
    elif kind == "top":
        checkpoint[data.draw(st.sampled_from(["model", "format_version", "state_dict"]))] = data.draw(JSON_VALUES)
    torch.save({**checkpoint, "state_dict": state} if kind != "top" else checkpoint, copy / "model.pt")
    if kind == "cut":
        content = (copy / "model.pt").read_bytes()
        (copy / "model.pt").write_bytes(content[: int(len(content) * data.draw(st.floats(0.0, 0.99)))])
    fuzzed_eval(copy, good, copy.parent, capsys)
