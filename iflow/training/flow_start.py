"""Start a VAE from latents found by a trained identifiable flow (``TrainConfig.start`` ``flow``).

From a random start the iVAE's bound can settle away from the sources: a bare ``--model ivae`` scored below x
itself on leaky-ReLU mixing (0.477 against 0.547, its MCC peaking after 4 epochs while the bound kept rising;
``benchmarks/ivae.md``). The identifiable flow, trained first on the same rows, finds latents z = g(x) in the
identifiable family; fitting the encoder's mean to z and the decoder to x from z puts the VAE in that basin,
and training on its own bound goes on from there. :func:`iflow.runs.start_from_flow` trains the flow; this
module fits the networks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import ModelConfig, TrainConfig
from ..defaults import defaults_for
from ..errors import UserError, param
from ..models.vae import VAE
from .trainer import refit_prior

FIT_STEPS = 2000  # about 4 CPU s at 5 dimensions; the mean squared error is then 0.01-0.03 (x, z standardised)
FIT_BATCH = 256
FIT_LR = 1e-3


def fit_to_latents(model: VAE, x: Tensor, u: Tensor, z: Tensor, seed: int, steps: int = FIT_STEPS) -> float:
    """Fit ``model``'s posterior mean to ``z`` and its decoder to ``x`` from ``z`` (Adam on the sum of the two
    mean squared errors), then run the prior's M-step on labels; returns the last batch's loss.

    ``x``: ``(n, d)`` in the model's units; ``u``: ``(n,)`` labels or ``(n, k)``; ``z``: ``(n, d)`` latents, of any
    scale (each component is standardised here: the flow's latent scale is arbitrary, the prior is refit).
    """
    z = (z - z.mean(0)) / z.std(0).clamp_min(torch.finfo(z.dtype).tiny)
    networks = [p for module in (model.encoder, model.decoder) for p in module.parameters()]
    optimizer = torch.optim.Adam(networks, lr=FIT_LR)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    loss = torch.zeros(())
    for _ in range(steps):
        rows = torch.randint(0, len(x), (min(FIT_BATCH, len(x)),), generator=generator).to(x.device)
        mean, _ = model.posterior(x[rows], u[rows])
        loss = ((mean - z[rows]) ** 2).mean() + ((model.decode(z[rows]) - x[rows]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    refit_prior(model, x, u)  # integer labels; a prior of continuous u is left to training
    model.eval()
    return float(loss.detach())


def flow_start_problems(config: ModelConfig) -> list[str]:
    """Why a flow cannot start the model ``config`` (filled from the data) describes; empty when it can: the iVAE
    with as many latents as observed dimensions (at least 2, for the coupling flow) and a Gaussian decoder."""
    checks = [
        (config.model == "ivae", f"{param('start')} flow starts the iVAE from an identifiable flow; not for "
                                 f"{param('model')} {config.model}"),
        (config.latent_dim == config.dim, f"{param('start')} flow needs as many latents as dimensions of x "
                                          f"({config.dim}), got {param('latent_dim')} {config.latent_dim}"),
        (config.dim >= 2, f"{param('start')} flow needs x of at least 2 dimensions (a coupling flow), got {config.dim}"),
        (config.obs == "gaussian", f"{param('start')} flow needs {param('obs')} gaussian (a flow models "
                                   f"continuous x), got {config.obs}"),
        (config.image_shape is None, f"{param('start')} flow is for vectors, not image data"),
    ]  # fmt: skip
    return [message for ok, message in checks if not ok]


def check_flow_start(config: ModelConfig) -> None:
    """:class:`UserError` with the first of :func:`flow_start_problems`, if any."""
    problems = flow_start_problems(config)
    if problems:
        raise UserError(problems[0])


def start_for(config: ModelConfig, train_config: TrainConfig, variational: bool) -> str:
    """``train_config.start`` if given; else the task's (``TaskDefaults.start``; ``variational``: the VAE family's)
    where a flow can start the model, and random weights where it cannot."""
    if train_config.start is not None:
        return train_config.start
    default = defaults_for(train_config.task, variational).start
    return "random" if default == "flow" and flow_start_problems(config) else default
