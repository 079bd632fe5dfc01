"""scikit-learn estimators: the identifiable flow and the iVAE as ``fit`` / ``transform`` / ``score``.

    >>> from iflow.data.synthetic import SyntheticConfig, generate
    >>> from iflow.estimator import IdentifiableFlowICA
    >>> data = generate(SyntheticConfig(sources=3, segments=10, per_segment=200, layers=2))
    >>> ica = IdentifiableFlowICA(epochs=2, random_state=0).fit(data.x, data.u)
    >>> ica.transform(data.x).shape        # the recovered sources
    (2000, 3)
    >>> ica.sample(5, u=3).shape           # draws from p(x | u = 3)
    (5, 3)

The auxiliary variable u goes where scikit-learn puts ``y`` (so ``Pipeline.fit(X, u)`` and
``GridSearchCV.fit(X, u)`` pass it on): integer labels ``(n,)`` or floats ``(n, m)``. Without u
every row gets the label 0, and the latents are no longer identifiable. ``score`` is the mean
held-out log-likelihood per sample in the units of the X it is given (exact for the flow, an
importance-weighted lower bound for the iVAE), so ``GridSearchCV`` with its default scoring selects
by held-out likelihood. Both classes wrap :func:`iflow.workflow.train_as_cli` and :func:`iflow.runs.evaluate`;
``run_`` is the fitted :class:`iflow.runs.Run`.

Two classes rather than one with a ``model=`` switch: their parameters differ (a flow has coupling
layers and spline bins, a VAE a decoder and its noise) and so do their capabilities (the flow is a
bijection, so it has ``inverse_transform`` and needs no u to encode; the iVAE's encoder reads u).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import Tags, check_random_state
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from .config import ModelConfig, TrainConfig
from .data.dataset import Dataset, make_dataset, validation_rows
from .errors import UserError
from .runs import encode_dataset, evaluate, sample
from .runtime import batched
from .workflow import train_as_cli

SCORE_SEED = 0  # the iVAE's bound is a Monte Carlo estimate: one fixed draw makes score repeatable


class _RunEstimator(TransformerMixin, BaseEstimator):
    """What both estimators share: fitting a run, encoding, scoring and sampling through it.

    Subclasses define the constructor parameters and :meth:`_model_config`.
    """

    def _model_config(self) -> ModelConfig:
        raise NotImplementedError

    def _train_config(self, n_samples: int) -> TrainConfig:
        """The training options: None (and ``batch_size="auto"``) left for :func:`iflow.runs.plan_run` to fill
        with the task's defaults, as ``iflow train`` does; a given batch larger than the training rows cut to them."""
        n_train = n_samples - validation_rows(n_samples, self.val_fraction)
        batch_size = None if self.batch_size == "auto" else self.batch_size
        if batch_size is not None and batch_size > n_train:
            warnings.warn(
                f"batch_size={batch_size} is more than the {n_train} training rows; using {n_train}", stacklevel=3
            )
            batch_size = max(n_train, 1)
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        return TrainConfig(
            epochs=self.epochs, batch_size=batch_size, lr=self.lr, val_fraction=self.val_fraction,
            seed=seed, prior_fit=self.prior_fit, device=self.device, threads=self.threads, **self._extra_train_options(),
        )  # fmt: skip

    def _extra_train_options(self) -> dict:
        return {}

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> _RunEstimator:
        """Train on ``X: (n, d)`` with ``y`` = u: labels ``(n,)``, floats ``(n, m)``, or None (one label)."""
        X = validate_data(self, X, dtype=np.float32, ensure_min_samples=2)
        if y is None:
            warnings.warn(f"{type(self).__name__} fitted without u: one label for every row, so the latents "
                          "are not identifiable; pass u as the second argument of fit", stacklevel=2)  # fmt: skip
        u = self._aux(X, y)
        with _as_value_errors():
            self.run_, result = train_as_cli(make_dataset(X, u), self._model_config(),
                                             self._train_config(len(X)), progress=self.verbose)  # fmt: skip
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        self.n_components_ = self.run_.model_config.latent_dim or X.shape[1]  # a flow: as many as features
        return self

    def _aux(self, X: np.ndarray, u: np.ndarray | None) -> np.ndarray:
        """u as an array with one row per row of ``X`` (label 0 for every row when u is None)."""
        if u is None:
            return np.zeros(len(X), dtype=np.int64)
        u = check_array(u, ensure_2d=False, dtype="numeric", ensure_all_finite=False, input_name="u")
        if u.shape[:1] != X.shape[:1]:
            raise ValueError(f"u has {u.shape[0] if u.ndim else 0} rows but X has {X.shape[0]}")
        return u

    def _dataset(self, X: np.ndarray, u: np.ndarray | None) -> Dataset:
        """Validated ``X`` against the fitted run, with u (label 0 for every row when the run was fitted so)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        if u is None and self.run_.model_config.aux.kind == "labels" and self.run_.model_config.aux.n_labels == 1:
            u = np.zeros(len(X), dtype=np.int64)
        if u is None:
            raise ValueError(f"{type(self).__name__} was fitted with u; pass u for these rows too")
        with _as_value_errors():
            return make_dataset(X, self._aux(X, u))

    def _encode(self, X: np.ndarray, u: np.ndarray | None) -> np.ndarray:
        data = self._dataset(X, u)
        with _as_value_errors():
            return encode_dataset(self.run_, data)

    def score(self, X: np.ndarray, y: np.ndarray | None = None) -> float:
        """Mean log p(x | u) per sample, in nats and in the units of ``X`` (higher is better)."""
        data = self._dataset(X, y)
        with _as_value_errors(), torch.random.fork_rng():
            torch.manual_seed(SCORE_SEED)
            return float(evaluate(self.run_, data)["log_likelihood"])

    def sample(self, n_samples: int = 1, u: int | np.ndarray = 0) -> np.ndarray:
        """``n_samples`` draws of x from p(x | u), in the units of the training X: ``(n, d)``.

        ``u``: one label or ``(n,)`` labels; for a continuous u, one value ``(m,)`` or ``(n, m)``.
        """
        check_is_fitted(self)
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        with _as_value_errors():
            return sample(self.run_, np.asarray(u) if np.ndim(u) else int(u), int(n_samples), seed=seed)

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False  # u is optional, as y is for a transformer
        tags.transformer_tags.preserves_dtype = ["float32"]  # the models compute in float32
        return tags


@contextmanager
def _as_value_errors() -> Iterator[None]:
    """Turn iflow's :class:`~iflow.errors.UserError` into the ``ValueError`` scikit-learn callers expect."""
    try:
        yield
    except UserError as exc:
        raise ValueError(str(exc)) from None


