"""Run directories: a marker tells an iflow run directory from any other folder.

iflow writes ``MARKER`` into every run directory it makes ready. Only a folder
that carries it is ever resumed into, overwritten or cleared; ``--overwrite``
or ``--resume`` on any other non-empty folder is refused. Clearing a run
removes only the files iflow writes into a run (``RUN_FILES``, the figures in
``FIGURE_FILES``, their temporaries, and nested run directories such as the
demo's ``run/``), never anything else: a data file kept in the folder survives
(iflow writes no data files into a run), and so does any note of the user's.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError
from .files import TMP_SUFFIX, atomic_write
from .runs import CONFIG_FILE, HISTORY_CSV, HISTORY_FILE, METRICS_FILE, TIMING_FILE, WEIGHTS_FILE
from .training.checkpoint import CHECKPOINT_FILE

MARKER = ".iflow-run"
RUN_FILES = (CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE, HISTORY_FILE, HISTORY_CSV, TIMING_FILE, CHECKPOINT_FILE)
FIGURES = "figures"
FIGURE_FILES = ("training.png", "restarts.png", "density.png", "samples.png", "sources.png")


def is_run_dir(path: Path) -> bool:
    """True when ``path`` is a folder iflow made ready for a run (it carries the marker)."""
    return (Path(path) / MARKER).is_file()


def mark_run_dir(path: Path, created: bool) -> None:
    """Write the marker; ``created``: iflow made the folder itself (so it may remove it when unused)."""
    text = json.dumps({"iflow": "run directory", "created": created}) + "\n"
    atomic_write(Path(path) / MARKER, lambda f: f.write(text.encode()))


def remove_iflow_temporaries(directory: Path, names: tuple[str, ...]) -> None:
    """Delete the temporaries a killed atomic write of one of ``names`` left in ``directory``."""
    for name in names:
        for stale in directory.glob(f".{name}.*{TMP_SUFFIX}"):
            if stale.is_file():
                stale.unlink()


def clear_run_dir(directory: Path) -> None:
    """Remove what iflow wrote into the run ``directory``, keeping the marker and anything else."""
    for name in RUN_FILES:
        (directory / name).unlink(missing_ok=True)
    remove_iflow_temporaries(directory, RUN_FILES)
    figures = directory / FIGURES
    if figures.is_dir():
        for name in FIGURE_FILES:
            (figures / name).unlink(missing_ok=True)
        remove_iflow_temporaries(figures, FIGURE_FILES)
        if not any(figures.iterdir()):
            figures.rmdir()
    for nested in directory.iterdir():
        if nested.is_dir() and is_run_dir(nested):
            clear_run_dir(nested)
            discard_if_unused(nested)


def discard_if_unused(directory: Path) -> None:
    """After a failed run: remove the marker when nothing else is left, and the folder if iflow made it."""
    marker = Path(directory) / MARKER
    if not marker.is_file() or any(p.name != MARKER for p in Path(directory).iterdir()):
        return
    try:
        created = bool(json.loads(marker.read_text()).get("created"))
    except (ValueError, AttributeError, OSError):
        created = False
    marker.unlink()
    if created:
        Path(directory).rmdir()


def prepare_run_dir(out: Path, overwrite: bool, resume: bool = False, resumable: bool = False) -> bool:
    """Make ``out`` ready for a run and mark it; True when it holds a checkpoint to resume from.

    A missing or empty folder is marked and used. A non-empty folder must be an
    iflow run directory: then ``resume`` continues its checkpoint, and ``overwrite``
    (or ``resume`` of a run that never checkpointed) clears it first.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if not out.exists():
        try:
            out.mkdir(parents=True)
        except OSError as exc:
            raise UserError(f"{out}: cannot create run directory ({exc.strerror})") from None
        mark_run_dir(out, created=True)
        return False
    if not any(out.iterdir()):
        mark_run_dir(out, created=False)
        return False
    if not is_run_dir(out):
        raise UserError(
            f"{out}: folder exists, is not empty and is not an iflow run directory (no {MARKER} marker); "
            "iflow never resumes into, overwrites or deletes it: choose a new --out"
        )
    remove_iflow_temporaries(out, RUN_FILES)
    if resume and (out / CHECKPOINT_FILE).is_file():
        return True
    if not (overwrite or resume):
        hint = " or --resume to continue it" if resumable else ""
        raise UserError(f"{out}: run directory exists; pass --overwrite to replace it{hint}")
    if resume and not overwrite and (out / WEIGHTS_FILE).is_file():
        raise UserError(f"{out}: the run is complete (no checkpoint left to resume); pass --overwrite to train again")
    clear_run_dir(out)
    return False
