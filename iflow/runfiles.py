"""The files of a saved run, checked before they are trusted.

``config.json`` may have been edited by hand and ``model.pt`` may come from
anywhere: every field of the config must have its dataclass's type and a
sensible range, the standardisation must fit the data dimension, the weights
must be a dictionary of finite tensors, and the sizes the config asks for must
occur in the weights (so a tampered ``hidden: 10**9`` is refused before any
memory is allocated for it). Each problem is one :class:`~iflow.errors.UserError`.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

import numpy as np
import torch

from .config import ModelConfig, TrainConfig
from .errors import UserError
from .models.build import MODELS

POSITIVE_INTS = ("dim", "hidden", "bins", "depth", "iw_samples", "train_samples")
NONNEGATIVE_INTS = ("latent_dim", "anneal_steps")
POSITIVE_FLOATS = ("tail_bound", "noise_var")


def fits_type(value: object, hint: object) -> bool:
    """Whether a JSON value has the type a dataclass field is annotated with (an int is a float too)."""
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return any(fits_type(value, option) for option in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        items = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and len(value) == len(items) and all(map(fits_type, value, items))
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(fits_type(v, item) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if is_dataclass(hint):
        return isinstance(value, dict)
    return isinstance(value, hint)


def check_fields(cls: type, values: object, where: str) -> None:
    """Every known field of ``values`` has the type ``cls`` declares for it."""
    if not isinstance(values, dict):
        raise UserError(f"{where}: expected an object of {cls.__name__} fields, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name in values and not fits_type(values[f.name], hints[f.name]):
            raise UserError(f"{where}: {f.name} must be {hints[f.name]}, got {values[f.name]!r}")


def check_model_values(model: dict, where: str) -> None:
    """Ranges of the model fields, and a consistent description of u."""
    for names, lowest, inclusive in (
        (POSITIVE_INTS, 1, True),
        (NONNEGATIVE_INTS, 0, True),
        (POSITIVE_FLOATS, 0, False),
    ):
        for name in names:
            value = model.get(name)
            if value is not None and (value < lowest or (value == lowest and not inclusive)):
                raise UserError(f"{where}: {name} must be {'>=' if inclusive else '>'} {lowest}, got {value}")
    aux = model.get("aux")
    if not isinstance(aux, dict):
        raise UserError(f"{where}: aux must describe u (kind, n_labels or aux_dim), got {aux!r}")
    size = {"labels": "n_labels", "continuous": "aux_dim"}.get(aux.get("kind"))
    if size is None:
        raise UserError(f"{where}: aux.kind must be 'labels' or 'continuous', got {aux.get('kind')!r}")
    other = {"n_labels": "aux_dim", "aux_dim": "n_labels"}[size]
    if not (fits_type(aux.get(size), int) and aux[size] >= 1) or aux.get(other) is not None:
        raise UserError(f"{where}: aux.{size} must be a positive integer and aux.{other} null, got {aux!r}")
    if set(aux) - {"kind", "n_labels", "aux_dim"}:
        raise UserError(f"{where}: aux has unknown fields {sorted(set(aux) - {'kind', 'n_labels', 'aux_dim'})}")


def check_config(config: object, path: Path) -> None:
    """``config.json`` as :func:`iflow.runs.save_run` writes it; raises :class:`UserError`."""
    if not isinstance(config, dict):
        raise UserError(f"{path}: unreadable run config (not a JSON object)")
    if not fits_type(config.get("format_version", 0), int):
        raise UserError(f"{path}: format_version must be an integer, got {config['format_version']!r}")
    check_fields(ModelConfig, config.get("model"), f"{path}: model")
    if config["model"].get("model") not in MODELS:
        raise UserError(f"{path}: unknown model {config['model'].get('model')!r}; choose from {sorted(MODELS)}")
    check_model_values(config["model"], f"{path}: model")
    check_fields(TrainConfig, config.get("train"), f"{path}: train")
    standardizer = config.get("standardizer")
    dim = config["model"].get("dim")
    if not isinstance(standardizer, dict):
        raise UserError(f"{path}: standardizer must hold mean and std, got {standardizer!r}")
    for key in ("mean", "std"):
        values = standardizer.get(key)
        ok = isinstance(values, list) and len(values) == dim and all(fits_type(v, float) for v in values)
        if not ok:
            raise UserError(f"{path}: standardizer {key} must be {dim} finite numbers (one per dimension of x)")
    if min(standardizer["std"]) <= 0:
        raise UserError(f"{path}: standardizer std must be > 0")
    if "training_data" in config:
        check_training_data(config["training_data"], path)


def check_training_data(record: object, path: Path) -> None:
    """The training-data record (:func:`iflow.splits.describe_training_data`): rows, fingerprint, read options."""
    if not isinstance(record, dict) or not fits_type(record.get("rows"), int) or not isinstance(record.get("fingerprint"), str):
        raise UserError(f"{path}: training_data must hold rows (an integer) and fingerprint (a string), got {record!r}")
    layout = record.get("layout", {})
    minimum = {"u_cols": 0, "levels": 1}
    if not isinstance(layout, dict) or any(
        key not in minimum or not fits_type(value, int) or value < minimum[key] for key, value in layout.items()
    ):
        raise UserError(f"{path}: training_data layout must hold u_cols (>= 0) or levels (>= 1), got {layout!r}")


def check_weights(checkpoint: object, path: Path) -> dict[str, torch.Tensor]:
    """The state dict of ``model.pt``: names to finite tensors; raises :class:`UserError`."""
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if isinstance(checkpoint, dict) and not fits_type(checkpoint.get("format_version", 0), int):
        raise UserError(f"{path}: not an iflow checkpoint (format_version {checkpoint['format_version']!r})")
    if not isinstance(state, dict) or not state:
        raise UserError(f"{path}: not an iflow checkpoint (no state_dict of named tensors)")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise UserError(f"{path}: not an iflow checkpoint (its state_dict holds other things than named tensors)")
    bad = [k for k, v in state.items() if torch.is_floating_point(v) and not bool(torch.isfinite(v).all())]
    if bad:
        raise UserError(f"{path}: weights contain NaN or inf ({bad[0]}{' and more' if len(bad) > 1 else ''})")
    return state


SMALL_SIZE = 4096  # no size up to this can exhaust memory, whatever the weights hold (a closed-form model has few)


def check_sizes(model: ModelConfig, state: dict[str, torch.Tensor], path: Path, applicable: set[str]) -> None:
    """The sizes the config asks for (of the ``applicable`` fields) must occur in the weights, so the
    model built from it stays small."""
    largest = max(max(v.shape, default=1) for v in state.values())
    sizes = {"dim": model.dim, "aux.n_labels": model.aux.n_labels or 0, "aux.aux_dim": model.aux.aux_dim or 0}
    sizes.update({name: getattr(model, name) for name in ("hidden", "latent_dim") if name in applicable})
    if model.flow == "spline" and "bins" in applicable:
        sizes["bins"] = model.bins
    sizes = {name: value or 0 for name, value in sizes.items()}  # None: the builder's default
    for name, value in sizes.items():
        if value > max(largest, SMALL_SIZE):
            raise UserError(f"{path}: {name} {value} does not fit the weights in model.pt (no tensor that large)")
    if (model.depth or 0) > len(state) or (model.image_shape and int(np.prod(model.image_shape)) != model.dim):
        raise UserError(f"{path}: depth or image_shape does not fit the weights in model.pt")
