"""Runs: a model planned for a data set, trained, evaluated, saved atomically and loaded back.

A run directory holds ``config.json`` (enough to rebuild the model, plus the
standardisation of x), ``model.pt`` (weights), ``metrics.json``,
``history.json`` (and the same curve as ``history.csv``), ``timing.json`` and ``figures/``; while training, ``checkpoint.pt`` (see
:mod:`iflow.training.checkpoint`), removed once the run is saved.

Everything that can be decided before training is decided once, in :func:`plan_run`:
the filled and validated configs, the standardisation, the split and the seeded model.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .config import FORMAT_VERSION, ModelConfig, TrainConfig, model_config_from_dict, to_dict, train_config_from_dict
from .data.dataset import Dataset, Standardizer, aux_spec, check_aux, is_real_numeric
from .data.dequantization import dequantized
from .data.images import check_levels
from .defaults import with_task_defaults
from .errors import UserError, param
from .files import atomic_write, save_csv, save_json
from .metrics import bits_per_dim, mcc
from .models.build import applicable_fields, build_model, model_entry, with_prior
from .models.decoders import check_observations
from .models.sampling import sample as sample_model
from .protocols import EXACT, NO_LIKELIHOOD, Model
from .runfiles import check_config, check_sizes, check_weights
from .runtime import as_tensors, batched, resolve_device, seed_everything, torch_threads
from .splits import describe_training_data
from .training.checkpoint import Checkpointing
from .training.closed_form import fit_closed_form
from .training.epoch_end import uses_linear_fit
from .training.flow_start import check_flow_start, fit_to_latents, start_for
from .training.precision import check_precision
from .training.trainer import TrainResult, fit, split_for_training
from .units import DATA_UNITS, HISTORY_UNITS, add_data_units

log = logging.getLogger(__name__)

CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE, HISTORY_FILE = "config.json", "model.pt", "metrics.json", "history.json"
HISTORY_CSV = "history.csv"  # one row per epoch: the curve of history.json
TIMING_FILE = "timing.json"  # wall times, kept apart so identical runs write identical result files


@dataclass
class Run:
    """A trained model with everything needed to apply it to new data."""

    model: Model
    model_config: ModelConfig
    train_config: TrainConfig
    standardizer: Standardizer
    directory: Path | None = None
    aux_standardizer: Standardizer | None = None  # continuous u: standardised like x (None: labels)
    training_data: dict | None = None  # rows and fingerprint of the training data (iflow.splits)

    @property
    def device(self) -> torch.device:
        return next(itertools.chain(self.model.parameters(), self.model.buffers())).device

    def standardized(self, data: Dataset) -> Dataset:
        """Check ``data`` against the run and return it in the model's units."""
        if data.dim != self.model_config.dim:
            raise UserError(f"{data.source}: x has {data.dim} dimensions but the run was trained on {self.model_config.dim}")
        check_aux(data.u, self.model_config.aux, data.source)
        check_observations(data.x, self.model_config.obs, data.source)
        if self.model_config.unit_interval:
            check_levels(data, self.standardizer)
        dequantize = data.dequantize / self.standardizer.std if np.any(data.dequantize) else 0.0
        u = data.u if self.aux_standardizer is None else self.aux_standardizer(data.u)
        return replace(data, x=self.standardizer(data.x, data.source), u=u, dequantize=dequantize)


@dataclass(frozen=True)
class RunPlan:
    """A run decided before training: ``run`` holds the seeded, untrained model and the filled
    configs; ``train_data`` is the data in the model's units; ``split`` the (train, validation) rows."""

    run: Run
    data: Dataset
    train_data: Dataset
    split: tuple[np.ndarray, np.ndarray]


def standardizer_for(data: Dataset, model_config: ModelConfig) -> Standardizer:
    """Bounded data: a fixed map to the unit interval; discrete observations for a bernoulli or
    poisson decoder: kept as they are; otherwise per-dimension mean and standard deviation."""
    if data.bounds:
        return Standardizer.unit_range(*data.bounds, data.dim)
    if model_config.obs == "gaussian":
        return Standardizer.fit(data.x)
    return Standardizer(np.zeros(data.dim), np.ones(data.dim))


def fill_model_config(data: Dataset, model_config: ModelConfig) -> ModelConfig:
    """The config with what the data say: dimension, auxiliary variable, image shape, bounds;
    the VAE family's latent dimension defaults to the observed one."""
    filled = replace(
        model_config,
        dim=data.dim,
        aux=aux_spec(data.u, data.source),
        image_shape=data.image_shape,
        unit_interval=data.bounds is not None,
    )
    if model_entry(model_config.model).variational:
        filled = replace(filled, latent_dim=model_config.latent_dim or data.dim)
    return filled


