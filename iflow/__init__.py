"""iflow: identifiable generative modelling (flows and VAEs with conditional exponential-family priors).

The public API is importable from the top, e.g.::

    from iflow import ConditionalExpFamilyPrior, IdentifiableFlow, ModelConfig, TrainConfig, build_flow, train

Names are loaded on first use (PEP 562), so ``import iflow`` and ``iflow --help`` do not load torch.
See README.md for the tour and its "Architecture" section for the layers.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "ModelConfig": "iflow.config",
    "TrainConfig": "iflow.config",
    "UserError": "iflow.errors",
    "ConditionalExpFamilyPrior": "iflow.priors",
    "StandardNormalPrior": "iflow.priors",
    "FAMILIES": "iflow.priors",
    "ConditionalPrior": "iflow.protocols",
    "Model": "iflow.protocols",
    "build_flow": "iflow.flows.build",
    "FLOWS": "iflow.flows.build",
    "IdentifiableFlow": "iflow.models.identifiable_flow",
    "VAE": "iflow.models.vae",
    "build_model": "iflow.models.build",
    "MODELS": "iflow.models.build",
    "sample": "iflow.models.sampling",
    "Dataset": "iflow.data.dataset",
    "make_dataset": "iflow.data.dataset",
    "load_data": "iflow.data.builtin",
    "SyntheticConfig": "iflow.data.synthetic",
    "generate": "iflow.data.synthetic",
    "mcc": "iflow.metrics",
    "fit": "iflow.training.trainer",
    "Run": "iflow.runs",
    "plan_run": "iflow.runs",
    "train": "iflow.runs",
    "evaluate": "iflow.runs",
    "encode_dataset": "iflow.runs",
    "save_run": "iflow.runs",
    "load_run": "iflow.runs",
    "train_and_save": "iflow.workflow",
    "train_and_evaluate": "iflow.workflow",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # static checkers and IDEs see the real names
    from .config import ModelConfig, TrainConfig  # noqa: F401
    from .data.builtin import load_data  # noqa: F401
    from .data.dataset import Dataset, make_dataset  # noqa: F401
    from .data.synthetic import SyntheticConfig, generate  # noqa: F401
    from .errors import UserError  # noqa: F401
    from .flows.build import FLOWS, build_flow  # noqa: F401
    from .metrics import mcc  # noqa: F401
    from .models.build import MODELS, build_model  # noqa: F401
    from .models.identifiable_flow import IdentifiableFlow  # noqa: F401
    from .models.sampling import sample  # noqa: F401
    from .models.vae import VAE  # noqa: F401
    from .priors import FAMILIES, ConditionalExpFamilyPrior, StandardNormalPrior  # noqa: F401
    from .protocols import ConditionalPrior, Model  # noqa: F401
    from .runs import Run, encode_dataset, evaluate, load_run, plan_run, save_run, train  # noqa: F401
    from .training.trainer import fit  # noqa: F401
    from .workflow import train_and_evaluate, train_and_save  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'iflow' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
