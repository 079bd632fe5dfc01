"""A user's own images, read as the bundled digits are.

An ``.npz`` whose ``x`` is ``(n, H, W)`` or ``(n, C, H, W)`` integer levels 0..K-1, with
K stated (an array ``levels`` in the file, or ``--levels K``), and ``u`` labels as in any
data file. Each image becomes one row of C*H*W values; the data set then says how to
read them (see :mod:`iflow.data.dequantization`): dequantise with unit bins (x + U(0, 1),
range [0, K)), map to [0, 1) by the fixed affine x / K, image shape (C, H, W), so that
``--flow glow`` builds the multi-scale Glow and ``eval`` reports dequantised bits/dim.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import UserError, param
from .dataset import Dataset, Standardizer, dataset_from_arrays, is_real_numeric, make_dataset, read_npz

IMAGE_RANKS = (3, 4)  # (n, H, W) and (n, C, H, W)


def as_images(data: Dataset, levels: int, shape: tuple[int, int, int]) -> Dataset:
    """``data`` (rows of flattened images on ``levels`` integer levels) described as images."""
    return replace(data, dequantize=1.0, bounds=(0.0, float(levels)), image_shape=tuple(shape))


def stated_levels(option: int | None, in_file: np.ndarray | None, name: str) -> int:
    """K from ``--levels`` or the file's ``levels`` array (they must agree when both are given)."""
    if in_file is not None:
        if in_file.size != 1 or not is_real_numeric(in_file) or float(in_file.ravel()[0]) != int(in_file.ravel()[0]):
            raise UserError(f"{name}: levels must be one integer (the number of grey levels), got {in_file!r}")
        found = int(in_file.ravel()[0])
        if option is not None and option != found:
            raise UserError(f"{name}: {param('levels')} {option} but the file says levels = {found}")
        option = found
    if option is None:
        raise UserError(f"{name}: x holds images; state their number of levels K (an array 'levels' in the file, "
                        f"or {param('levels')} K, e.g. 256 for 8-bit images)")  # fmt: skip
    if option < 2:
        raise UserError(f"{name}: levels must be >= 2, got {option}")
    return option


def image_dataset(images: np.ndarray, u: np.ndarray, levels: int, name: str) -> Dataset:
    """Validate ``images: (n, H, W) | (n, C, H, W)`` on levels 0..levels-1 and flatten them to rows."""
    if 0 in images.shape[1:]:
        raise UserError(f"{name}: images of shape {images.shape[1:]} have no pixels")
    if not is_real_numeric(images) or images.dtype == np.bool_:
        raise UserError(f"{name}: images must be integer levels, got dtype {images.dtype}")
    with np.errstate(invalid="ignore"):
        if not np.all(np.isfinite(images)) or np.any(images != np.round(images)):
            raise UserError(f"{name}: images must be integer levels 0..{levels - 1} (found non-integer values)")
    if images.size and (images.min() < 0 or images.max() >= levels):
        raise UserError(f"{name}: image levels span {images.min():g}..{images.max():g}, outside 0..{levels - 1}")
    shape = images.shape[1:] if images.ndim == 4 else (1, *images.shape[1:])
    data = make_dataset(images.reshape(len(images), -1), u, name=name)
    return as_images(data, levels, shape)


def load_npz_file(path: str | Path, levels: int | None = None) -> Dataset:
    """A data file of vectors (``x: (n, d)``) or of images (see the module docstring)."""
    arrays = read_npz(path)
    if arrays["x"].ndim in IMAGE_RANKS:
        count = stated_levels(levels, arrays.get("levels"), str(path))
        return image_dataset(arrays["x"], arrays["u"], count, str(path))
    if levels is not None:
        raise UserError(f"{path}: {param('levels')} is for images, x of shape (n, H, W) or (n, C, H, W); x has {arrays['x'].shape}")
    return dataset_from_arrays(arrays, str(path))


def check_levels(data: Dataset, standardizer: Standardizer) -> None:
    """Bounded data scored by a run must be on the range it was trained on (its fixed map to [0, 1))."""
    if data.bounds is None:
        return
    expected = Standardizer.unit_range(*data.bounds, data.dim)
    if not (np.allclose(expected.mean, standardizer.mean) and np.allclose(expected.std, standardizer.std)):
        raise UserError(f"{data.source}: data on levels 0..{data.bounds[1] - 1:g}, but the run was trained on "
                        f"0..{standardizer.mean[0] + standardizer.std[0] - 1:g}")  # fmt: skip
