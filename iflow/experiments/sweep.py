"""A user's own study: a grid of options times seeds in one TOML file (``iflow experiment --config sweep.toml``).

    name = "my-study"                 # the results folder's default name
    seeds = 3                         # data and training seeds 1..3, or a list [1, 4, 9]
    model = ["iflow", "ivae"]         # one model or a list
    [data]                            # SyntheticConfig fields; a list is one axis of the grid
    segments = [10, 40]
    [options]                         # ModelConfig fields
    [train]                           # TrainConfig fields (the experiments' training options otherwise)
    epochs = 10

Every combination of the listed values is one setting; the resolved grid is saved as
``grid.json`` beside the results.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from ..errors import UserError
from . import common
from .report import standard_report

DESCRIPTION = "a grid of options x seeds from a TOML file (--config sweep.toml)"
PUBLISHED = None
SECTIONS = ("data", "options", "train")
TOP_LEVEL = {"name", "seeds", "model", *SECTIONS}
DEFAULT_EPOCHS = 20


def settings(quick: bool) -> list[dict]:
    raise UserError("a sweep's settings come from its TOML file: pass --config FILE")


def read_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None


def axes(table: dict) -> list[tuple[str, list]]:
    return [(key, value if isinstance(value, list) else [value]) for key, value in table.items()]


def grid(spec: dict, source: str = "sweep") -> tuple[list[dict], int | list[int]]:
    """The settings and seeds a sweep spec describes: the product of every listed value."""
    unknown = set(spec) - TOP_LEVEL
    if unknown:
        raise UserError(f"{source}: unknown keys {sorted(unknown)}; use {sorted(TOP_LEVEL)}")
    if "model" not in spec:
        raise UserError(f"{source}: no model given (model = \"iflow\" or a list)")
    sections = {name: axes(spec.get(name, {})) for name in SECTIONS}
    varying = [(name, key) for name in SECTIONS for key, values in sections[name] if len(values) > 1]
    settings = []
    for model in spec["model"] if isinstance(spec["model"], list) else [spec["model"]]:
        choices = [[(name, key, v) for v in values] for name in SECTIONS for key, values in sections[name]]
        for combination in itertools.product(*choices):
            chosen = {name: {k: v for n, k, v in combination if n == name} for name in SECTIONS}
            setting = common.preset(model, chosen["data"], chosen["train"].get("epochs", DEFAULT_EPOCHS), chosen["options"])
            setting["train"].update(chosen["train"])
            setting["x"] = ", ".join(f"{k}={chosen[n][k]}" for n, k in varying) or "all"
            common.check(setting)
            settings.append(setting)
    seeds = spec.get("seeds", 1)
    if not (isinstance(seeds, int) and seeds >= 1) and not (isinstance(seeds, list) and seeds):
        raise UserError(f"{source}: seeds must be a positive integer or a list of seeds, got {seeds!r}")
    return settings, seeds


run = common.run


def report(rows: list[dict], out: Path) -> None:
    """The standard table and figure; MCC against |s| beside MCC against s where the rows have it (TCL's
    features estimate |s|, and the figure plots TCL's against |s|, as the TCL comparisons do)."""
    extra = ("mcc_abs",) if any(r.get("mcc_abs") is not None for r in rows) else ()
    standard_report(rows, out, None, "setting", "setting", extra=extra, model_keys={"tcl": "mcc_abs"} if extra else None)
