"""Build a model from its :class:`~iflow.config.ModelConfig`: the registry that names every model.

Each entry says which options of the config the model reads (:data:`MODELS`); an option
given to a model that does not read it is an error, and is left out of ``config.json``.
Adding a model is one file with a class that follows :class:`~iflow.protocols.Model`
plus one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

from nflows.transforms import CompositeTransform, Transform

from ..config import ENCODERS, POSTERIORS, ModelConfig
from ..errors import UserError, param
from ..flexible_priors import FLEXIBLE_PRIORS
from ..flows.build import FLOWS, build_flow, check_options
from ..flows.multiscale import image_glow
from ..flows.unit_logit import UnitLogit
from ..networks import mlp
from ..priors import FAMILIES, ConditionalExpFamilyPrior, StandardNormalPrior
from ..protocols import ConditionalPrior, Model
from .decoders import OBSERVATIONS, GaussianObservation, build_observation
from .flow_decoder import noisy_flow
from .flow_posterior import FlowPosterior
from .identifiable_flow import IdentifiableFlow
from .linear_ica import LinearICA
from .tcl import TCL
from .vae import VAE, GaussianEncoder

DEFAULT_PRIOR = "gauss"  # the one prior of a model whose config names none


def conditional_prior(config: ModelConfig, dim: int) -> ConditionalPrior:
    """The shared conditional prior, fed by labels or by continuous u as the data calls for."""
    if config.prior in FLEXIBLE_PRIORS:  # not exponential families: integer labels only, flows only
        return FLEXIBLE_PRIORS[config.prior](dim, n_labels=config.aux.n_labels, aux_dim=config.aux.aux_dim)
    return ConditionalExpFamilyPrior(dim, config.prior, n_labels=config.aux.n_labels, aux_dim=config.aux.aux_dim)


def flow_for(config: ModelConfig) -> Transform:
    """The flow a config names; multi-scale on image data with flow glow; logit first on [0, 1) data."""
    if config.flow == "glow" and config.image_shape is not None:
        check_options(image_glow, "glow (multi-scale)", config.flow_options())
        flow: Transform = image_glow(config.image_shape, **config.flow_options())
    else:
        flow = build_flow(config.flow, config.dim, **config.flow_options())
    return CompositeTransform([UnitLogit(), flow]) if config.unit_interval else flow


def identifiable_flow(config: ModelConfig) -> Model:
    return IdentifiableFlow(flow_for(config), conditional_prior(config, config.dim))


def unconditional_flow(config: ModelConfig) -> Model:
    return IdentifiableFlow(flow_for(config), StandardNormalPrior(config.dim))


VAE_LAYERS = 3  # hidden layers of encoder and decoder when depth is not given
VAE_HIDDEN = 64  # their width when hidden is not given


DEFAULT_TRAIN_SAMPLES = 8  # the IW bound where it applies: on the noisy benchmark 0.614 against the ELBO's 0.541
PLAIN_ELBO_MODELS = ("ivae", "vae", "noisy-iflow")  # the models whose objective can be the IW bound


def train_samples_for(config: ModelConfig) -> int:
    """K of the training objective: as given, else the IW bound (K = 8) for the plain ELBO's models, else 1."""
    if config.train_samples is not None:
        return config.train_samples
    plain = config.model in PLAIN_ELBO_MODELS and config.beta in (None, 1.0) and config.anneal_steps == 0
    return DEFAULT_TRAIN_SAMPLES if plain and config.objective_weights is None else 1


def posterior_flow_for(config: ModelConfig, latent: int, hidden: int) -> FlowPosterior | None:
    """The flow bending q(z | x, u) when ``config.posterior`` is ``flow`` (``latent`` z, context x), else None."""
    return FlowPosterior(latent, config.dim, hidden, config.posterior_depth) if config.posterior == "flow" else None


def vae_family(config: ModelConfig, identifiable: bool, beta: float, tc: bool) -> Model:
    """iVAE (``identifiable``: conditional prior, encoder sees u) or a baseline (N(0, I) prior,
    q(z | x)) on the same networks; ``beta`` is the default KL (``tc``: total-correlation) weight."""
    latent = config.latent_dim or config.dim
    layers = VAE_LAYERS if config.depth is None else config.depth
    hidden = VAE_HIDDEN if config.hidden is None else config.hidden
    product = config.encoder == "product"  # u then enters q only through the prior factor
    prior = conditional_prior(config, latent) if identifiable else StandardNormalPrior(latent)
    return VAE(
        GaussianEncoder(config.dim, latent, config.aux if identifiable and not product else None, hidden, layers),
        mlp(latent, config.dim, hidden, layers),
        build_observation(config.obs, config.dim, config.noise_var, config.learn_noise),
        prior,
        beta=beta if config.beta is None else config.beta,
        tc=tc,
        anneal_steps=config.anneal_steps,
        iw_samples=config.iw_samples,
        train_samples=train_samples_for(config),
        product_posterior=product,
        posterior_flow=posterior_flow_for(config, latent, hidden),
        objective_weights=None if config.objective_weights is None else tuple(config.objective_weights),
    )


