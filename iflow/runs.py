"""Run directories: train a model on a data set, save it atomically, load it back, evaluate it.

A run directory holds ``config.json`` (enough to rebuild the model, plus the
standardisation of x), ``model.pt`` (weights), ``metrics.json``,
``history.json``, ``timing.json`` and ``figures/``; while training, ``checkpoint.pt`` (see
:mod:`iflow.train.checkpoint`), removed once the run is saved.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .models.build import build_model
from .train.checkpoint import Checkpointing
from .config import FORMAT_VERSION, ModelConfig, TrainConfig, model_config_from_dict, to_dict, train_config_from_dict
from .data.dataset import Dataset, Standardizer, aux_spec, check_aux
from .models.decoders import check_observations
from .data.dequantization import dequantized
from .errors import UserError
from .files import atomic_write, to_json
from .metrics import mcc
from .runfiles import check_config, check_sizes, check_weights
from .train.trainer import TrainResult, as_tensors, batched, encode, fit, resolve_device, seed_everything

CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE, HISTORY_FILE = "config.json", "model.pt", "metrics.json", "history.json"
TIMING_FILE = "timing.json"  # wall times, kept apart so identical runs write identical result files


def save_json(path: Path, obj: dict) -> None:
    atomic_write(path, lambda f: f.write(to_json(obj, indent=2).encode() + b"\n"))


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Atomically write an ``.npz`` (the name is kept exactly as given)."""
    atomic_write(Path(path), lambda f: np.savez(f, **arrays))


@dataclass
class Run:
    """A trained model with everything needed to apply it to new data."""

    model: nn.Module
    model_config: ModelConfig
    train_config: TrainConfig
    standardizer: Standardizer
    directory: Path | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def standardized(self, data: Dataset) -> Dataset:
        """Check ``data`` against the run and return it in the model's units."""
        if data.dim != self.model_config.dim:
            raise UserError(f"{data.source}: x has {data.dim} dimensions but the run was trained on {self.model_config.dim}")
        check_aux(data.u, self.model_config.aux, data.source)
        check_observations(data.x, self.model_config.obs, data.source)
        dequantize = data.dequantize / self.standardizer.std if np.any(data.dequantize) else 0.0
        return replace(data, x=self.standardizer(data.x, data.source), dequantize=dequantize)


def train(
    data: Dataset,
    model_config: ModelConfig,
    train_config: TrainConfig,
    progress: bool = True,
    checkpoint: Checkpointing | None = None,
) -> tuple[Run, TrainResult]:
    """Standardise x (bounded data: a fixed map to the unit interval; discrete observations
    for a bernoulli or poisson decoder: kept as they are), build the model the config names
    (initialised from the seed), fit it. Nothing but the optional resume ``checkpoint`` is written.
    The VAE family's latent dimension defaults to the observed dimension d.
    """
    if data.bounds:
        standardizer = Standardizer.unit_range(*data.bounds, data.dim)
    elif model_config.obs == "gaussian":
        standardizer = Standardizer.fit(data.x)
    else:
        standardizer = Standardizer(np.zeros(data.dim), np.ones(data.dim))
    shape = {"image_shape": data.image_shape, "unit_interval": data.bounds is not None}
    latent_dim = model_config.latent_dim or data.dim
    model_config = replace(model_config, dim=data.dim, aux=aux_spec(data.u, data.source), latent_dim=latent_dim, **shape)
    seed_everything(train_config.seed)  # the initial weights are part of what the seed fixes
    model = build_model(model_config)
    run = Run(model, model_config, train_config, standardizer)
    if checkpoint is not None:  # a resumed run must have the same model too
        model_options = {f"model.{k}": v for k, v in asdict(model_config).items()}
        checkpoint = replace(checkpoint, context={**checkpoint.context, **model_options})
    result = fit(model, run.standardized(data), train_config, progress=progress, checkpoint=checkpoint)
    return run, result


def evaluate(run: Run, data: Dataset) -> dict:
    """Log-likelihood per sample (nats, in the units of the given x), bits/dim, MCC.

    Bits/dim = -log p(x | u) / (d ln 2). With a known true log-likelihood
    (synthetic data), ``true_log_likelihood`` and the ``gap`` (true - model) too.
    Discrete data (``data.dequantize``) are dequantised with a fixed seed first, so
    bits/dim follows :mod:`iflow.data.dequantization`. With a known true entropy H,
    ``entropy`` and ``nll_minus_entropy`` = -log-likelihood - H (>= 0 up to Monte Carlo error).
    """
    data = dequantized(data)
    std_data = run.standardized(data)
    x, u = as_tensors(std_data, run.device)
    run.model.eval()
    log_likelihood = float(batched(run.model.log_prob, x, u).mean()) + run.standardizer.log_abs_det
    out = {
        "log_likelihood": log_likelihood,
        "bits_per_dim": -log_likelihood / (data.dim * math.log(2)),
        "exact": bool(getattr(run.model, "exact_likelihood", False)),
        "estimator": getattr(run.model, "likelihood_estimator", "exact"),
        "n": len(data),
        "mcc": None,
    }
    if data.s is not None:
        result = mcc(encode(run.model, x, u).cpu().numpy(), data.s)
        out["mcc"] = result.mcc
        out["mcc_per_component"] = result.per_component.tolist()
        out["mcc_spearman"] = mcc(encode(run.model, x, u).cpu().numpy(), data.s, "spearman").mcc
    if data.true_log_likelihood is not None:
        out["true_log_likelihood"] = float(np.mean(data.true_log_likelihood))
        out["gap"] = out["true_log_likelihood"] - log_likelihood
    if data.entropy is not None:
        out["entropy"] = data.entropy
        out["nll_minus_entropy"] = -log_likelihood - data.entropy
    return out


