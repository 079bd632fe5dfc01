"""Baselines fitted in closed form: FastICA on x (scikit-learn's), and x itself (doing nothing).

Neither has a likelihood (``likelihood = "none"``) nor a decoder; each is fitted by
:meth:`fit_closed_form` on the training rows instead of by the trainer (the registry
marks them ``trained=False``). :class:`LinearUnmixing` is also TCL's optional last step.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import UserError
from ..priors import StandardNormalPrior
from ..protocols import NO_LIKELIHOOD

FASTICA_MAX_ITER = 1000


class LinearUnmixing(nn.Module):
    """z -> (z - mean) W^T, the identity until :meth:`fit_fastica`; ``z: (batch, n)``.

    ``mean: (n,)`` and ``matrix W: (n, n)`` are buffers, saved with the model.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("matrix", torch.eye(dim))

    def forward(self, z: Tensor) -> Tensor:
        return (z - self.mean) @ self.matrix.t()

    def fit_fastica(self, z: Tensor, seed: int) -> None:
        """Set mean and W to scikit-learn's FastICA (unit-variance whitening, ``random_state=seed``) of ``z``."""
        from sklearn.decomposition import FastICA

        ica = FastICA(self.mean.shape[0], whiten="unit-variance", max_iter=FASTICA_MAX_ITER, random_state=seed)
        ica.fit(z.detach().cpu().double().numpy())
        self.mean.copy_(torch.as_tensor(np.asarray(ica.mean_), dtype=self.mean.dtype))
        self.matrix.copy_(torch.as_tensor(np.asarray(ica.components_), dtype=self.matrix.dtype))


class LinearICA(nn.Module):
    """FastICA on x (``unmix=True``) or x itself (``unmix=False``), behind the model contract.

    ``x: (batch, dim)``; the latents are ``(batch, dim)``. ``prior`` is a parameter-free
    N(0, I) placeholder that nothing fits: these baselines have no generative model, so
    :meth:`log_prob` and :meth:`decode` raise :class:`UserError`.
    """

    likelihood = NO_LIKELIHOOD
    sample_kind = "none: not a generative model"

    def __init__(self, dim: int, unmix: bool) -> None:
        super().__init__()
        self.unmix = unmix
        self.unmixing = LinearUnmixing(dim)
        self.prior = StandardNormalPrior(dim)

    @property
    def encode_kind(self) -> str:
        return "FastICA(x)" if self.unmix else "x itself"

    def log_prob(self, x: Tensor, u: Tensor) -> Tensor:
        raise UserError(f"{self.encode_kind} has no likelihood")

    def loss(self, x: Tensor, u: Tensor) -> Tensor:
        raise UserError(f"{self.encode_kind} is fitted in closed form, not by gradient steps")

    def encode(self, x: Tensor, u: Tensor | None = None) -> Tensor:
        return self.unmixing(x)

    def decode(self, z: Tensor) -> Tensor:
        raise UserError(f"{self.encode_kind} is not a generative model: nothing to sample")

    def fit_prior(self, x: Tensor, u: Tensor, z: Tensor | None = None) -> None:
        """Nothing to fit: the placeholder prior has no parameters."""

    def final_linear(self) -> None:
        return None

    @torch.no_grad()
    def fit_closed_form(self, x: Tensor, u: Tensor, seed: int) -> None:
        """FastICA of the training rows ``x: (n, dim)``; x itself keeps the identity."""
        if self.unmix:
            self.unmixing.fit_fastica(x, seed)