def noisy_identifiable_flow(config: ModelConfig) -> Model:
    """The identifiable flow followed by Gaussian noise (:mod:`iflow.models.flow_decoder`)."""
    return noisy_flow(
        flow_for(config),
        conditional_prior(config, config.dim),
        GaussianObservation(config.dim, config.noise_var, config.learn_noise),
        config.aux,
        VAE_HIDDEN,
        VAE_LAYERS,
        posterior_flow=posterior_flow_for(config, config.dim, VAE_HIDDEN),
        iw_samples=config.iw_samples,
        train_samples=train_samples_for(config),
    )


def time_contrastive(config: ModelConfig) -> Model:
    """TCL on integer labels: an MLP of the VAE's default size with d features."""
    if config.aux.kind != "labels":
        raise UserError(f"{param('model')} tcl classifies integer segment labels; here {config.aux.describe()}")
    layers = VAE_LAYERS if config.depth is None else config.depth
    hidden = VAE_HIDDEN if config.hidden is None else config.hidden
    return TCL(config.dim, config.dim, config.aux.n_labels, hidden, layers, config.tcl_ica)


FLOW_OPTIONS = frozenset({"flow", "depth", "hidden", "bins", "tail_bound"})
VAE_OPTIONS = frozenset(
    {"depth", "hidden", "latent_dim", "obs", "noise_var", "learn_noise", "beta", "anneal_steps", "iw_samples",
     "train_samples", "encoder", "posterior", "posterior_depth", "objective_weights"}
)  # fmt: skip
TCL_OPTIONS = frozenset({"depth", "hidden", "tcl_ica"})
NOISY_FLOW_OPTIONS = FLOW_OPTIONS | {"prior", "noise_var", "learn_noise", "iw_samples", "train_samples", "posterior",
                                     "posterior_depth"}  # fmt: skip
OPTIONS = FLOW_OPTIONS | VAE_OPTIONS | TCL_OPTIONS | {"prior"}  # the fields of ModelConfig that only some models read


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder and the options (fields of ModelConfig) it reads."""

    build: Callable[[ModelConfig], Model]
    options: frozenset[str]
    variational: bool = False  # trained on a bound (the VAE family): importance-weighted options apply
    trained: bool = True  # by the trainer's gradient steps
    closed_form: bool = False  # fit_closed_form after training, or instead of it (see iflow.protocols.ClosedFormModel)


def vae_entry(identifiable: bool, beta: float = 1.0, tc: bool = False) -> ModelEntry:
    options = VAE_OPTIONS | {"prior"} if identifiable else VAE_OPTIONS
    return ModelEntry(lambda config: vae_family(config, identifiable, beta, tc), options, variational=True)


MODELS: dict[str, ModelEntry] = {
    "iflow": ModelEntry(identifiable_flow, FLOW_OPTIONS | {"prior"}),
    "flow": ModelEntry(unconditional_flow, FLOW_OPTIONS),
    "ivae": vae_entry(identifiable=True),
    "vae": vae_entry(identifiable=False),
    "betavae": vae_entry(identifiable=False, beta=4.0),
    "tcvae": vae_entry(identifiable=False, beta=6.0, tc=True),
    "noisy-iflow": ModelEntry(noisy_identifiable_flow, NOISY_FLOW_OPTIONS, variational=True),
    "tcl": ModelEntry(time_contrastive, TCL_OPTIONS, closed_form=True),
    "fastica": ModelEntry(lambda config: LinearICA(config.dim, unmix=True), frozenset(), trained=False, closed_form=True),
    "identity": ModelEntry(lambda config: LinearICA(config.dim, unmix=False), frozenset(), trained=False, closed_form=True),
}


def model_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise UserError(f"unknown {param('model')} {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name]


def readers(option: str) -> str:
    """The models that read ``option``, for messages."""
    names = [name for name, entry in MODELS.items() if option in entry.options]
    family = all(MODELS[name].variational for name in names)
    return f"the VAE family ({', '.join(names)})" if family else f"models {', '.join(names)}"


def unused_options(config: ModelConfig) -> list[str]:
    """Options set away from their defaults that the config's model does not read."""
    defaults = ModelConfig()
    reads = model_entry(config.model).options
    unused = [name for name in sorted(OPTIONS - reads) if getattr(config, name) != getattr(defaults, name)]
    return [name for name in unused if not (name == "latent_dim" and config.latent_dim == config.dim)]


def applicable_fields(config: ModelConfig) -> set[str]:
    """The fields of ``config`` that describe its model (what ``config.json`` records)."""
    return {f.name for f in fields(ModelConfig)} - (OPTIONS - model_entry(config.model).options)


