"""Build a model from its :class:`~iflow.config.ModelConfig` (the one place models are named)."""

from __future__ import annotations

from collections.abc import Callable

from nflows.transforms import CompositeTransform, Transform
from torch import nn

from ..config import ENCODERS, ModelConfig
from .decoders import OBSERVATIONS, build_observation
from ..data.dequantization import UnitLogit
from ..errors import UserError
from ..flows.build import FLOWS, build_flow
from ..flows.multiscale import image_glow
from .vae import VAE, GaussianEncoder
from .identifiable_flow import IdentifiableFlow
from ..priors import FAMILIES, ConditionalExpFamilyPrior, StandardNormalPrior, mlp


def conditional_prior(config: ModelConfig, dim: int) -> ConditionalExpFamilyPrior:
    """The shared conditional prior, fed by labels or by continuous u as the data calls for."""
    return ConditionalExpFamilyPrior(dim, config.prior, n_labels=config.aux.n_labels, aux_dim=config.aux.aux_dim)


def flow_for(config: ModelConfig) -> Transform:
    """The flow a config names; multi-scale on image data with ``--flow glow``; logit first on [0, 1) data."""
    if config.flow == "glow" and config.image_shape is not None:
        flow: Transform = image_glow(config.image_shape, **config.flow_options())
    else:
        flow = build_flow(config.flow, config.dim, **config.flow_options())
    return CompositeTransform([UnitLogit(), flow]) if config.unit_interval else flow


def identifiable_flow(config: ModelConfig) -> nn.Module:
    return IdentifiableFlow(flow_for(config), conditional_prior(config, config.dim))


def unconditional_flow(config: ModelConfig) -> nn.Module:
    return IdentifiableFlow(flow_for(config), StandardNormalPrior(config.dim))


VAE_LAYERS = 3  # hidden layers of encoder and decoder when --depth is not given
VAE_BETA = {"ivae": 1.0, "vae": 1.0, "betavae": 4.0, "tcvae": 6.0}  # default beta per model


def vae_family(config: ModelConfig) -> nn.Module:
    """iVAE (conditional prior, encoder sees u) or a baseline (N(0, I) prior, q(z | x)) on the same networks."""
    latent = config.latent_dim or config.dim
    layers = VAE_LAYERS if config.depth is None else config.depth
    identifiable = config.model == "ivae"
    product = config.encoder == "product"  # u then enters q only through the prior factor
    prior = conditional_prior(config, latent) if identifiable else StandardNormalPrior(latent)
    return VAE(
        GaussianEncoder(config.dim, latent, config.aux if identifiable and not product else None, config.hidden, layers),
        mlp(latent, config.dim, config.hidden, layers),
        build_observation(config.obs, config.dim, config.noise_var, config.learn_noise),
        prior,
        beta=VAE_BETA[config.model] if config.beta is None else config.beta,
        tc=config.model == "tcvae",
        anneal_steps=config.anneal_steps,
        iw_samples=config.iw_samples,
        train_samples=config.train_samples,
        product_posterior=product,
    )


def check_model_options(config: ModelConfig) -> None:
    """Raise :class:`UserError` for VAE options out of range or given to a flow."""
    checks = [
        (config.obs in OBSERVATIONS, f"unknown --obs {config.obs!r}; choose from {list(OBSERVATIONS)}"),
        (config.noise_var > 0, f"--noise-var must be > 0, got {config.noise_var}"),
        (config.beta is None or config.beta > 0, f"--beta must be > 0, got {config.beta}"),
        (config.anneal_steps >= 0, f"--anneal-steps must be >= 0, got {config.anneal_steps}"),
        (config.iw_samples >= 1, f"--iw-samples must be >= 1, got {config.iw_samples}"),
        (config.train_samples >= 1, f"--train-samples must be >= 1, got {config.train_samples}"),
        (config.latent_dim >= 0, f"--latent-dim must be >= 1, got {config.latent_dim}"),
        (config.encoder in ENCODERS, f"unknown --encoder {config.encoder!r}; choose from {list(ENCODERS)}"),
    ]
    if config.encoder == "product":
        checks += [
            (config.model in VAE_BETA, "--encoder product is for the VAE family; flows have no encoder"),
            (
                config.model != "ivae" or config.prior in ("gauss", "gauss-var"),
                f"--encoder product multiplies by a Gaussian prior: use --prior gauss or gauss-var, not {config.prior}",
            ),
        ]
    if config.train_samples > 1:
        beta = VAE_BETA.get(config.model, 1.0) if config.beta is None else config.beta
        plain_elbo = config.model != "tcvae" and beta == 1.0 and config.anneal_steps == 0
        weights = (
            f"--train-samples {config.train_samples} trains the importance-weighted bound, which has no beta, "
            "total-correlation or annealing weight; use --model ivae or vae with --beta 1 and --anneal-steps 0"
        )
        checks += [
            (config.model in VAE_BETA, "--train-samples is for the VAE family; flows train on the exact likelihood"),
            (plain_elbo, weights),
        ]
    if config.model not in VAE_BETA:
        checks += [
            (config.latent_dim in (0, config.dim), "--latent-dim is for the VAE family; flows have d latents"),
            (config.obs == "gaussian", f"--obs {config.obs} is for the VAE family; flows model continuous x"),
        ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


MODELS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "iflow": identifiable_flow,
    "flow": unconditional_flow,
    **{name: vae_family for name in VAE_BETA},
}


def build_model(config: ModelConfig) -> nn.Module:
    """Instantiate the model a config describes; unknown names raise :class:`UserError`."""
    if config.model not in MODELS:
        raise UserError(f"unknown --model {config.model!r}; choose from {sorted(MODELS)}")
    if config.flow not in FLOWS:
        raise UserError(f"unknown --flow {config.flow!r}; choose from {sorted(FLOWS)}")
    if config.prior not in FAMILIES:
        raise UserError(f"unknown --prior {config.prior!r}; choose from {sorted(FAMILIES)}")
    check_model_options(config)
    try:
        return MODELS[config.model](config)
    except ValueError as exc:  # a builder refusing its arguments, e.g. a coupling flow on 1-D data
        raise UserError(f"--model {config.model} --flow {config.flow}: {exc}") from None
