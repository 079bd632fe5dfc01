"""The noisy benchmark's limits, from the true generator: log p(x | u) and the Bayes ceiling on MCC.

    OMP_NUM_THREADS=1 python benchmarks/noisy_ceiling.py --seeds 1 2 3 4 5     # about 3 CPU minutes per seed

For x = f(s) + N(0, sigma^2 I) with the generator's own f and source prior, importance sampling with K
draws per point (proposal: 0.85 a Student-t(4) at the Laplace approximation around the posterior mode,
found by damped Gauss-Newton from the linearised posterior at f^{-1}(x), widened 1.5x; 0.15 the prior
p(s | u)) gives

- log p(x | u), nats per sample in the units of x: the true model's log-likelihood, which no model's
  log-likelihood (or importance-weighted bound) can exceed on average;
- E[s | x, u], the posterior mean. For any estimate g(x, u), corr(g, s_i)^2 <= Var(E[s_i | x, u]) / Var(s_i)
  = corr(E[s_i | x, u], s_i)^2, so the mean over components of corr(E[s_i | x, u], s_i) bounds the MCC of
  every method (posterior means of an iVAE included).

Prints one line per seed (with the effective sample size of the weights); --json writes the numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import special, stats

from iflow.metrics import mcc
from iflow.data.synthetic import SyntheticConfig, generate, xtanh

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


def posterior_mode(x, m, v, weights, sigma, iterations: int = 30):
    """Damped Gauss-Newton on log p(s | x, u), started at the linearised posterior mean at f^{-1}(x)."""
    h = x @ np.linalg.inv(weights[-1])
    for w in reversed(weights[:-1]):
        h = inverse_xtanh(h) @ np.linalg.inv(w)
    eye = np.eye(x.shape[1])

    def precision(jac):
        return jac @ np.transpose(jac, (0, 2, 1)) / sigma**2 + eye / v[:, None, :]

    def log_post(s):
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


def importance_sampling(x, m, v, weights, sigma, samples: int, rng: np.random.Generator):
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


def ceiling(seed: int, sigma: float, samples: int) -> dict:
    synthetic = generate(SyntheticConfig(noise=sigma, seed=seed))
    x, u = synthetic.x.astype(np.float64), synthetic.u
    m, v = synthetic.means[u], synthetic.stds[u] ** 2
    rng = np.random.default_rng(0)
    parts = [importance_sampling(x[i : i + CHUNK], m[i : i + CHUNK], v[i : i + CHUNK], synthetic.weights, sigma,
                                 samples, rng) for i in range(0, len(x), CHUNK)]  # fmt: skip
    log_lik, post_mean, ess = (np.concatenate(p) for p in zip(*parts))
    corr = [abs(np.corrcoef(post_mean[:, i], synthetic.s[:, i])[0, 1]) for i in range(synthetic.s.shape[1])]
    return {
        "seed": seed,
        "noise_std": sigma,
        "samples": samples,
        "true_log_likelihood": float(log_lik.mean()),
        "bayes_ceiling": float(np.mean(corr)),
        "bayes_ceiling_per_source": [float(c) for c in corr],
        "mcc_posterior_mean": float(mcc(post_mean, synthetic.s).mcc),
        "mcc_x": float(mcc(synthetic.x, synthetic.s).mcc),
        "ess_median": float(np.median(ess)),
        "ess_1_percent": float(np.percentile(ess, 1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--noise", type=float, default=0.1, help="observation noise standard deviation")
    parser.add_argument("--samples", type=int, default=1000, help="importance samples per point")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        row = ceiling(seed, args.noise, args.samples)
        rows.append(row)
        print(
            f"seed {seed}: true log p(x | u) {row['true_log_likelihood']:.3f} nats/sample; Bayes ceiling on MCC "
            f"{row['bayes_ceiling']:.3f} (MCC of E[s | x, u] {row['mcc_posterior_mean']:.3f}, of x {row['mcc_x']:.3f}); "
            f"ESS median {row['ess_median']:.0f} of {args.samples}, 1st percentile {row['ess_1_percent']:.0f}",
            flush=True,
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