class IdentifiableFlowICA(_RunEstimator):
    """Nonlinear ICA with an identifiable normalizing flow: ``z = g(x)`` with the prior p(z | u).

    ``log p(x | u) = log p(g(x) | u) + log |det J_g(x)|``. Parameters are those of ``iflow train``
    (see :class:`iflow.config.ModelConfig` and :class:`iflow.config.TrainConfig`). There is no
    ``n_components``: a flow is a bijection, so it has as many latents as features. Options left at None
    (and ``batch_size="auto"``) take the defaults ``iflow train`` takes for these data (iflow/defaults.py):
    training to convergence, the task's learning rate and batch, the flow's sizes, and the prior (the
    Gaussian, or on integer labels with few rows the best held-out likelihood of ``gauss``,
    ``student-t`` and ``shape``, as ``prior="auto"``, trained one after another). ``random_state``
    fixes the split, the initial weights and the data order.

    Fitted attributes: ``run_`` (:class:`iflow.runs.Run`), ``history_`` (one dict per epoch),
    ``best_epoch_`` (kept by validation log-likelihood), ``n_components_``, ``n_features_in_``.
    """

    def __init__(
        self,
        *,
        flow: str = "spline",
        prior: str | None = None,
        depth: int | None = None,
        hidden: int | None = None,
        bins: int | None = None,
        epochs: int | None = None,
        batch_size: int | str = "auto",
        lr: float | None = None,
        val_fraction: float = 0.1,
        prior_fit: str | None = None,
        linear_fit: str = "auto",
        random_state: int | np.random.RandomState | None = None,
        device: str = "cpu",
        threads: int = 1,
        verbose: bool = False,
    ) -> None:
        self.flow = flow
        self.prior = prior
        self.depth = depth
        self.hidden = hidden
        self.bins = bins
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.val_fraction = val_fraction
        self.prior_fit = prior_fit
        self.linear_fit = linear_fit
        self.random_state = random_state
        self.device = device
        self.threads = threads
        self.verbose = verbose

    def _model_config(self) -> ModelConfig:
        return ModelConfig(model="iflow", flow=self.flow, prior=self.prior, depth=self.depth, hidden=self.hidden,
                           bins=self.bins)  # fmt: skip

    def _extra_train_options(self) -> dict:
        return {"linear_fit": self.linear_fit}

    def transform(self, X: np.ndarray) -> np.ndarray:
        """The recovered sources ``z = g(x)``: ``(n, d) -> (n, d)`` (u is not needed to encode)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        aux, n = self.run_.model_config.aux, len(X)
        placeholder = np.zeros(n, dtype=np.int64) if aux.kind == "labels" else np.zeros((n, aux.aux_dim), np.float32)
        return self._encode(X, placeholder)  # g(x) does not read u; the placeholder only passes validation

    def inverse_transform(self, X: np.ndarray) -> np.ndarray:
        """x = g^-1(z), in the units of the training X: ``(n, d) -> (n, d)``."""
        check_is_fitted(self)
        z = validate_data(self, X, dtype=np.float32, reset=False)
        model = self.run_.model.eval()
        x = batched(model.decode, torch.as_tensor(z, device=self.run_.device)).cpu().numpy()
        return self.run_.standardizer.inverse(x)


class IVAEICA(_RunEstimator):
    """Nonlinear ICA with an identifiable VAE (noisy observations): q(z | x, u), p(x | z), the prior p(z | u).

    ``transform(X, u)`` is the posterior mean E_q[z | x, u] (the encoder reads u), ``score`` an
    importance-weighted lower bound on log p(x | u) with ``iw_samples`` draws, ``sample`` the decoder
    mean at prior draws. Parameters are those of ``iflow train --model ivae``; ``n_components`` is the
    latent dimension (None: the number of features). ``train_samples`` 1 trains the ELBO, > 1 the
    importance-weighted bound. ``start`` ``"flow"`` trains the identifiable flow first and starts from its
    latents, ``"random"`` from random weights. Options left at None (and ``batch_size="auto"``) take the defaults of
    ``iflow train --model ivae`` for these data (iflow/defaults.py). In a ``Pipeline``, u reaches ``transform`` by
    scikit-learn's metadata routing: with ``sklearn.set_config(enable_metadata_routing=True)`` and
    ``IVAEICA(...).set_transform_request(u=True)``, ``pipe.transform(X, u=u)``.

    Fitted attributes: ``run_`` (:class:`iflow.runs.Run`), ``history_``, ``best_epoch_``,
    ``n_components_``, ``n_features_in_``.
    """

    def __init__(
        self,
        n_components: int | None = None,
        *,
        prior: str = "gauss",
        depth: int | None = None,
        hidden: int | None = None,
        obs: str = "gaussian",
        noise_var: float = 0.01,
        encoder: str = "mlp",
        train_samples: int | None = None,
        iw_samples: int = 100,
        epochs: int | None = None,
        batch_size: int | str = "auto",
        lr: float | None = None,
        val_fraction: float = 0.1,
        prior_fit: str | None = None,
        start: str | None = None,
        random_state: int | np.random.RandomState | None = None,
        device: str = "cpu",
        threads: int = 1,
        verbose: bool = False,
    ) -> None:
        self.n_components = n_components
        self.prior = prior
        self.depth = depth
        self.hidden = hidden
        self.obs = obs
        self.noise_var = noise_var
        self.encoder = encoder
        self.train_samples = train_samples
        self.iw_samples = iw_samples
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.val_fraction = val_fraction
        self.prior_fit = prior_fit
        self.start = start
        self.random_state = random_state
        self.device = device
        self.threads = threads
        self.verbose = verbose

    def _extra_train_options(self) -> dict:
        return {"start": self.start}

    def _model_config(self) -> ModelConfig:
        return ModelConfig(model="ivae", prior=self.prior, depth=self.depth, hidden=self.hidden,
                           latent_dim=self.n_components or 0, obs=self.obs, noise_var=self.noise_var,
                           encoder=self.encoder, train_samples=self.train_samples,
                           iw_samples=self.iw_samples)  # fmt: skip

    def transform(self, X: np.ndarray, u: np.ndarray | None = None) -> np.ndarray:
        """Posterior means E_q[z | x, u]: ``(n, d) -> (n, n_components_)``; u as given to ``fit``."""
        return self._encode(X, u)

    def fit_transform(self, X: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """Fit on (X, u = ``y``), then the posterior means of X given the same u."""
        return self.fit(X, y).transform(X, y)
