"""A run's conditional prior as numbers: lambda(u) per label (or at given continuous u), with the
family's usual parameters beside it (mean and variance, variance, or scale), in latent units."""

from __future__ import annotations

import numpy as np
import torch

from .errors import UserError
from .priors import ConditionalExpFamilyPrior
from .runs import Run, sampling_condition


def prior_parameters(run: Run, u: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """lambda(u) of the run's prior p(z | u), and the family's usual parameters.

    ``u``: for a model on labels, the labels to export (default every label, 0..K-1);
    for a model on continuous u, the values ``(n, aux_dim)`` in the training u's units
    (required). Returns ``natural_params`` (n, dim, n_stats), ``u`` as given, ``family``
    and, by family, ``mean`` and ``variance``, ``variance``, or ``scale``: each (n, dim).
    """
    prior = getattr(run.model, "prior", None)
    if not isinstance(prior, ConditionalExpFamilyPrior):
        raise UserError(f"--model {run.model_config.model} has an N(0, I) prior that does not depend on u: no lambda(u)")
    aux = run.model_config.aux
    if u is None and aux.kind != "labels":
        raise UserError("the model was trained on continuous u: give the values to export at (--u-file FILE.npz)")
    u = np.arange(aux.n_labels) if u is None else np.asarray(u)
    if u.ndim == 0 or len(u) == 0:
        raise UserError(f"give u as (n,) labels or (n, aux_dim) values, got shape {u.shape}")
    with torch.no_grad():  # u has n rows, so the condition is one per row: (n,) labels or (n, aux_dim)
        eta = prior.natural_params(sampling_condition(run, u, len(u)))
        named = prior.family.readable_params(eta)
    out = {"natural_params": eta.cpu().numpy(), "u": u, "family": np.array(prior.family_name)}
    return {**out, **{name: value.cpu().numpy() for name, value in named.items()}}
