"""A user's own images: an .npz of integer levels (n, H, W) or (n, C, H, W), read as digits are."""

import numpy as np
import pytest

from iflow.data.builtin import load_data
from iflow.data.images import load_npz_file
from iflow.errors import UserError


def write(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_grey_images_become_rows_with_their_shape_and_levels(tmp_path):
    images = np.random.default_rng(0).integers(0, 5, size=(6, 4, 6)).astype(np.uint8)
    data = load_data(write(tmp_path / "g.npz", x=images, u=np.arange(6) % 2, levels=np.array(5)))
    assert data.x.shape == (6, 24) and data.image_shape == (1, 4, 6)
    np.testing.assert_array_equal(data.x, images.reshape(6, -1))
    assert data.dequantize == 1.0 and data.bounds == (0.0, 5.0)


def test_channels_first_images_and_levels_from_the_option(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, size=(3, 2, 4, 4))
    data = load_data(write(tmp_path / "c.npz", x=images, u=np.zeros(3, int)), levels=256)
    assert data.image_shape == (2, 4, 4) and data.x.shape == (3, 32) and data.bounds == (0.0, 256.0)
    np.testing.assert_array_equal(data.x[1], images[1].ravel())


@pytest.mark.parametrize(
    "arrays, levels, message",
    [
        ({"x": np.zeros((3, 4, 4), int)}, None, "state their number of levels"),
        ({"x": np.full((3, 4, 4), 7), "levels": np.array(4)}, None, "outside 0..3"),
        ({"x": np.full((3, 4, 4), 0.5), "levels": np.array(4)}, None, "integer levels"),
        ({"x": np.zeros((3, 4, 4), int), "levels": np.array(4)}, 8, "levels 8 but the file says levels = 4"),
        ({"x": np.zeros((3, 4, 4), int), "levels": np.array([2, 3])}, None, "levels must be one integer"),
        ({"x": np.zeros((3, 4, 4), int)}, 1, "levels must be >= 2"),
        ({"x": np.zeros((3, 4))}, 4, "levels is for images"),
        ({"x": np.zeros((3, 0, 4), int), "levels": np.array(4)}, None, "no pixels"),
    ],
)
def test_bad_images_are_one_clear_error(tmp_path, arrays, levels, message):
    path = write(tmp_path / "bad.npz", u=np.zeros(3, int), **arrays)
    with pytest.raises(UserError, match=message):
        load_npz_file(path, levels)


def test_a_run_refuses_images_on_other_levels(tmp_path):
    from iflow.data.dataset import Standardizer
    from iflow.data.images import check_levels

    data = load_data(write(tmp_path / "g.npz", x=np.zeros((2, 4, 4), int), u=np.zeros(2, int), levels=np.array(8)))
    check_levels(data, Standardizer.unit_range(0, 8, 16))
    with pytest.raises(UserError, match="levels 0..7, but the run was trained on 0..3"):
        check_levels(data, Standardizer.unit_range(0, 4, 16))
