"""Synthetic nonstationary data as in the iVAE and iFlow papers, with the true log-likelihood.

Sources s: M segments of L points, n components; per segment and component a
standard deviation ~ U(0.5, 3) and (unless centered) a mean ~ U(-5, 5).
Mixing x = f(s) by an invertible MLP: well-conditioned random square matrices
(entries U(-1, 1), columns L2-normalised, redrawn until the condition number is
below the 25th percentile of random draws), a fresh matrix per layer, the
activation on all but the last layer. With ``dim`` D > n the first matrix is
n x D and the others D x D (an MLP from n to D).

``mixing="shared"``: one such matrix reused in every layer, as the iVAE code builds its
data; ``mixing="orthogonal"``: ICE-BeeM's generator, every layer the activation (its
is ``activation="leaky"``) then a random orthogonal matrix. ``means="easy"``: the iVAE
paper's "easy to classify" data (App. H.2), the second source's mean in segment m is
2 pi(m) for a random permutation pi of the segment indices.

Observations: ``obs="gaussian"`` gives x = f(s) + noise, ``noise`` being the
noise *standard deviation* (the iVAE paper's variance 0.01 is noise=0.1);
``obs="bernoulli"`` gives x ~ Bernoulli(sigmoid(f(s))) (the paper's discrete
d = 100, n = 10 experiment).

Since f is invertible and its Jacobian is a product over layers, the true
model's exact log-likelihood of every sample is known:

    log p(x | u) = log p(s | u) - sum_l log|det W_l| - sum_{l<L} sum_i log h'(a_{l,i})

It is None (undefined or intractable) with noise, Bernoulli observations or D > n.

Beyond the papers (the robustness suite, ``benchmarks/robustness.py``): sources
``prior="student-t"`` (heavy tails, ``dof`` degrees of freedom) and ``"uniform"``
(bounded), each scaled to the segment's standard deviation (Student-t: when
dof > 2; otherwise its scale is the drawn std); leaky-ReLU at any ``slope``;
``activation="smooth-leaky"``, h(a) = c a + (1 - c) softplus(a) with c = ``slope``,
a smooth leaky-ReLU: h'(a) = c + (1 - c) sigmoid(a) lies in (c, 1), so h is a
strictly increasing bijection of R (unlike ELU, whose image is bounded below);
matrices accepted below the ``condition_percentile`` of random draws, or below
a fixed ``max_condition`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import special, stats

ACTIVATIONS = ("xtanh", "leaky", "smooth-leaky")
SOURCE_PRIORS = ("gauss", "laplace", "student-t", "uniform")
OBSERVATIONS = ("gaussian", "bernoulli")
MIXINGS = ("fresh", "shared", "orthogonal")
MEANS = ("uniform", "easy")
LEAKY_SLOPE = 0.2
MAX_MATRIX_DRAWS = 100_000  # rejected draws before well_conditioned_matrix gives up


@dataclass
class SyntheticConfig:
    """Everything that determines a synthetic data set (saved beside it)."""

    sources: int = 5
    segments: int = 40
    per_segment: int = 1000
    layers: int = 3
    activation: str = "xtanh"
    centered: bool = False
    prior: str = "gauss"
    noise: float = 0.0  # standard deviation of the Gaussian observation noise
    seed: int = 1
    obs: str = "gaussian"
    dim: int = 0  # observed dimensions D; 0: D = sources
    dof: float = 3.0  # degrees of freedom of prior "student-t"
    slope: float = LEAKY_SLOPE  # negative-side slope of activations "leaky" and "smooth-leaky"
    condition_percentile: float = 25.0  # matrices accepted below this percentile of random condition numbers
    max_condition: float | None = None  # instead: accepted below this fixed condition number
    mixing: str = "fresh"  # fresh matrix per layer, one "shared" by all (iVAE code), "orthogonal" (ICE-BeeM)
    means: str = "uniform"  # segment means U(-5, 5), or "easy": the second source's mean 2 x a permuted index

    @property
    def observed_dim(self) -> int:
        return self.dim or self.sources

    def validate(self) -> None:
        for name in ("sources", "segments", "per_segment", "layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; choose from {ACTIVATIONS}")
        if self.prior not in SOURCE_PRIORS:
            raise ValueError(f"unknown source prior {self.prior!r}; choose from {SOURCE_PRIORS}")
        if not self.noise >= 0:
            raise ValueError(f"--noise must be >= 0, got {self.noise}")
        if self.obs not in OBSERVATIONS:
            raise ValueError(f"unknown observation model {self.obs!r}; choose from {OBSERVATIONS}")
        if self.obs == "bernoulli" and self.noise > 0:
            raise ValueError("--noise is for --obs gaussian; Bernoulli observations are already random")
        if self.dim != 0 and self.dim < self.sources:
            raise ValueError(f"--dim must be >= --sources ({self.sources}), got {self.dim}")
        if self.mixing not in MIXINGS:
            raise ValueError(f"unknown --mixing {self.mixing!r}; choose from {MIXINGS}")
        if self.mixing != "fresh" and self.observed_dim != self.sources:
            raise ValueError(f"--mixing {self.mixing} needs square layers: leave --dim at --sources ({self.sources})")
        if self.means not in MEANS:
            raise ValueError(f"unknown --means {self.means!r}; choose from {MEANS}")
        if self.means == "easy" and (self.sources < 2 or self.centered):
            raise ValueError("--means easy sets the second source's means: it needs --sources >= 2 and no --centered")
        self.validate_suite_options()

    def validate_suite_options(self) -> None:
        """The options of the robustness suite: source tails, activation slope, conditioning."""
        if not self.dof > 0:
            raise ValueError(f"--dof must be > 0, got {self.dof}")
        if not 0 < self.slope <= 1:
            raise ValueError(f"--slope must be in (0, 1], got {self.slope}")
        if not 0 < self.condition_percentile <= 100:
            raise ValueError(f"--condition-percentile must be in (0, 100], got {self.condition_percentile}")
        if self.max_condition is not None and not self.max_condition > 1:
            raise ValueError(f"--max-condition must be > 1 (a condition number), got {self.max_condition}")


@dataclass
class SyntheticData:
    """``x: (N, n)``, ``u: (N,)`` segment labels, ``s: (N, n)`` true sources.

    ``log_likelihood: (N,)`` is the true model's log p(x | u) in nats, or None
    when observation noise makes it intractable.
    """

    x: np.ndarray
    u: np.ndarray
    s: np.ndarray
    log_likelihood: np.ndarray | None
    means: np.ndarray
    stds: np.ndarray
    weights: list[np.ndarray] = field(default_factory=list)


def xtanh(a: np.ndarray) -> np.ndarray:
    return np.tanh(a) + 0.1 * a


def activation_log_derivative(name: str, a: np.ndarray, slope: float = LEAKY_SLOPE) -> np.ndarray:
    if name == "xtanh":
        return np.log(1.0 - np.tanh(a) ** 2 + 0.1)
    if name == "smooth-leaky":
        return np.log(slope + (1.0 - slope) * special.expit(a))
    return np.where(a > 0, 0.0, np.log(slope))


def activate(name: str, a: np.ndarray, slope: float = LEAKY_SLOPE) -> np.ndarray:
    if name == "xtanh":
        return xtanh(a)
    if name == "smooth-leaky":
        return slope * a + (1.0 - slope) * np.logaddexp(0.0, a)
    return np.where(a > 0, a, slope * a)


def condition_threshold(
    rows: int,
    rng: np.random.Generator,
    draws: int = 10_000,
    cols: int | None = None,
    chunk: int = 500,
    percentile: float = 25.0,
) -> float:
    """The ``percentile`` of the condition numbers of random column-normalised (rows, cols) matrices.

    Drawn in chunks to bound memory; the random stream is the same as one big draw.
    """
    cols = rows if cols is None else cols
    conds = []
    for start in range(0, draws, chunk):
        mats = rng.uniform(-1, 1, size=(min(chunk, draws - start), rows, cols))
        mats /= np.linalg.norm(mats, axis=1, keepdims=True)
        conds.append(np.linalg.cond(mats))
    return float(np.percentile(np.concatenate(conds), percentile))


def well_conditioned_matrix(
    rows: int, threshold: float, rng: np.random.Generator, cols: int | None = None
) -> np.ndarray:
    """Entries U(-1, 1), columns L2-normalised, redrawn until cond < threshold.

    ``ValueError`` after ``MAX_MATRIX_DRAWS`` rejected draws: a fixed bound too close to 1
    for the size (random 20 x 20 matrices almost never fall below 10) would loop forever.
    """
    cols = rows if cols is None else cols
    for _ in range(MAX_MATRIX_DRAWS):
        w = rng.uniform(-1, 1, size=(rows, cols))
        w /= np.linalg.norm(w, axis=0, keepdims=True)
        if np.linalg.cond(w) < threshold:
            return w
    raise ValueError(
        f"no random {rows} x {cols} mixing matrix in {MAX_MATRIX_DRAWS:,} draws had a condition number below "
        f"{threshold:.3g}; raise --max-condition or use --condition-percentile"
    )


def mixing_matrices(
    n: int,
    dim: int,
    layers: int,
    rng: np.random.Generator,
    percentile: float = 25.0,
    max_condition: float | None = None,
) -> list[np.ndarray]:
    """``layers`` well-conditioned matrices: (n, dim) first, then (dim, dim).

    Accepted below the ``percentile`` of random condition numbers, or below ``max_condition``.
    """

    def threshold_for(rows: int, cols: int | None = None) -> float:
        if max_condition is not None:
            return max_condition
        return condition_threshold(rows, rng, cols=cols, percentile=percentile)

    if dim == n:
        threshold = threshold_for(n)
        return [well_conditioned_matrix(n, threshold, rng) for _ in range(layers)]
    first = well_conditioned_matrix(n, threshold_for(n, dim), rng, cols=dim)
    if layers == 1:
        return [first]
    threshold = threshold_for(dim)
    return [first] + [well_conditioned_matrix(dim, threshold, rng) for _ in range(layers - 1)]


def layer_matrices(config: SyntheticConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """The mixing matrices of ``config.mixing``, one per layer."""
    n, layers = config.sources, config.layers
    if config.mixing == "orthogonal":
        return [stats.ortho_group.rvs(n, random_state=rng) if n > 1 else np.ones((1, 1)) for _ in range(layers)]
    if config.mixing == "shared":
        return mixing_matrices(n, n, 1, rng, config.condition_percentile, config.max_condition) * layers
    return mixing_matrices(n, config.observed_dim, layers, rng, config.condition_percentile, config.max_condition)


def segment_means(config: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """``(segments, sources)`` means: 0 (centered), U(-5, 5), and with ``means="easy"`` the second
    source's 2 pi(m) for a random permutation pi."""
    m, n = config.segments, config.sources
    means = np.zeros((m, n)) if config.centered else rng.uniform(-5.0, 5.0, size=(m, n))
    if config.means == "easy":
        means[:, 1] = 2.0 * rng.permutation(m)
    return means


