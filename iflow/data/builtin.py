"""From a ``--data`` spec to a :class:`~iflow.data.dataset.Dataset`: built-in sets by name, files by suffix.

Built-in sets have a fixed held-out test split, which ``iflow eval`` uses:
the 2-D densities (see :mod:`iflow.data.toy2d`) draw ``TOY_SIZES[split]`` points
with a seed per split; digits has a fixed 80/20 split. A file is one data set:
training splits off its own validation rows and ``eval`` scores the whole file.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np

from ..errors import UserError, param
from .dataset import Dataset, load_csv, make_dataset
from .images import load_npz_file
from .toy2d import DENSITIES

TOY_SIZES = {"train": 30_000, "test": 20_000}
TOY_SEEDS = {"train": 0, "test": 1}
SPLITS = ("train", "test")
BUILTIN = (*DENSITIES, "digits")


@cache
def toy_entropy(name: str) -> float:
    """The density's Monte Carlo entropy (seeded, computed once per process)."""
    return DENSITIES[name].entropy()


def load_toy(name: str, split: str) -> Dataset:
    """A seeded sample of a 2-D density; with its true log-density and entropy when they exist."""
    density = DENSITIES[name]
    x = density.sample(TOY_SIZES[split], np.random.default_rng(TOY_SEEDS[split]))
    log_p = density.log_prob(x) if density.has_density else None
    data = make_dataset(x, np.zeros(len(x), dtype=np.int64), true_log_likelihood=log_p, name=f"{name} ({split} split)")
    return replace(data, entropy=toy_entropy(name) if density.has_density else None)


def is_builtin(spec: str) -> bool:
    return spec in BUILTIN


def load_data(spec: str | Path, split: str = "train", u_cols: int = 0, levels: int | None = None) -> Dataset:
    """A built-in set's ``split`` (``"train"`` or ``"test"``), or a ``.npz`` / ``.csv`` file (all rows).

    ``u_cols``: how many trailing columns of a CSV are u (see :func:`~iflow.data.dataset.load_csv`);
    ``levels``: the number of levels of an ``.npz`` of images (see :mod:`iflow.data.images`).
    The options given are kept in ``Dataset.layout``: a run records them, so that ``eval``,
    ``encode`` and ``consistency`` read the same file the same way without repeating them.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    spec = str(spec)
    if u_cols and Path(spec).suffix.lower() != ".csv":
        raise UserError(f"{spec}: {param('u_cols')} is for CSV files (an .npz holds u as its own array)")
    if levels is not None and (is_builtin(spec) or Path(spec).suffix.lower() == ".csv"):
        raise UserError(f"{spec}: {param('levels')} is for an .npz of images")
    if spec in DENSITIES:
        return load_toy(spec, split)
    if spec == "digits":
        from .digits import load_digits

        return load_digits(split)
    path = Path(spec)
    if path.is_dir():
        raise UserError(f"{spec}: is a folder, not a data file")
    if path.suffix.lower() == ".csv":
        return replace(load_csv(path, u_cols), layout={"u_cols": u_cols} if u_cols else {})
    if path.suffix.lower() == ".npz" or path.exists():  # load_npz names what else the file is
        return replace(load_npz_file(path, levels), layout={} if levels is None else {"levels": levels})
    raise UserError(f"{spec}: unknown data set; give one of {', '.join(BUILTIN)} or a .npz or .csv file")