def plan_run(data: Dataset, model_config: ModelConfig, train_config: TrainConfig) -> RunPlan:
    """Validate and fill the configs, standardise, split and build the seeded model: everything
    that can fail fails here, before any training (and before a run directory is touched)."""
    train_config.validate()
    entry = model_entry(model_config.model)
    model_config, train_config = with_task_defaults(data, model_config, train_config, "flow" in entry.options,
                                                    entry.variational)  # fmt: skip
    resolve_device(train_config.device)
    model_config = with_prior(fill_model_config(data, model_config))
    train_config = replace(train_config, start=start_for(model_config, train_config, entry.variational))
    if train_config.start == "flow":
        check_flow_start(model_config)
    split = split_for_training(data, train_config)
    seed_everything(train_config.seed)  # the initial weights are part of what the seed fixes
    model = build_model(model_config)
    uses_linear_fit(model, train_config)  # refuses a linear fit the model cannot have
    check_precision(model, train_config)  # and a precision it cannot train at
    aux_standardizer = Standardizer.fit(data.u) if model_config.aux.kind == "continuous" else None
    run = Run(model, model_config, train_config, standardizer_for(data, model_config),
              aux_standardizer=aux_standardizer, training_data=describe_training_data(data))  # fmt: skip
    check_observations(data.x, model_config.obs, data.source)
    return RunPlan(run, data, run.standardized(data), split)


def train_planned(
    plan: RunPlan, progress: bool = True, checkpoint: Checkpointing | None = None
) -> tuple[Run, TrainResult]:
    """Train the planned model in place, with ``train_config.threads`` torch threads."""
    run = plan.run
    if checkpoint is not None:  # a resumed run must have the same model too
        model_options = {f"model.{k}": v for k, v in asdict(run.model_config).items()}
        checkpoint = replace(checkpoint, context={**checkpoint.context, **model_options})
    entry = model_entry(run.model_config.model)
    resumes = checkpoint is not None and checkpoint.resume and checkpoint.path.exists()
    with torch_threads(run.train_config.threads):
        if run.train_config.start == "flow" and not resumes:  # a resumed run restores the weights it had
            start_from_flow(plan, progress)
        result = None
        if entry.trained:
            result = fit(run.model, plan.train_data, run.train_config, progress, checkpoint, plan.split)
        if entry.closed_form:
            result = fit_closed_form(run.model, plan.train_data, run.train_config, plan.split, result)
    if run.model.likelihood != NO_LIKELIHOOD:  # TCL validates on log p(u | x): no units of x to convert
        add_data_units(result.history, run.standardizer.log_abs_det)
    return run, result


def start_from_flow(plan: RunPlan, progress: bool) -> Run:
    """Train the identifiable flow on the plan's data (its defaults; the plan's prior family, seed, split and
    device), then fit the plan's VAE to the flow's latents of the training rows
    (:func:`iflow.training.flow_start.fit_to_latents`); returns the flow's run."""
    config = plan.run.train_config
    flow_config = TrainConfig(seed=config.seed, split_seed=config.split_seed, val_fraction=config.val_fraction,
                              task=config.task, device=config.device, threads=config.threads)  # fmt: skip
    flow_plan = plan_run(plan.data, ModelConfig(model="iflow", prior=plan.run.model_config.prior), flow_config)
    if not np.array_equal(flow_plan.split[0], plan.split[0]):
        raise AssertionError("the flow that starts the VAE must train on the VAE's training rows")
    log.info("iflow: start flow: training the identifiable flow first")
    flow_run, flow_result = train_planned(flow_plan, progress)
    rows = plan.split[0]
    x, u = as_tensors(plan.train_data.x[rows], plan.train_data.u[rows], plan.run.device)
    flow_run.model.eval()
    z = batched(flow_run.model.encode, x, u)  # batched runs without gradients
    error = fit_to_latents(plan.run.model, x, u, z, config.seed)
    log.info("iflow: start flow: the flow stopped after %d epochs (%s); the %s's encoder and decoder fitted to its "
             "latents (mean squared error %.3f); training the %s", len(flow_result.history),
             flow_result.stop_reason, plan.run.model_config.model, error, plan.run.model_config.model)  # fmt: skip
    return flow_run


def train(
    data: Dataset,
    model_config: ModelConfig,
    train_config: TrainConfig,
    progress: bool = True,
    checkpoint: Checkpointing | None = None,
) -> tuple[Run, TrainResult]:
    """Plan and train a run on ``data`` (see :func:`plan_run`, :func:`train_planned`).

    Nothing but the optional resume ``checkpoint`` is written.
    """
    return train_planned(plan_run(data, model_config, train_config), progress, checkpoint)


