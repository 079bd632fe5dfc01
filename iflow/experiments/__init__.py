"""Experiments: the papers' figures by one command each (``iflow experiment NAME``).

An experiment is a module of this package with

    DESCRIPTION: str                                  # one line for ``iflow experiment --list``
    PUBLISHED: dict | None                            # the paper's numbers and the protocol they come from
    def settings(quick: bool) -> list[dict]           # JSON-able options, each with "model"
    def run(setting: dict, seed: int) -> dict         # module-level (picklable): one row's results
    def report(rows: list[dict], out: Path) -> None   # figure, markdown ``table.md`` in ``out``
    SEEDS: int                                        # optional: the default number of seeds (else 5)

registered below by name. :mod:`iflow.experiments.runner` runs every (setting, seed)
once, locally in joblib workers or on SLURM through submitit, writes one JSON row per
(setting, seed) as it finishes and skips finished rows on a rerun; a row is the setting,
the seed, ``run``'s results and the seconds it took; it writes ``results.csv`` itself.
:mod:`iflow.experiments.common` trains and scores the usual row and
:mod:`iflow.experiments.report` draws the usual figure and table. Modules are imported
only when used.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from ..errors import UserError

EXPERIMENTS: dict[str, str] = {
    "training-curve": "training_curve",
    "latent-dim": "latent_dim",
    "segments": "segments",
    "easy-classify": "easy_classify",
    "discrete": "discrete",
    "dim-select": "dim_select",
    "seeds": "seeds",
    "visual-2d": "visual_2d",
    "protocols": "protocols",
    "noise": "noise",  # issue 15
    "ivae-fig2a": "ivae_fig2a",  # issue 15: the iVAE paper's Fig. 2a protocol and its ablation
}  # name -> module of this package; listed only once present


def experiment(name: str) -> ModuleType:
    """The module of the experiment called ``name``; :class:`UserError` for unknown names."""
    if name not in EXPERIMENTS:
        raise UserError(f"unknown experiment {name!r}; choose from {sorted(EXPERIMENTS)} (or see --list)")
    return importlib.import_module(f"{__name__}.{EXPERIMENTS[name]}")


def available() -> list[str]:
    """The registered experiments whose module is present."""
    return [name for name, module in EXPERIMENTS.items() if importlib.util.find_spec(f"{__name__}.{module}") is not None]
