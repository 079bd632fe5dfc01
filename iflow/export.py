"""A run's conditional prior as numbers: lambda(u) per label (or at given continuous u), with the
mean and variance beside it for the Gaussian families, in latent units."""

from __future__ import annotations

import numpy as np
import torch

from .errors import UserError, param
from .priors import ConditionalExpFamilyPrior
from .runs import Run, sampling_condition


def prior_parameters(run: Run, u: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """lambda(u) of the run's prior p(z | u), and for a Gaussian family its mean and variance.

    ``u``: for a model on labels, the labels to export (default every label, 0..K-1);
    for a model on continuous u, the values ``(n, aux_dim)`` in the training u's units
    (required). Returns ``natural_params`` (n, dim, n_stats), ``u`` as given, ``family``
    and, for ``gauss`` and ``gauss-var``, ``mean`` and ``variance`` (n, dim).
    """
    prior = run.model.prior
    if not isinstance(prior, ConditionalExpFamilyPrior):
        raise UserError(f"{param('model')} {run.model_config.model} has an N(0, I) prior that does not depend on u: "
                        "no lambda(u) to export")  # fmt: skip
    aux = run.model_config.aux
    if u is None and aux.kind != "labels":
        raise UserError("the model was trained on continuous u: give the values of u to export lambda(u) at")
    u = np.arange(aux.n_labels) if u is None else np.asarray(u)
    if u.ndim == 0 or len(u) == 0:
        raise UserError(f"give u as (n,) labels or (n, aux_dim) values, got shape {u.shape}")
    with torch.no_grad():  # u has n rows, so the condition is one per row: (n,) labels or (n, aux_dim)
        eta = prior.natural_params(sampling_condition(run, u, len(u)))
    out = {"natural_params": eta.cpu().numpy(), "u": u, "family": np.array(prior.family.name)}
    if prior.family.gaussian:
        mean, variance = prior.family.moments(eta)
        out.update(mean=mean.cpu().numpy(), variance=variance.cpu().numpy())
    return out