def log_likelihoods(run: Run, data: Dataset) -> np.ndarray:
    """log p(x | u) per row in nats, in the units of the given x (discrete data dequantised with
    a fixed seed): ``(n,)``; for the VAE family the bound named by ``run.model.likelihood``."""
    std_data = run.standardized(dequantized(data))
    x, u = as_tensors(std_data.x, std_data.u, run.device)
    run.model.eval()
    return batched(run.model.log_prob, x, u).cpu().double().numpy() + run.standardizer.log_abs_det


def evaluate(run: Run, data: Dataset) -> dict:
    """Log-likelihood per sample (nats, in the units of the given x), bits/dim, MCC.

    Bits/dim = -log p(x | u) / (d ln 2). With a known true log-likelihood
    (synthetic data), ``true_log_likelihood`` and the ``gap`` (true - model) too.
    Discrete data (``data.dequantize``) are dequantised with a fixed seed first, so
    bits/dim follows :mod:`iflow.data.dequantization`. With a known true entropy H,
    ``entropy`` and ``nll_minus_entropy`` = -log-likelihood - H (>= 0 up to Monte Carlo error).
    A model without a likelihood (TCL, FastICA, x itself) has None for all of these.
    """
    scored = run.model.likelihood != NO_LIKELIHOOD
    log_likelihood = float(np.mean(log_likelihoods(run, data))) if scored else None
    out = {
        "log_likelihood": log_likelihood,
        "log_likelihood_units": DATA_UNITS,
        "bits_per_dim": bits_per_dim(log_likelihood, data.dim) if scored else None,
        "exact": run.model.likelihood == EXACT,
        "estimator": run.model.likelihood,
        "n": len(data),
        "mcc": None,
    }
    if data.s is not None:
        latents = encode_dataset(run, data)
        result = mcc(latents, data.s)
        out["mcc"] = result.mcc
        out["mcc_per_component"] = result.per_component.tolist()
        out["mcc_spearman"] = mcc(latents, data.s, "spearman").mcc
    if data.true_log_likelihood is not None and scored:
        out["true_log_likelihood"] = float(np.mean(data.true_log_likelihood))
        out["gap"] = out["true_log_likelihood"] - log_likelihood
    if data.entropy is not None and scored:
        out["entropy"] = data.entropy
        out["nll_minus_entropy"] = -log_likelihood - data.entropy
    return out


def save_run(run: Run, directory: Path, result: TrainResult | None = None, metrics: dict | None = None) -> None:
    """Write config, weights, history and metrics into ``directory`` (each file atomically).

    ``config.json`` records only the options the run's model reads.
    """
    directory = Path(directory)
    model_fields = {k: v for k, v in asdict(run.model_config).items() if k in applicable_fields(run.model_config)}
    config = to_dict(model_fields, run.train_config, {"standardizer": run.standardizer.to_dict()})
    if run.aux_standardizer is not None:
        config["aux_standardizer"] = run.aux_standardizer.to_dict()
    if run.training_data is not None:
        config["training_data"] = run.training_data
    checkpoint = {
        "format_version": FORMAT_VERSION,
        "model": run.model_config.model,
        "state_dict": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
    }
    atomic_write(directory / WEIGHTS_FILE, lambda f: torch.save(checkpoint, f))
    save_json(directory / CONFIG_FILE, config)
    if result is not None:
        history = {"best_epoch": result.best_epoch, "seconds": result.seconds, "stop_reason": result.stop_reason,
                   "epochs": result.history}  # fmt: skip
        history["units"] = HISTORY_UNITS
        save_json(directory / HISTORY_FILE, history)
        if result.history:  # the training curve as a table, for a spreadsheet or pandas.read_csv
            save_csv(directory / HISTORY_CSV, result.history)
    if metrics is not None:
        save_json(directory / METRICS_FILE, metrics)
    run.directory = directory


