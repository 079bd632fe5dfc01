"""Build a model from its :class:`~iflow.config.ModelConfig` (the one place models are named)."""

from __future__ import annotations

from collections.abc import Callable

from nflows.transforms import CompositeTransform, Transform
from torch import nn

from .config import ModelConfig
from .dequantization import UnitLogit
from .errors import UserError
from .flows import FLOWS, build_flow
from .image_flows import image_glow
from .models import IdentifiableFlow
from .priors import FAMILIES, ConditionalExpFamilyPrior, StandardNormalPrior


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


MODELS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "iflow": identifiable_flow,
    "flow": unconditional_flow,
}


def build_model(config: ModelConfig) -> nn.Module:
    """Instantiate the model a config describes; unknown names raise :class:`UserError`."""
    if config.model not in MODELS:
        raise UserError(f"unknown --model {config.model!r}; choose from {sorted(MODELS)}")
    if config.flow not in FLOWS:
        raise UserError(f"unknown --flow {config.flow!r}; choose from {sorted(FLOWS)}")
    if config.prior not in FAMILIES:
        raise UserError(f"unknown --prior {config.prior!r}; choose from {sorted(FAMILIES)}")
    try:
        return MODELS[config.model](config)
    except ValueError as exc:  # a builder refusing its arguments, e.g. a coupling flow on 1-D data
        raise UserError(f"--model {config.model} --flow {config.flow}: {exc}") from None
