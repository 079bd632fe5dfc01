"""scikit-learn's bundled 8x8 digits (1797 images, 17 grey levels 0..16) with the digit as u.

A fixed 80/20 split (seeded permutation); x holds the integer grey levels as
floats, flattened to 64 values, and the :class:`~iflow.data.dataset.Dataset` says how to
read them: dequantise with unit bins (x + U(0, 1), range [0, 17)), map to
[0, 1) by the fixed affine x / 17, image shape (1, 8, 8). See
:mod:`iflow.data.dequantization` for the bits/dim convention.
"""

from __future__ import annotations

import numpy as np

from .dataset import Dataset, make_dataset
from .images import as_images

LEVELS = 17
SHAPE = (1, 8, 8)
SPLIT_SEED = 0
TEST_FRACTION = 0.2


def split_rows(n: int) -> dict[str, np.ndarray]:
    """The fixed train/test row indices."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_test = round(n * TEST_FRACTION)
    return {"train": np.sort(perm[n_test:]), "test": np.sort(perm[:n_test])}


def load_digits(split: str) -> Dataset:
    """The ``"train"`` (1438 images) or ``"test"`` (359) split."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    rows = split_rows(len(bunch.target))[split]
    return as_images(make_dataset(bunch.data[rows], bunch.target[rows], name=f"digits ({split} split)"), LEVELS, SHAPE)
