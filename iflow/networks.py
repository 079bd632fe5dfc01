"""Plain networks shared by the priors and the VAE family."""

from __future__ import annotations

from torch import nn


def mlp(in_features: int, out_features: int, hidden: int = 64, layers: int = 2) -> nn.Sequential:
    """A plain MLP with SiLU activations and `layers` hidden layers."""
    modules: list[nn.Module] = []
    width = in_features
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), nn.SiLU()]
        width = hidden
    modules.append(nn.Linear(width, out_features))
    return nn.Sequential(*modules)
