"""Progress of training: a tqdm bar on a terminal, one ``logging`` line per epoch elsewhere
(log files, nohup, SLURM), so long runs are never silent."""

from __future__ import annotations

import logging
import sys
from types import TracebackType

from tqdm import tqdm  # the bar is for terminals; tqdm.auto warns "IProgress not found" in Jupyter

log = logging.getLogger("iflow.training")


def epoch_summary(record: dict) -> dict[str, str]:
    """The figures of one epoch's record worth showing, formatted."""
    summary = {"loss": f"{record['train_loss']:.3f}", "val_ll": f"{record['val_log_likelihood']:.3f}"}
    if "mcc" in record:
        summary["mcc"] = f"{record['mcc']:.3f}"
    return summary


class ProgressReport:
    """``with ProgressReport(epochs, done) as report: report.epoch(record)``.

    On a terminal: a bar (refreshed at most once a second). Off a terminal: an INFO line
    per epoch on the ``iflow.training`` logger, which the command line prints (in Python, enable
    it with ``logging.basicConfig(level=logging.INFO)``). ``enabled=False``: nothing.
    """

    def __init__(self, epochs: int, done: int = 0, enabled: bool = True) -> None:
        self.epochs = epochs
        self.enabled = enabled
        self.bar: tqdm | None = None
        if enabled and sys.stderr.isatty():
            self.bar = tqdm(total=epochs, initial=done, desc="train", mininterval=1.0)

    def epoch(self, record: dict) -> None:
        summary = epoch_summary(record)
        if self.bar is not None:
            self.bar.set_postfix(summary, refresh=False)
            self.bar.update(1)
        elif self.enabled:
            figures = ", ".join(f"{name} {value}" for name, value in summary.items())
            log.info("iflow: epoch %d/%d: %s (%.0f s)", record["epoch"], self.epochs, figures, record["seconds"])

    def __enter__(self) -> ProgressReport:
        return self

    def __exit__(self, kind: type | None, value: BaseException | None, traceback: TracebackType | None) -> None:
        if self.bar is not None:
            self.bar.close()