def student_t_scale(dof: float) -> float:
    """The scale of a unit-variance Student-t (dof > 2); 1 when its variance is infinite."""
    return float(np.sqrt((dof - 2) / dof)) if dof > 2 else 1.0


def source_log_density(prior: str, s: np.ndarray, mean: np.ndarray, std: np.ndarray, dof: float = 3.0) -> np.ndarray:
    """Elementwise log-density of the sources (std is the standard deviation)."""
    if prior == "gauss":
        return stats.norm.logpdf(s, loc=mean, scale=std)
    if prior == "student-t":
        return stats.t.logpdf(s, dof, loc=mean, scale=std * student_t_scale(dof))
    if prior == "uniform":
        half = std * np.sqrt(3)
        return stats.uniform.logpdf(s, loc=mean - half, scale=2 * half)
    return stats.laplace.logpdf(s, loc=mean, scale=std / np.sqrt(2))


def unit_source_noise(config: SyntheticConfig, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Standardised draws of the suite's source families (zero location, unit variance when finite)."""
    if config.prior == "student-t":
        return student_t_scale(config.dof) * rng.standard_t(config.dof, size=size)
    return rng.uniform(-np.sqrt(3), np.sqrt(3), size=size)


def generate(config: SyntheticConfig) -> SyntheticData:
    """Draw a data set. The same config (seed included) gives the same arrays."""
    config.validate()
    rng = np.random.default_rng(config.seed)
    n, m, per = config.sources, config.segments, config.per_segment
    stds = rng.uniform(0.5, 3.0, size=(m, n))
    means = segment_means(config, rng)
    u = np.repeat(np.arange(m), per)
    if config.prior == "gauss":
        noise = rng.standard_normal((m * per, n))
    elif config.prior == "laplace":
        noise = rng.laplace(0.0, 1.0 / np.sqrt(2), size=(m * per, n))
    else:
        noise = unit_source_noise(config, (m * per, n), rng)
    s = means[u] + stds[u] * noise

    weights = layer_matrices(config, rng)
    exact = config.noise == 0 and config.obs == "gaussian" and config.observed_dim == n
    log_det = source_log_density(config.prior, s, means[u], stds[u], config.dof).sum(1)
    if config.mixing == "orthogonal":
        x, log_det = orthogonal_mixing(s, weights, config.activation, log_det, config.slope)
    else:
        x, log_det = mlp_mixing(s, weights, config.activation, log_det if exact else None, config.slope)
    if config.noise > 0:
        x = x + config.noise * rng.standard_normal(x.shape)
    if config.obs == "bernoulli":
        x = rng.binomial(1, 1.0 / (1.0 + np.exp(-x))).astype(np.float64)
    log_likelihood = log_det if exact else None
    return SyntheticData(
        x=x.astype(np.float32),
        u=u.astype(np.int64),
        s=s.astype(np.float32),
        log_likelihood=log_likelihood,
        means=means,
        stds=stds,
        weights=weights,
    )


def mlp_mixing(
    s: np.ndarray, weights: list[np.ndarray], activation: str, log_det: np.ndarray | None, slope: float = LEAKY_SLOPE
) -> tuple[np.ndarray, np.ndarray | None]:
    """x = W_L h(... h(s W_1)): the activation on all but the last layer; ``log_det`` (the log-density
    of s, or None when not tracked) minus the log-Jacobian of each layer."""
    exact = log_det is not None
    h = s
    for layer, w in enumerate(weights):
        a = h @ w
        if exact:
            log_det = log_det - np.log(abs(np.linalg.det(w)))
        if layer < len(weights) - 1:
            if exact:
                log_det = log_det - activation_log_derivative(activation, a, slope).sum(1)
            h = activate(activation, a, slope)
        else:
            h = a
    return h, log_det


def orthogonal_mixing(
    s: np.ndarray, weights: list[np.ndarray], activation: str, log_det: np.ndarray, slope: float = LEAKY_SLOPE
) -> tuple[np.ndarray, np.ndarray]:
    """ICE-BeeM's x = (h(... h(h(s) Q_1) ...)) Q_L: every layer the activation, then an orthogonal
    matrix (|det Q| = 1); ``log_det`` minus the activations' log-derivatives."""
    h = s
    for q in weights:
        log_det = log_det - activation_log_derivative(activation, h, slope).sum(1)
        h = activate(activation, h, slope) @ q
    return h, log_det