def save_run(run: Run, directory: Path, result: TrainResult | None = None, metrics: dict | None = None) -> None:
    """Write config, weights, history and metrics into ``directory`` (each file atomically)."""
    directory = Path(directory)
    config = to_dict(run.model_config, run.train_config, {"standardizer": run.standardizer.to_dict()})
    checkpoint = {
        "format_version": FORMAT_VERSION,
        "model": run.model_config.model,
        "state_dict": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
    }
    atomic_write(directory / WEIGHTS_FILE, lambda f: torch.save(checkpoint, f))
    save_json(directory / CONFIG_FILE, config)
    if result is not None:
        save_json(directory / HISTORY_FILE, {"best_epoch": result.best_epoch, "seconds": result.seconds, "epochs": result.history})
    if metrics is not None:
        save_json(directory / METRICS_FILE, metrics)
    run.directory = directory


def load_run(directory: str | Path, device: str = "cpu") -> Run:
    """Rebuild a run's model from ``config.json`` and load ``model.pt``; clear errors for bad runs."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: no such run directory")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise UserError(f"{directory}: not a complete run (missing {name})")
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
        check_config(config, directory / CONFIG_FILE)
        model_config = model_config_from_dict(config["model"])
        train_config = train_config_from_dict(config["train"])
        standardizer = Standardizer.from_dict(config["standardizer"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"{directory / CONFIG_FILE}: unreadable run config ({exc!r})") from None
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{directory}: written by a newer iflow (format {config['format_version']} > {FORMAT_VERSION}); upgrade iflow")
    try:
        checkpoint = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- torch raises many types for corrupt files
        raise UserError(f"{directory / WEIGHTS_FILE}: unreadable weights ({type(exc).__name__})") from None
    state_dict = check_weights(checkpoint, directory / WEIGHTS_FILE)
    if checkpoint.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{directory / WEIGHTS_FILE}: written by a newer iflow (format {checkpoint['format_version']}); upgrade iflow")
    if checkpoint.get("model") != model_config.model:
        raise UserError(f"{directory / WEIGHTS_FILE}: weights of a {checkpoint.get('model')!r} model, but config.json says {model_config.model!r}")
    check_sizes(model_config, state_dict, directory / CONFIG_FILE)
    try:
        model = build_model(model_config)
        model.load_state_dict(state_dict)
    except UserError as exc:
        raise UserError(f"{directory / CONFIG_FILE}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 (an edited config can make a builder or the loading fail in many ways)
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise UserError(f"{directory / WEIGHTS_FILE}: weights do not fit the model in config.json ({first})") from None
    model.to(resolve_device(device)).eval()
    return Run(model, model_config, train_config, standardizer, directory)



def encode_dataset(run: Run, data: Dataset) -> np.ndarray:
    """Latents of every row of ``data``, in input order: ``(n, k)``."""
    std_data = run.standardized(data)
    x, u = as_tensors(std_data, run.device)
    return encode(run.model, x, u).cpu().numpy()


def sample(run: Run, label: int, n: int, seed: int = 0) -> np.ndarray:
    """``n`` draws of x (original units) from p(x | u = label): ``(n, d)``."""
    aux = run.model_config.aux
    if aux.kind != "labels":
        raise UserError("--u LABEL needs a model trained on integer labels")
    if not 0 <= label < aux.n_labels:
        raise UserError(f"--u {label}: unknown label (the model knows 0..{aux.n_labels - 1})")
    check_sample_memory(n, run.model_config)
    generator = torch.Generator(device=run.device).manual_seed(seed)
    x = run.model.sample(n, label, generator=generator).cpu().numpy()
    return run.standardizer.inverse(x)


def check_sample_memory(n: int, config: ModelConfig) -> None:
    """Refuse ``n`` draws whose arrays (the draws in float64, one activation per hidden unit) exceed the memory."""
    needed = n * (config.dim + config.hidden) * 8
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > available:
        raise UserError(f"--n {n}: that many samples need about {needed / 2**30:.3g} GiB, more than this machine's "
                        f"{available / 2**30:.3g} GiB of memory; sample fewer (and several times with other --seed)")  # fmt: skip
