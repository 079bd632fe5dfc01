"""Two-dimensional benchmark densities: samplers and closed-form log-densities.

Each density draws ``sample(n, rng) -> (n, 2)`` and, where a closed form
exists, evaluates ``log_prob(x: (n, 2)) -> (n,)`` in nats. The differential
entropy H = -E[log p(x)] is the floor no model's expected negative
log-likelihood can go below; :meth:`Density2D.entropy` estimates it by Monte
Carlo with the true density.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import log_ndtr, logsumexp

LOG_2PI = math.log(2 * math.pi)


class Density2D:
    """A 2-D density with a sampler; ``log_prob`` is None-free only when ``has_density``."""

    name: str = ""
    has_density: bool = True

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` independent draws: ``(n, 2)`` float64."""
        raise NotImplementedError

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """True log-density in nats: ``(n, 2) -> (n,)`` (``-inf`` off the support)."""
        raise NotImplementedError(f"{self.name} has no closed-form density")

    def entropy(self, n: int = 500_000, seed: int = 12345) -> float:
        """Monte Carlo differential entropy -mean(log p(x)), x ~ p (nats); standard error ~ 0.002."""
        return float(-self.log_prob(self.sample(n, np.random.default_rng(seed))).mean())


class EightGaussians(Density2D):
    """Equal mixture of 8 isotropic Gaussians (std ``scale``) centred on a circle of ``radius``."""

    name = "eight-gaussians"

    def __init__(self, radius: float = 2.0, scale: float = 0.25) -> None:
        self.scale = scale
        angles = 2 * np.pi * np.arange(8) / 8
        self.centers = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        k = rng.integers(0, 8, n)
        return self.centers[k] + self.scale * rng.standard_normal((n, 2))

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        sq = ((x[:, None, :] - self.centers[None]) ** 2).sum(-1)  # (n, 8)
        log_component = -0.5 * sq / self.scale**2 - 2 * math.log(self.scale) - LOG_2PI
        return logsumexp(log_component, axis=1) - math.log(8)


class Checkerboard(Density2D):
    """Uniform on the 8 "black" unit cells of a 4 x 4 board on [-2, 2]^2 (density 1/8 there)."""

    name = "checkerboard"

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        col = rng.integers(0, 4, n)
        row = 2 * rng.integers(0, 2, n) + (col % 2)  # (row + col) even
        return np.stack([col, row], axis=1) - 2 + rng.random((n, 2))

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        cell = np.floor(x + 2)
        inside = np.all((cell >= 0) & (cell <= 3), axis=1) & ((cell.sum(1) % 2) == 0)
        return np.where(inside, -math.log(8), -np.inf)


class Rings(Density2D):
    """Concentric rings: a radial mixture, angle uniform.

    r ~ (1/K) sum_k N(r_k, sigma^2) truncated to r > 0, theta ~ U(0, 2 pi), so
    p(x) = p_r(|x|) / (2 pi |x|).
    """

    name = "rings"

    def __init__(self, radii: tuple[float, ...] = (1.0, 2.0, 3.0), scale: float = 0.2) -> None:
        self.radii = np.asarray(radii, dtype=np.float64)
        self.scale = scale

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        centre = self.radii[rng.integers(0, len(self.radii), n)]
        r = centre + self.scale * rng.standard_normal(n)
        while np.any(bad := r <= 0):  # truncation: redraw the (rare) negative radii
            r[bad] = centre[bad] + self.scale * rng.standard_normal(int(bad.sum()))
        theta = rng.uniform(0, 2 * np.pi, n)
        return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)

    def log_radius(self, r: np.ndarray) -> np.ndarray:
        """log p_r(r) of the truncated radial mixture, ``(n,) -> (n,)``."""
        z = (r[:, None] - self.radii[None]) / self.scale
        log_component = -0.5 * z**2 - math.log(self.scale) - 0.5 * LOG_2PI - log_ndtr(self.radii / self.scale)
        return logsumexp(log_component, axis=1) - math.log(len(self.radii))

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        r = np.linalg.norm(x, axis=1)
        with np.errstate(divide="ignore"):
            return self.log_radius(r) - np.log(2 * np.pi * r)


class TwoMoons(Density2D):
    """Two interleaved half circles with Gaussian noise (sampler only; no closed-form density)."""

    name = "moons"
    has_density = False

    def __init__(self, noise: float = 0.1) -> None:
        self.noise = noise

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        t = rng.uniform(0, np.pi, n)
        upper = rng.random(n) < 0.5
        x = np.where(upper, np.cos(t), 1 - np.cos(t))
        y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
        return np.stack([x, y], axis=1) + self.noise * rng.standard_normal((n, 2))


DENSITIES: dict[str, Density2D] = {d.name: d for d in (EightGaussians(), Checkerboard(), Rings(), TwoMoons())}