def read_configs(directory: Path) -> tuple[ModelConfig, TrainConfig, Standardizer]:
    """The configs and standardisation ``config.json`` records; :class:`UserError` when unreadable."""
    path = directory / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
        check_config(config, path)
        if config.get("format_version", 0) > FORMAT_VERSION:
            raise UserError(f"{directory}: written by a newer iflow (format {config['format_version']} > {FORMAT_VERSION}); upgrade iflow")
        model = config["model"]
        model_config = model_config_from_dict(model, applicable_fields(ModelConfig(model=model["model"])))
        return model_config, train_config_from_dict(config["train"]), Standardizer.from_dict(config["standardizer"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{path}: unreadable run config ({exc!r})") from None


def read_data_records(directory: Path) -> tuple[Standardizer | None, dict | None]:
    """What ``config.json`` records about the training data beside the configs (absent in older runs):
    the standardisation of a continuous u and the rows and fingerprint of the training data."""
    config = json.loads((directory / CONFIG_FILE).read_text())  # readable: read_configs has checked it
    aux = config.get("aux_standardizer")
    return (None if aux is None else Standardizer.from_dict(aux)), config.get("training_data")


def read_weights(directory: Path, model_name: str) -> dict:
    """The state dict of ``model.pt``, loaded without unpickling code; :class:`UserError` for anything else."""
    path = directory / WEIGHTS_FILE
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- torch raises many types for corrupt files
        raise UserError(f"{path}: unreadable weights ({type(exc).__name__})") from None
    check_weights(checkpoint, path)
    if checkpoint.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{path}: written by a newer iflow (format {checkpoint['format_version']}); upgrade iflow")
    if checkpoint.get("model") != model_name:
        raise UserError(f"{path}: weights of a {checkpoint.get('model')!r} model, but config.json says {model_name!r}")
    return checkpoint["state_dict"]


def load_run(directory: str | Path, device: str = "cpu") -> Run:
    """Rebuild a run's model from ``config.json`` and load ``model.pt``; clear errors for bad runs."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: no such run directory")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise UserError(f"{directory}: not a complete run (missing {name})")
    model_config, train_config, standardizer = read_configs(directory)
    state_dict = read_weights(directory, model_config.model)
    check_sizes(model_config, state_dict, directory / CONFIG_FILE, applicable_fields(model_config))
    try:
        model = build_model(model_config)
        model.load_state_dict(state_dict)
    except UserError as exc:
        raise UserError(f"{directory / CONFIG_FILE}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 (an edited config can make a builder or the loading fail in many ways)
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise UserError(f"{directory / WEIGHTS_FILE}: weights do not fit the model in config.json ({first})") from None
    model.to(resolve_device(device)).eval()
    return Run(model, model_config, train_config, standardizer, directory, *read_data_records(directory))


def encode_dataset(run: Run, data: Dataset) -> np.ndarray:
    """Latents of every row of ``data``, in input order: ``(n, k)``."""
    std_data = run.standardized(data)
    run.model.eval()
    return batched(run.model.encode, *as_tensors(std_data.x, std_data.u, run.device)).cpu().numpy()


def sample(run: Run, u: int | np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` draws of x (original units) from p(x | u): ``(n, d)``.

    ``u``: one integer label or ``(n,)`` labels; for a model on continuous u, one value
    ``(aux_dim,)`` or one per draw ``(n, aux_dim)``, in the units of the training u.
    """
    check_sample_memory(n, run.model_config)
    generator = torch.Generator(device=run.device).manual_seed(seed)
    x = sample_model(run.model, n, sampling_condition(run, u, n), generator=generator).cpu().numpy()
    return run.standardizer.inverse(x)


def sampling_condition(run: Run, u: int | np.ndarray, n: int) -> int | torch.Tensor:
    """``u`` checked against the run's prior, in the model's units (see :func:`sample`)."""
    aux, values = run.model_config.aux, np.asarray(u)
    shown = np.array2string(values, threshold=4, separator=",") if values.ndim else str(values)
    if not is_real_numeric(values) or values.ndim > 2 or not np.all(np.isfinite(values)):
        raise UserError(f"u must be finite numbers, got {shown}")
    if aux.kind == "labels":
        if values.ndim > 1 or np.any(values != np.round(values)):
            raise UserError(f"the model was trained on integer labels 0..{aux.n_labels - 1}, got {shown}")
        if np.any((values < 0) | (values >= aux.n_labels)):
            raise UserError(f"unknown label in {shown} (the model knows 0..{aux.n_labels - 1})")
        if values.ndim == 1 and len(values) != n:
            raise UserError(f"{len(values)} labels for {n} draws")
        return int(values) if values.ndim == 0 else torch.as_tensor(values.astype(np.int64), device=run.device)
    per_draw = values.reshape(n, aux.aux_dim) if values.size == n * aux.aux_dim and values.ndim > 0 else None
    if values.size != aux.aux_dim and per_draw is None:
        raise UserError(f"the model was trained on continuous u with {aux.aux_dim} value(s) per row, got {shown}")
    condition = values.reshape(1, aux.aux_dim) if per_draw is None else per_draw
    condition = run.aux_standardizer(condition) if run.aux_standardizer is not None else condition.astype(np.float32)
    return torch.as_tensor(condition[0] if per_draw is None else condition, device=run.device)


def check_sample_memory(n: int, config: ModelConfig) -> None:
    """Refuse ``n`` draws whose arrays (the draws in float64, one activation per hidden unit) exceed the memory."""
    needed = n * (config.dim + (config.hidden or 64)) * 8  # None: the default width
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > available:
        raise UserError(f"{param('n')} {n}: that many samples need about {needed / 2**30:.3g} GiB, more than this machine's "
                        f"{available / 2**30:.3g} GiB of memory; sample fewer (and several times with other seeds)")  # fmt: skip
