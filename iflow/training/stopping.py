"""When training stops: a fixed budget (``epochs``), or convergence of the held-out
log-likelihood within ``max_epochs`` and an optional ``time_limit``.

Convergence: the held-out log-likelihood has not risen by more than ``tolerance``
nats/sample above a reference for ``patience`` epochs. The reference is the value of
the last epoch that beat the one before it by more than the tolerance, so a slow but
steady climb (``tolerance`` / 2 per epoch, say) keeps training going.

The trainer also stops (``converged``) when the default learning-rate schedule has
finished its decay after a plateau (:mod:`iflow.training.schedule`).

The rule's state is two numbers (:meth:`StoppingRule.state`), saved with the
checkpoint's progress so a resumed run stops where an uninterrupted one would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import TrainConfig

STOP_REASONS = {
    "epochs": "the fixed budget of epochs was trained",
    "converged": "the held-out log-likelihood stopped improving (or the learning rate finished its decay after a plateau)",
    "max_epochs": "max_epochs reached before convergence",
    "time_limit": "time_limit reached",
}


@dataclass
class StoppingRule:
    """``decide(record)`` after each epoch: a key of :data:`STOP_REASONS`, or None to go on.

    ``fixed``: stop only after ``max_epochs`` epochs (an explicit budget), never earlier
    for convergence. ``time_limit``: seconds of training, checked after each epoch.
    """

    patience: int
    tolerance: float
    max_epochs: int
    time_limit: float | None = None
    fixed: bool = False
    reference: float = -math.inf  # held-out log-likelihood at the last improvement above the tolerance
    stalled: int = 0  # epochs since that improvement

    @classmethod
    def from_config(cls, config: TrainConfig) -> StoppingRule:
        """The rule a (filled) config asks for: ``epochs`` set is a fixed budget."""
        fixed = config.epochs is not None
        budget = config.epochs if fixed else config.max_epochs
        return cls(config.patience, config.tolerance, budget, config.time_limit, fixed)

    def decide(self, record: dict) -> str | None:
        """Update with one epoch's ``record`` (``epoch``, ``val_log_likelihood``, ``seconds``)."""
        value = record["val_log_likelihood"]
        if value > self.reference + self.tolerance:
            self.reference, self.stalled = value, 0
        else:
            self.stalled += 1
        if record["epoch"] >= self.max_epochs:
            return "epochs" if self.fixed else "max_epochs"
        if not self.fixed and self.stalled >= self.patience:
            return "converged"
        if self.time_limit is not None and record["seconds"] >= self.time_limit:
            return "time_limit"
        return None

    def state(self) -> dict:
        return {"reference": self.reference, "stalled": self.stalled}

    def load_state(self, state: dict) -> None:
        self.reference, self.stalled = state["reference"], state["stalled"]
