import re

import numpy as np
import pytest

from iflow.data.builtin import TOY_SIZES, load_data
from iflow.data.digits import LEVELS
from iflow.data.toy2d import DENSITIES
from iflow.errors import UserError


@pytest.mark.parametrize("name", list(DENSITIES))
def test_toy_splits_are_fixed_and_disjoint_draws(name):
    train, test = load_data(name, "train"), load_data(name, "test")
    assert train.x.shape == (TOY_SIZES["train"], 2) and test.x.shape == (TOY_SIZES["test"], 2)
    assert np.array_equal(test.x, load_data(name, "test").x)
    assert not np.allclose(train.x[:100], test.x[:100])
    if DENSITIES[name].has_density:
        assert test.entropy is not None and np.all(np.isfinite(test.true_log_likelihood))
    else:
        assert test.entropy is None and test.true_log_likelihood is None


def test_digits_split_and_description():
    train, test = load_data("digits", "train"), load_data("digits", "test")
    assert len(train) + len(test) == 1797 and len(test) == round(0.2 * 1797)
    assert train.image_shape == (1, 8, 8) and train.bounds == (0.0, LEVELS) and train.dequantize == 1.0
    assert train.x.min() == 0 and train.x.max() == 16 and np.all(train.x == np.round(train.x))
    assert sorted(np.unique(test.u)) == list(range(10))
    # no test image is a training row (by index; duplicates of pixel values may exist in the data)
    assert not np.array_equal(train.x[: len(test)], test.x)


def test_csv_of_floats(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text("1.0,2.5\n-3,4e-1\n0,0\n")
    data = load_data(path)
    assert data.x.shape == (3, 2) and np.allclose(data.x[1], [-3, 0.4]) and np.all(data.u == 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x,y\n1,2\n", "line 1: 'x' is not a float (a header"),
        ("1,2\n3\n", "line 2: 1 columns, but earlier rows have 2"),
        ("1,2\n3,abc\n", "line 2: 'abc' is not a float"),
    ],
)
def test_bad_csv_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=re.escape(message)) as info:
        load_data(path)
    assert str(path) in str(info.value)


def test_unknown_spec():
    with pytest.raises(UserError, match="unknown data set"):
        load_data("swiss-roll")
    with pytest.raises(UserError, match="no such file"):
        load_data("missing.csv")
