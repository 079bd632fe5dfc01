"""Model selection by held-out likelihood: train several restarts, keep the best.

The likelihood of a flow is exact, so it is a principled criterion: restarts share
one validation split and the run with the highest validation log-likelihood is kept.
MCC (when true sources are known) is recorded for the report only, never used to choose.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from .config import ModelConfig, TrainConfig
from .data import Dataset
from .runs import Run, train
from .training import TrainResult

Trainer = Callable[[Dataset, ModelConfig, TrainConfig, bool], tuple[Run, TrainResult]]


@dataclass
class Restart:
    """One candidate: its training seed, validation log-likelihood (nats) and, if known, MCC."""

    seed: int
    val_log_likelihood: float
    mcc: float | None
    seconds: float
    chosen: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def train_with_restarts(
    data: Dataset,
    model_config: ModelConfig,
    train_config: TrainConfig,
    restarts: int,
    progress: bool = True,
    trainer: Trainer = train,
) -> tuple[Run, TrainResult, list[Restart]]:
    """Train ``restarts`` models (seeds ``seed, seed + 1, ...``) on one split; keep the best.

    Returns the kept run, its training result and one :class:`Restart` per candidate.
    """
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    split_seed = train_config.seed if train_config.split_seed is None else train_config.split_seed
    best: tuple[Run, TrainResult] | None = None
    candidates: list[Restart] = []
    for k in range(restarts):
        config = replace(train_config, seed=train_config.seed + k, split_seed=split_seed)
        run, result = trainer(data, model_config, config, progress)
        kept_epoch = result.history[result.best_epoch - 1] if result.history else {}
        candidates.append(Restart(config.seed, result.best_val_log_likelihood, kept_epoch.get("mcc"), result.seconds))
        if best is None or _score(result.best_val_log_likelihood) > _score(best[1].best_val_log_likelihood):
            best = (run, result)
            for candidate in candidates:
                candidate.chosen = candidate is candidates[-1]
    return best[0], best[1], candidates


def _score(value: float) -> float:
    """Validation log-likelihood as a ranking key; a diverged (nan) run ranks last."""
    return value if math.isfinite(value) else -math.inf
