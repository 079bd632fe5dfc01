"""The scikit-learn estimators: conventions (estimator checks, clone, Pipeline, GridSearchCV) and behaviour."""

import doctest
import math
import pickle
import warnings
from dataclasses import replace

import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import iflow.estimator
from iflow.config import ModelConfig, TrainConfig
from iflow.data.dataset import make_dataset
from iflow.data.synthetic import SyntheticConfig, generate
from iflow.estimator import IVAEICA, IdentifiableFlowICA
from iflow.metrics import mcc
from iflow.selection import AUTO_PRIORS, plan_candidates

TINY_FLOW = {"epochs": 1, "hidden": 8, "depth": 2, "random_state": 0}
# the estimator checks test scikit-learn's conventions, not the start: random weights spare each fit a flow's training
TINY_IVAE = {"epochs": 1, "hidden": 8, "depth": 1, "iw_samples": 4, "start": "random", "random_state": 0}

# scikit-learn's checks call transform(X) without u; the iVAE's encoder reads u, so these checks cannot
# run on it. What they test (pickling, idempotent fit, row-order and subset invariance, dtypes) is
# tested with u below. Each listed check fails today (verified with xfail_strict=True); not strict here, since
# the flow's one-ulp difference under reordering depends on the CPU's kernels.
NEEDS_U_TO_TRANSFORM = "the check calls transform(X) without u, and the iVAE's encoder q(z | x, u) reads u"
IVAE_SKIPPED = {
    name: NEEDS_U_TO_TRANSFORM
    for name in (
        "check_estimators_dtypes", "check_dtype_object", "check_estimators_pickle", "check_f_contiguous_array_estimator",
        "check_transformer_data_not_an_array", "check_transformer_general", "check_transformer_preserve_dtypes",
        "check_methods_sample_order_invariance", "check_methods_subset_invariance", "check_dict_unchanged",
        "check_fit_idempotent",
    )
}  # fmt: skip
FLOW_SKIPPED = {
    # float32 batched arithmetic: a reordered batch changes a latent by one ulp (6e-8), the check allows 1e-9
    "check_methods_sample_order_invariance": "float32 results differ by one ulp when rows are reordered",
    # it raises ValueError("... coupling flows need at least 2 dimensions, got 1"): right error, other wording
    "check_fit2d_1feature": "the ValueError names the flow's limit, not the check's wording",
}


def expected_failures(estimator) -> dict:
    return IVAE_SKIPPED if isinstance(estimator, IVAEICA) else FLOW_SKIPPED


