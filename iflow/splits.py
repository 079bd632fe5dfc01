"""Which rows ``eval`` and ``encode`` read: the run's own training or validation rows, all rows,
or a built-in set's test split.

A run remembers how many rows it trained on and a fingerprint of them (``config.json``,
``training_data``), and its train config holds the split's seed and fraction, so the
validation rows of a user's file can be found again, and refused on any other file. It also
records how the file was read (``--u-cols``, ``--levels``), so they need not be repeated.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .data.builtin import is_builtin, load_data
from .data.dataset import Dataset
from .errors import UserError, param
from .training.checkpoint import data_fingerprint
from .training.trainer import split_for_training

if TYPE_CHECKING:
    from .runs import Run

SPLITS = ("train", "val", "all", "test")
IDENTITY = ("rows", "fingerprint")  # the keys of a training-data record that say which data it was


def describe_training_data(data: Dataset) -> dict:
    """What a run stores to recognise and re-read its training data: ``{"rows", "fingerprint"}``,
    and ``"layout"`` when the file needed read options (``Dataset.layout``)."""
    record = dict(zip(IDENTITY, (len(data), data_fingerprint(data.x, data.u)), strict=True))
    return {**record, "layout": data.layout} if data.layout else record


def read_options(spec: str, run: Run, u_cols: int | None, levels: int | None) -> tuple[int, int | None]:
    """``(u_cols, levels)`` for reading ``spec``: those given, else those the run's training file was read with,
    where they apply to ``spec`` (``u_cols`` to a CSV, ``levels`` to an .npz)."""
    recorded = (run.training_data or {}).get("layout", {})
    suffix = Path(spec).suffix.lower()
    if u_cols is None:
        u_cols = recorded.get("u_cols", 0) if suffix == ".csv" else 0
    if levels is None and suffix == ".npz" and not is_builtin(spec):
        levels = recorded.get("levels")
    return u_cols, levels


def subset(data: Dataset, rows: np.ndarray, label: str) -> Dataset:
    """The ``rows`` of ``data`` (every per-row array cut alike); ``label`` is added to its name."""
    cut = {name: None if getattr(data, name) is None else getattr(data, name)[rows]
           for name in ("x", "u", "s", "true_log_likelihood")}  # fmt: skip
    return replace(data, **cut, source=f"{data.source} ({label})")


def training_rows(run: Run, data: Dataset, split: str) -> Dataset:
    """The rows of the run's own training data in ``split``: ``"train"`` or ``"val"`` (the held-out rows)."""
    record = describe_training_data(data)
    if run.training_data is None:
        raise UserError(f"{param('split')} {split}: the run does not record its training data (trained by an older iflow)")
    if {key: run.training_data[key] for key in IDENTITY} != {key: record[key] for key in IDENTITY}:
        raise UserError(
            f"{data.source}: {param('split')} {split} needs the data the run was trained on "
            f"({run.training_data['rows']} rows), and this is other data; use {param('split')} all"
        )
    train_idx, val_idx = split_for_training(data, run.train_config)
    return subset(data, train_idx if split == "train" else val_idx, f"{split} rows")


def load_split(
    spec: str, run: Run, split: str | None = None, u_cols: int | None = None, levels: int | None = None
) -> Dataset:
    """The rows of ``spec`` in ``split``; by default a built-in set's test split, or all rows of a file.

    ``u_cols`` and ``levels`` say how to read a file (see :func:`~iflow.data.builtin.load_data`);
    None: as the run's training file was read (:func:`read_options`).
    """
    builtin = is_builtin(spec)
    split = split or ("test" if builtin else "all")
    if split not in SPLITS:
        raise UserError(f"unknown {param('split')} {split!r}; choose from {', '.join(SPLITS)}")
    if split == "test":
        if not builtin:
            raise UserError(f"{spec}: {param('split')} test is for built-in sets; a file's held-out rows are {param('split')} val")
        return load_data(spec, "test")
    data = load_data(spec, "train", *read_options(spec, run, u_cols, levels))
    return data if split == "all" else training_rows(run, data, split)
