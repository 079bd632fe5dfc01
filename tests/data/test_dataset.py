import numpy as np
import pytest

from iflow.data.dataset import (
    AuxSpec,
    Standardizer,
    aux_spec,
    check_aux,
    load_npz,
    looks_one_hot,
    make_dataset,
    split_indices,
)
from iflow.errors import UserError


def test_one_hot_u_becomes_labels():
    labels = np.array([2, 0, 1, 2])
    one_hot = np.eye(3)[labels]
    assert looks_one_hot(one_hot)
    data = make_dataset(np.zeros((4, 2)), one_hot)
    assert data.u.dtype == np.int64 and np.array_equal(data.u, labels) and data.u_was_one_hot
    assert aux_spec(data.u) == AuxSpec("labels", n_labels=3)


def test_float_u_stays_continuous_and_integer_floats_become_labels():
    cont = make_dataset(np.zeros((3, 2)), np.array([[0.5, 1.0], [0.1, 0.2], [1.0, 0.0]]))
    assert cont.u.dtype == np.float32 and aux_spec(cont.u) == AuxSpec("continuous", aux_dim=2)
    assert make_dataset(np.zeros((3, 2)), np.array([0.0, 1.0, 1.0])).u.dtype == np.int64


def test_one_float_column_or_non_integer_floats_are_one_continuous_u():
    """A time stamp: (n, 1) floats, or (n,) floats that are not all integers; integer columns stay labels."""
    for u in (np.array([[0.0], [1.0], [2.0]]), np.array([0.5, 1.0, 7.25])):
        data = make_dataset(np.zeros((3, 2)), u)
        assert data.u.shape == (3, 1) and data.u.dtype == np.float32
        assert aux_spec(data.u) == AuxSpec("continuous", aux_dim=1)
        np.testing.assert_array_equal(data.u[:, 0], u.ravel())
    labels = make_dataset(np.zeros((3, 2)), np.array([[0], [2], [1]]))
    assert labels.u.dtype == np.int64 and labels.u.shape == (3,)


@pytest.mark.parametrize(
    "x, u, s, message",
    [
        (np.full((3, 2), np.nan), np.zeros(3, int), None, "NaN"),
        (np.zeros(3), np.zeros(3, int), None, r"shape \(n, d\)"),
        (np.zeros((3, 2)), np.zeros(4, int), None, "u has 4 rows"),
        (np.zeros((3, 2)), np.array([0, -1, 1]), None, "negative"),
        (np.zeros((3, 2)), np.array([[0.0], [np.nan], [1.0]]), None, "NaN or inf"),
        (np.zeros((3, 2)), np.zeros(3, int), np.zeros((2, 2)), "s must have shape"),
        (np.zeros((0, 2)), np.zeros(0, int), None, "empty"),
    ],
)
def test_bad_arrays_raise_user_errors(x, u, s, message):
    with pytest.raises(UserError, match=message):
        make_dataset(x, u, s, name="f.npz")


def test_load_npz_errors_name_the_file(tmp_path):
    missing = tmp_path / "a.npz"
    np.savez(missing, x=np.zeros((3, 2)))
    with pytest.raises(UserError, match="a.npz: missing array 'u'"):
        load_npz(missing)
    junk = tmp_path / "b.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="b.npz: not an .npz file"):
        load_npz(junk)
    with pytest.raises(UserError, match="no such file"):
        load_npz(tmp_path / "c.npz")


def test_check_aux_rejects_unseen_labels_and_wrong_width():
    with pytest.raises(UserError, match=r"unseen in training \[5\]"):
        check_aux(np.array([0, 5]), AuxSpec("labels", n_labels=3), "f")
    with pytest.raises(UserError, match=r"\(n, 2\)"):
        check_aux(np.zeros((4, 3), np.float32), AuxSpec("continuous", aux_dim=2), "f")


def test_standardizer_round_trip_and_log_det():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, [1.0, 4.0], size=(1000, 2))
    st = Standardizer.fit(x)
    np.testing.assert_allclose(st(x).mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(st.inverse(st(x)), x, rtol=1e-5, atol=1e-4)
    assert st.log_abs_det == pytest.approx(-np.log(x.std(0)).sum())
    assert Standardizer.from_dict(st.to_dict()).std.tolist() == st.std.tolist()


def test_split_is_seeded_and_disjoint():
    train, val = split_indices(100, 0.2, seed=1)
    assert len(val) == 20 and len(set(train) | set(val)) == 100
    assert np.array_equal(val, split_indices(100, 0.2, seed=1)[1])
    assert not np.array_equal(val, split_indices(100, 0.2, seed=2)[1])


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_standardisation_is_float64_so_the_scale_of_x_does_not_matter(scale):
    x = np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32)
    scaled = (x.astype(np.float64) * scale).astype(np.float32)  # what a data file of such x holds
    reference = Standardizer.fit(x)(x)
    assert np.all(np.isfinite(reference))
    np.testing.assert_allclose(Standardizer.fit(scaled)(scaled), reference, rtol=0, atol=1e-5)
    np.testing.assert_allclose(Standardizer.fit(scaled).std, x.std(0, dtype=np.float64) * scale, rtol=1e-5)


def test_standardised_values_beyond_float32_are_a_user_error():
    standardizer = Standardizer(np.zeros(2), np.full(2, 1e-40))
    with pytest.raises(UserError, match="beyond float32"):
        standardizer(np.ones((3, 2)), "far.npz")


def test_same_mcc_for_x_scaled_by_1e30_and_1e_minus_30():
    from iflow.config import ModelConfig, TrainConfig
    from iflow.data.synthetic import SyntheticConfig, generate
    from iflow.runs import evaluate, train

    synthetic = generate(SyntheticConfig(sources=2, segments=4, per_segment=150, seed=3))
    scores = {}
    for scale in (1.0, 1e-30, 1e30):
        data = make_dataset(synthetic.x.astype(np.float64) * scale, synthetic.u, synthetic.s)
        run, _ = train(data, ModelConfig(flow="realnvp", depth=2, hidden=16), TrainConfig(epochs=3, batch_size=64), progress=False)
        metrics = evaluate(run, data)
        assert np.isfinite(metrics["log_likelihood"])
        scores[scale] = metrics["mcc"]
    assert scores[1.0] > 0.6, scores  # a real recovery, so that MCC 0 (the float32 failure) cannot pass
    assert abs(scores[1e-30] - scores[1.0]) < 0.02 and abs(scores[1e30] - scores[1.0]) < 0.02, scores