@parametrize_with_checks(
    [IdentifiableFlowICA(**TINY_FLOW), IVAEICA(**TINY_IVAE)],
    expected_failed_checks=expected_failures,
    xfail_strict=True,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def synthetic():
    """3 sources, 10 segments of 200 points, 2 mixing layers (MCC of x itself: 0.67)."""
    return generate(SyntheticConfig(sources=3, segments=10, per_segment=200, layers=2, seed=1))


@pytest.fixture(scope="module")
def fitted_flow(synthetic):
    return IdentifiableFlowICA(epochs=10, random_state=0).fit(synthetic.x, synthetic.u)


def test_flow_recovers_sources(synthetic, fitted_flow):
    baseline = mcc(synthetic.x, synthetic.s).mcc
    recovered = mcc(fitted_flow.transform(synthetic.x), synthetic.s).mcc
    assert baseline < 0.7
    assert recovered > 0.85  # measured 0.91 (seed 0); an unconditional flow or x itself stays near 0.67
    assert fitted_flow.n_components_ == 3 and fitted_flow.n_features_in_ == 3
    assert len(fitted_flow.history_) == 10 and 1 <= fitted_flow.best_epoch_ <= 10


def test_ivae_recovers_sources(synthetic):
    ivae = IVAEICA(epochs=20, batch_size=64, random_state=0).fit(synthetic.x, synthetic.u)
    recovered = mcc(ivae.transform(synthetic.x, synthetic.u), synthetic.s).mcc
    # measured 0.972 against x's 0.67; from random weights (start="random") 0.845, which this margin refuses
    assert recovered > mcc(synthetic.x, synthetic.s).mcc + 0.2


def test_inverse_transform_round_trip(synthetic, fitted_flow):
    x = synthetic.x[:500]
    np.testing.assert_allclose(fitted_flow.inverse_transform(fitted_flow.transform(x)), x, atol=2e-3)


def test_sample_follows_the_label(synthetic, fitted_flow):
    """Draws for label k land nearest segment k's mean, in the units of the training x."""
    segment_means = np.stack([synthetic.x[synthetic.u == k].mean(0) for k in range(10)])
    for label in (2, 7):
        draws = fitted_flow.sample(400, u=label)
        assert draws.shape == (400, 3)
        assert np.argmin(np.linalg.norm(segment_means - draws.mean(0), axis=1)) == label


def test_score_is_in_the_units_of_x(synthetic):
    """Scaling x by 10 trains the same model on the same standardised data; log p drops by d ln 10."""
    x, u = synthetic.x[:1000], synthetic.u[:1000]
    model = IdentifiableFlowICA(epochs=2, random_state=0)
    plain = clone(model).fit(x, u).score(x, u)
    scaled = clone(model).fit(10 * x, u).score(10 * x, u)
    # the standardised inputs differ in their last bits, and two epochs at lr 2e-2 carry that to about 1e-3
    # nats; a unit missed would be off by 3 ln 10 = 6.9
    assert scaled == pytest.approx(plain - 3 * math.log(10), abs=1e-2)


@pytest.mark.parametrize(("estimator", "model"), [(IdentifiableFlowICA, "iflow"), (IVAEICA, "ivae")])
def test_defaults_are_those_of_iflow_train(synthetic, estimator, model):
    """An estimator left at its defaults trains what ``iflow train [--model ivae]`` trains on the same data:
    the task's and model's filled values (to convergence, learning rate, batch, M-step, sizes), not a budget
    of its own."""
    x, u = synthetic.x[:300], synthetic.u[:300]
    fitted = estimator(random_state=0).fit(x, u).run_
    seed = fitted.train_config.seed
    plan, priors = plan_candidates(make_dataset(x, u), ModelConfig(model=model), TrainConfig(seed=seed))
    planned = plan.run
    # on 270 training rows the flow chooses its prior as iflow train does (the candidates share one split seed)
    assert priors == (AUTO_PRIORS if model == "iflow" else ())
    assert fitted.model_config.prior in (priors or (planned.model_config.prior,))
    assert replace(fitted.train_config, split_seed=None) == planned.train_config
    assert replace(fitted.model_config, prior=planned.model_config.prior) == planned.model_config
    assert fitted.train_config.epochs is None and fitted.train_config.batch_size <= 270


def test_clone_get_params_set_params():
    estimator = IdentifiableFlowICA(flow="realnvp", epochs=3, random_state=5)
    copy = clone(estimator)
    assert copy.get_params() == estimator.get_params() and copy is not estimator
    copy.set_params(epochs=7, prior="laplace")
    assert (copy.epochs, copy.prior, estimator.epochs) == (7, "laplace", 3)
    assert IVAEICA(n_components=2).get_params()["n_components"] == 2


def test_pipeline_passes_u_to_the_estimator(synthetic):
    pipe = make_pipeline(StandardScaler(), IdentifiableFlowICA(epochs=10, random_state=0))
    pipe.fit(synthetic.x, synthetic.u)
    assert mcc(pipe.transform(synthetic.x), synthetic.s).mcc > 0.85
    scaled = pipe[0].transform(synthetic.x)
    assert pipe.score(synthetic.x, synthetic.u) == pytest.approx(pipe[-1].score(scaled, synthetic.u))


def test_grid_search_selects_by_held_out_log_likelihood(synthetic):
    """lr 1e-6 barely moves from the warm start: held-out likelihood must prefer lr 2e-2."""
    x, u = synthetic.x[:1000], synthetic.u[:1000]
    folds = KFold(2, shuffle=True, random_state=0)
    grid = GridSearchCV(IdentifiableFlowICA(epochs=2, batch_size=64, random_state=0), {"lr": [2e-2, 1e-6]}, cv=folds)
    grid.fit(x, u)
    assert grid.best_params_ == {"lr": 2e-2}
    held_out = [
        IdentifiableFlowICA(epochs=2, batch_size=64, random_state=0).fit(x[train], u[train]).score(x[test], u[test])
        for train, test in folds.split(x)
    ]
    assert grid.cv_results_["mean_test_score"][0] == pytest.approx(np.mean(held_out))
    assert grid.cv_results_["mean_test_score"][1] < grid.cv_results_["mean_test_score"][0] - 0.3  # measured 0.78


def test_ivae_transform_needs_u_and_keeps_row_order(synthetic):
    x, u = synthetic.x[:600], synthetic.u[:600]
    ivae = IVAEICA(n_components=2, epochs=2, batch_size=64, start="random", random_state=0).fit(x, u)
    z = ivae.transform(x, u)
    assert z.shape == (600, 2) and ivae.n_components_ == 2
    with pytest.raises(ValueError, match="pass u"):
        ivae.transform(x)
    order = np.random.default_rng(0).permutation(600)
    np.testing.assert_allclose(ivae.transform(x[order], u[order]), z[order], atol=1e-6)
    np.testing.assert_allclose(ivae.transform(x[:50], u[:50]), z[:50], atol=1e-6)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(ivae)).transform(x, u), z)
    np.testing.assert_array_equal(clone(ivae).fit(x, u).transform(x, u), z)  # the same seed, the same model
    assert ivae.score(x, u) == ivae.score(x, u)  # the Monte Carlo bound is drawn with a fixed seed