def check_model_options(config: ModelConfig) -> None:
    """:class:`UserError` for names that are not registered, options out of range, and options
    given to a model that does not read them (a prior left unnamed: :func:`with_prior`)."""
    entry = model_entry(config.model)
    config = with_prior(config)
    for name in unused_options(config):
        value = getattr(config, name)
        given = f"{param(name)} {value}" if isinstance(value, str) else param(name)
        raise UserError(f"{given} is for {readers(name)}; {param('model')} {config.model} does not use it")
    if "flow" in entry.options and config.flow not in FLOWS:
        raise UserError(f"unknown {param('flow')} {config.flow!r}; choose from {sorted(FLOWS)}")
    priors = FAMILIES if entry.variational else {**FAMILIES, **FLEXIBLE_PRIORS}  # the VAE's M-step needs E_q[T(z)]
    if "prior" in entry.options and config.prior not in priors:
        raise UserError(
            f"unknown {param('prior')} {config.prior!r} for {param('model')} {config.model}; choose from {sorted(priors)}"
        )
    if entry.variational:
        check_vae_options(config)


def check_vae_options(config: ModelConfig) -> None:
    checks = [
        (config.obs in OBSERVATIONS, f"unknown {param('obs')} {config.obs!r}; choose from {list(OBSERVATIONS)}"),
        (config.noise_var > 0, f"{param('noise_var')} must be > 0, got {config.noise_var}"),
        (config.beta is None or config.beta > 0, f"{param('beta')} must be > 0, got {config.beta}"),
        (config.anneal_steps >= 0, f"{param('anneal_steps')} must be >= 0, got {config.anneal_steps}"),
        (config.iw_samples >= 1, f"{param('iw_samples')} must be >= 1, got {config.iw_samples}"),
        (config.train_samples is None or config.train_samples >= 1,
         f"{param('train_samples')} must be >= 1, got {config.train_samples}"),
        (config.latent_dim >= 0, f"{param('latent_dim')} must be >= 1, got {config.latent_dim}"),
        (config.encoder in ENCODERS, f"unknown {param('encoder')} {config.encoder!r}; choose from {list(ENCODERS)}"),
        (
            config.encoder != "product" or config.model != "ivae" or FAMILIES[config.prior].gaussian,
            f"{param('encoder')} product multiplies by a Gaussian prior: use {param('prior')} gauss or gauss-var, "
            f"not {config.prior}",
        ),
    ]
    checks += posterior_checks(config)
    if (config.train_samples or 1) > 1:
        plain_elbo = config.model in PLAIN_ELBO_MODELS and config.beta in (None, 1.0) and config.anneal_steps == 0
        weights = (
            f"{param('train_samples')} {config.train_samples} trains the importance-weighted bound, which has no "
            f"beta, total-correlation or annealing weight; use {param('model')} ivae or vae with {param('beta')} 1 "
            f"and {param('anneal_steps')} 0"
        )
        checks.append((plain_elbo, weights))
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def posterior_checks(config: ModelConfig) -> list[tuple[bool, str]]:
    """(ok, message) for the posterior family and the objective weights."""
    flow, weights = config.posterior == "flow", config.objective_weights
    return [
        (config.posterior in POSTERIORS, f"unknown {param('posterior')} {config.posterior!r}; choose from {list(POSTERIORS)}"),
        (config.posterior_depth >= 1, f"{param('posterior_depth')} must be >= 1, got {config.posterior_depth}"),
        (not flow or config.latent_dim != 1, f"{param('posterior')} flow needs {param('latent_dim')} >= 2"),
        (not flow or config.model != "tcvae", f"{param('posterior')} flow has no total-correlation term: not for tcvae"),
        (weights is None or len(weights) == 4, f"{param('objective_weights')} takes four numbers a b c d, got {weights}"),
        (weights is None or ((config.train_samples or 1) == 1 and config.model != "tcvae" and not flow),
         f"{param('objective_weights')} re-weights the ELBO of a Gaussian posterior: not with {param('train_samples')} "
         f"> 1, {param('posterior')} flow or tcvae"),
    ]  # fmt: skip


def with_prior(config: ModelConfig) -> ModelConfig:
    """``config`` with the Gaussian prior where its model reads a prior and it names none (the choice
    among priors that a task may make instead is :func:`iflow.selection.plan_candidates`')."""
    if config.prior is None and "prior" in model_entry(config.model).options:
        return replace(config, prior=DEFAULT_PRIOR)
    return config


def build_model(config: ModelConfig) -> Model:
    """Instantiate the model a config describes (a prior left unnamed: :func:`with_prior`); bad names or
    options raise :class:`UserError`."""
    config = with_prior(config)
    check_model_options(config)
    try:
        return MODELS[config.model].build(config)
    except ValueError as exc:  # a builder refusing its arguments, e.g. a coupling flow on 1-D data
        raise UserError(f"{param('model')} {config.model}, {param('flow')} {config.flow}: {exc}") from None
