"""One unit system for reported log-likelihoods, and labels that say which.

The model sees standardised x (``Standardizer``: per-dimension affine, or the fixed map
of bounded images to [0, 1)); a log-likelihood there differs from one in the units of the
x a user gave by the map's log|det|. Everything reported to a user (``metrics.json``, the
training figure) is in the user's units; the trainer's own validation score, kept in
``history.json`` beside it, is in the model's units, and each is labelled.
"""

from __future__ import annotations

MODEL_UNITS = "nats per sample, standardised x (the model's own units)"
DATA_UNITS = "nats per sample, x in the units given (the standardisation's log|det| included)"
VAL_DATA_KEY = "val_log_likelihood_data"  # the validation log-likelihood in the user's units
HISTORY_UNITS = {"val_log_likelihood": MODEL_UNITS, VAL_DATA_KEY: DATA_UNITS}


def add_data_units(history: list[dict], log_abs_det: float) -> None:
    """Give each epoch's record its validation log-likelihood in the user's units, in place."""
    for record in history:
        record[VAL_DATA_KEY] = record["val_log_likelihood"] + log_abs_det