def test_fit_without_u_warns_and_encodes_without_it(synthetic):
    x = synthetic.x[:400]
    with pytest.warns(UserWarning, match="not identifiable"):
        flow = IdentifiableFlowICA(epochs=1, random_state=0).fit(x)
    assert flow.transform(x).shape == (400, 3) and np.isfinite(flow.score(x))


def test_oversized_batch_is_clipped_with_a_warning(synthetic):
    x, u = synthetic.x[:100], synthetic.u[:100]
    with pytest.warns(UserWarning, match="90 training rows"):
        IdentifiableFlowICA(epochs=1, batch_size=512, random_state=0).fit(x, u)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        IdentifiableFlowICA(epochs=1, random_state=0).fit(x, u)  # "auto" fits the rows silently


def test_bad_u_is_a_value_error(synthetic):
    x = synthetic.x[:100]
    with pytest.raises(ValueError, match="rows"):
        IdentifiableFlowICA(epochs=1).fit(x, np.zeros(50, dtype=int))
    with pytest.raises(ValueError, match="negative labels"):
        IdentifiableFlowICA(epochs=1).fit(x, -np.ones(100, dtype=int))


def test_module_example_runs():
    assert doctest.testmod(iflow.estimator).failed == 0


def test_ivae_in_a_pipeline_gets_u_by_metadata_routing(synthetic):
    x, u = synthetic.x[:600], synthetic.u[:600]
    with sklearn.config_context(enable_metadata_routing=True):
        ivae = IVAEICA(epochs=1, batch_size=64, start="random", random_state=0).set_transform_request(u=True)
        pipe = make_pipeline(StandardScaler(), ivae).fit(x, u)
        z = pipe.transform(x, u=u)
    np.testing.assert_array_equal(z, pipe[-1].transform(pipe[0].transform(x), u))
    assert z.shape == (600, 3)


def test_continuous_u_fits_and_samples(synthetic):
    """A time stamp as u, (n, 1) floats: the prior is an MLP of u; sample takes one value of u."""
    x, t = synthetic.x[:600], (synthetic.u[:600] + 0.5)[:, None].astype(np.float32)
    flow = IdentifiableFlowICA(epochs=1, random_state=0).fit(x, t)
    assert flow.run_.model_config.aux.kind == "continuous"
    assert flow.sample(7, u=np.array([2.5])).shape == (7, 3) and np.isfinite(flow.score(x, t))
