"""The Bayes limits of the noisy synthetic generator: log p(x | u) and E[s | x, u] by importance sampling.

For x = f(s) + N(0, sigma^2 I), f the generator's xtanh mixing (:mod:`iflow.data.synthetic`) and
its Gaussian source prior p(s | u), importance sampling with K draws per point (proposal: 0.85 a
Student-t(4) at the Laplace approximation around the posterior mode, found by damped Gauss-Newton
from the linearised posterior at f^{-1}(x), widened 1.5x; 0.15 the prior p(s | u)) gives

- log p(x | u), nats per sample in the units of x: the true model's log-likelihood, which no model's
  log-likelihood (or importance-weighted bound) can exceed on average;
- E[s | x, u], the posterior mean. For any estimate g(x, u), corr(g, s_i)^2 <= Var(E[s_i | x, u]) / Var(s_i)
  = corr(E[s_i | x, u], s_i)^2, so the mean over components of corr(E[s_i | x, u], s_i) (the Bayes
  ceiling) bounds the MCC of every method.

Shapes: ``x: (N, d)``; ``m, v: (N, n)`` prior means and variances of each row's segment.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

from .synthetic import SyntheticData, xtanh

PROPOSAL_DF, PROPOSAL_WEIGHT, PROPOSAL_WIDEN = 4.0, 0.85, 1.5
CHUNK = 1000  # points per block of importance samples (bounds memory)


def inverse_xtanh(y: np.ndarray, iterations: int = 60) -> np.ndarray:
    """Solve tanh(a) + 0.1 a = y by Newton's method (xtanh is increasing, so the root is unique)."""
    a = np.clip(y, -50, 50).copy()
    for _ in range(iterations):
        a = a - (np.tanh(a) + 0.1 * a - y) / (1 - np.tanh(a) ** 2 + 0.1)
    return a


