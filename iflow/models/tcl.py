"""Time-contrastive learning (Hyvärinen and Morioka, NeurIPS 2016).

An MLP feature extractor h(x) (its last layer followed by |.|, as in the paper) is trained
with a linear multinomial logistic regression on top to predict the segment u:

    log p(u | x) = w_u . h(x) + b_u - log sum_v exp(w_v . h(x) + b_v)

The latents are the features h(x), optionally followed by FastICA (``ica``; the paper's
last step), fitted after training by :meth:`TCL.fit_closed_form`. TCL has no likelihood
(``likelihood = "none"``): :meth:`TCL.log_prob` is the held-out criterion the trainer
validates on, log p(u | x).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..networks import mlp
from ..priors import StandardNormalPrior
from ..protocols import NO_LIKELIHOOD
from ..runtime import batched
from .linear_ica import LinearUnmixing


class TCL(nn.Module):
    """``x: (batch, dim)``, ``u: (batch,)`` integer segment labels; latents ``(batch, latent)``.

    ``prior`` is a parameter-free N(0, I) placeholder that nothing fits: TCL is not
    generative, so :meth:`decode` raises :class:`UserError`.
    """

    likelihood = NO_LIKELIHOOD
    sample_kind = "none: TCL is not a generative model"

    def __init__(self, dim: int, latent: int, n_labels: int, hidden: int, layers: int, ica: bool) -> None:
        super().__init__()
        self.features = mlp(dim, latent, hidden, layers)
        self.classifier = nn.Linear(latent, n_labels)
        self.ica = ica
        self.unmixing = LinearUnmixing(latent)  # the identity until fit_closed_form (with ica)
        self.prior = StandardNormalPrior(latent)

    @property
    def encode_kind(self) -> str:
        return "FastICA of the TCL features" if self.ica else "TCL features |h(x)|"

    def feature(self, x: Tensor) -> Tensor:
        """h(x): ``(batch, latent)``."""
        return self.features(x).abs()

    def log_prob(self, x: Tensor, u: Tensor) -> Tensor:
        """log p(u | x) per sample: ``(batch,)`` (not a likelihood of x)."""
        logits = self.classifier(self.feature(x))
        return torch.log_softmax(logits, dim=-1).gather(1, u[:, None]).squeeze(1)

    def loss(self, x: Tensor, u: Tensor) -> Tensor:
        """Cross-entropy of the segment classifier."""
        return -self.log_prob(x, u).mean()

    def encode(self, x: Tensor, u: Tensor | None = None) -> Tensor:
        return self.unmixing(self.feature(x))

    def decode(self, z: Tensor) -> Tensor:
        raise UserError("TCL is not a generative model: nothing to sample")

    def fit_prior(self, x: Tensor, u: Tensor, z: Tensor | None = None) -> None:
        """Nothing to fit: the placeholder prior has no parameters."""

    def final_linear(self) -> None:
        return None

    @torch.no_grad()
    def fit_closed_form(self, x: Tensor, u: Tensor, seed: int) -> None:
        """With ``ica``: FastICA of the trained features of the training rows ``x``."""
        if self.ica:
            self.eval()
            self.unmixing.fit_fastica(batched(self.feature, x), seed)