def mix(s: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
    """The generator's f: (..., n) -> (..., d)."""
    h = s
    for layer, w in enumerate(weights):
        a = h @ w
        h = xtanh(a) if layer < len(weights) - 1 else a
    return h


def jacobian(s: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
    """d f / d s in the row convention f(s + ds) ~ f(s) + ds J: (N, n, d)."""
    jac = np.broadcast_to(np.eye(s.shape[1]), (len(s), s.shape[1], s.shape[1])).copy()
    h = s
    for layer, w in enumerate(weights):
        a = h @ w
        jac = jac @ w
        if layer < len(weights) - 1:
            jac = jac * (1 - np.tanh(a) ** 2 + 0.1)[:, None, :]
            h = xtanh(a)
    return jac


def posterior_mode(
    x: np.ndarray, m: np.ndarray, v: np.ndarray, weights: list[np.ndarray], sigma: float, iterations: int = 30
) -> tuple[np.ndarray, np.ndarray]:
    """Damped Gauss-Newton on log p(s | x, u), started at the linearised posterior mean at f^{-1}(x)."""
    h = x @ np.linalg.inv(weights[-1])
    for w in reversed(weights[:-1]):
        h = inverse_xtanh(h) @ np.linalg.inv(w)
    eye = np.eye(x.shape[1])

    def precision(jac: np.ndarray) -> np.ndarray:
        return jac @ np.transpose(jac, (0, 2, 1)) / sigma**2 + eye / v[:, None, :]

    def log_post(s: np.ndarray) -> np.ndarray:
        return -0.5 * ((x - mix(s, weights)) ** 2).sum(1) / sigma**2 - 0.5 * ((s - m) ** 2 / v).sum(1)

    jac = jacobian(h, weights)
    gram = jac @ np.transpose(jac, (0, 2, 1)) / sigma**2
    mode = np.linalg.solve(precision(jac), (np.einsum("nij,nj->ni", gram, h) + m / v)[..., None])[..., 0]
    current = log_post(mode)
    for _ in range(iterations):
        jac = jacobian(mode, weights)
        grad = np.einsum("nij,nj->ni", jac, x - mix(mode, weights)) / sigma**2 - (mode - m) / v
        step = np.linalg.solve(precision(jac), grad[..., None])[..., 0]
        size = np.ones(len(x))
        for _ in range(8):  # halve the step where it does not improve
            worse = log_post(mode + size[:, None] * step) < current
            if not worse.any():
                break
            size = np.where(worse, size / 2, size)
        candidate = mode + size[:, None] * step
        value = log_post(candidate)
        better = value >= current
        mode, current = np.where(better[:, None], candidate, mode), np.where(better, value, current)
    return mode, np.linalg.inv(precision(jacobian(mode, weights)))


def importance_sampling(
    x: np.ndarray, m: np.ndarray, v: np.ndarray, weights: list[np.ndarray], sigma: float, samples: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log p(x | u), E[s | x, u] and the effective sample size, per point."""
    mode, cov = posterior_mode(x, m, v, weights, sigma)
    chol = np.linalg.cholesky(cov * PROPOSAL_WIDEN**2)
    n, k = x.shape[1], samples
    df = PROPOSAL_DF
    log_det = np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(1)
    gauss = rng.standard_normal((k, len(x), n))
    student = mode + np.einsum("nij,knj->kni", chol, gauss) * np.sqrt(df / rng.chisquare(df, (k, len(x), 1)))
    from_prior = m + np.sqrt(v) * rng.standard_normal((k, len(x), n))
    s = np.where(rng.random((k, len(x), 1)) < PROPOSAL_WEIGHT, student, from_prior)
    white = np.linalg.solve(chol[None], (s - mode)[..., None])[..., 0]
    log_t = (
        special.gammaln((df + n) / 2) - special.gammaln(df / 2) - n / 2 * np.log(df * np.pi) - log_det
        - (df + n) / 2 * np.log1p((white**2).sum(-1) / df)
    )  # fmt: skip
    log_prior = stats.norm.logpdf(s, m, np.sqrt(v)).sum(-1)
    log_q = np.logaddexp(np.log(PROPOSAL_WEIGHT) + log_t, np.log(1 - PROPOSAL_WEIGHT) + log_prior)
    log_w = stats.norm.logpdf(x, mix(s, weights), sigma).sum(-1) + log_prior - log_q
    norm = special.logsumexp(log_w, 0)
    w = np.exp(log_w - norm)
    return norm - np.log(k), (w[..., None] * s).sum(0), 1 / (w**2).sum(0)


def posterior_summaries(
    synthetic: SyntheticData, sigma: float, samples: int, rng: np.random.Generator, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log p(x | u) ``(N,)``, E[s | x, u] ``(N, n)`` and the effective sample size ``(N,)`` of the rows
    ``rows`` (default: all) of a Gaussian-source, xtanh-mixed data set with noise std ``sigma`` > 0."""
    if not sigma > 0:
        raise ValueError(f"the Bayes limits by importance sampling need noise sigma > 0, got {sigma}")
    rows = np.arange(len(synthetic.x)) if rows is None else rows
    x, u = synthetic.x[rows].astype(np.float64), synthetic.u[rows]
    m, v = synthetic.means[u], synthetic.stds[u] ** 2
    parts = [importance_sampling(x[i : i + CHUNK], m[i : i + CHUNK], v[i : i + CHUNK], synthetic.weights, sigma,
                                 samples, rng) for i in range(0, len(x), CHUNK)]  # fmt: skip
    log_lik, post_mean, ess = (np.concatenate(p) for p in zip(*parts, strict=False))
    return log_lik, post_mean, ess


def bayes_ceiling(post_mean: np.ndarray, s: np.ndarray) -> tuple[float, list[float]]:
    """Mean over sources of |corr(E[s_i | x, u], s_i)|, and each source's: the bound on any method's MCC."""
    corr = [abs(np.corrcoef(post_mean[:, i], s[:, i])[0, 1]) for i in range(s.shape[1])]
    return float(np.mean(corr)), [float(c) for c in corr]
