"""Reports of an experiment's rows: a CSV, a figure in the paper's form with the published numbers
overlaid, and a markdown table with the published number beside ours and its protocol.

``published`` (an experiment's ``PUBLISHED``)::

    {"source": "iVAE paper, Fig. 3a", "protocol": "...", "values": {model: {x: number}}}
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..files import atomic_write, save_csv

LABELS = {
    "iflow": "identifiable flow", "flow": "unconditional flow", "ivae": "iVAE", "vae": "VAE",
    "betavae": "beta-VAE", "tcvae": "beta-TC-VAE", "tcl": "TCL", "fastica": "FastICA(x)", "identity": "x itself",
}  # fmt: skip
SCALARS = (str, int, float, bool, type(None))
METRICS = {
    "mcc": "MCC vs s",
    "mcc_abs": "MCC vs abs(s) (TCL's own protocol)",
    "mcc_sample": "MCC of a posterior sample (the iVAE code's protocol)",
}


def flatten(row: dict, prefix: str = "") -> dict:
    """Nested dicts as ``a.b`` columns; lists (per-epoch curves, latents) are left out of the CSV."""
    flat: dict = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, SCALARS):
            flat[f"{prefix}{key}"] = value
    return flat


def write_csv(rows: list[dict], path: Path) -> None:
    """One line per row, columns the union of the rows' scalar fields, atomically."""
    save_csv(path, [flatten(row) for row in rows])


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def summarise(rows: list[dict], key: str = "mcc", x: Callable[[dict], object] = lambda row: row["setting"].get("x")) -> dict:
    """``{(model, x): values}`` of ``key`` over seeds, models and x in the rows' order."""
    groups: dict = defaultdict(list)
    for row in rows:
        if row.get(key) is not None:
            groups[(row["setting"]["model"], x(row))].append(row[key])
    return dict(groups)


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} +- {np.std(values):.3f}"


def published_value(published: dict | None, model: str, x: object) -> float | str | None:
    if not published:
        return None
    return published["values"].get(model, {}).get(x)


def markdown_table(rows: list[dict], published: dict | None, x_name: str, key: str = "mcc", extra: tuple[str, ...] = ()) -> str:
    """Ours (mean +- std over seeds) beside the published number, one line per (model, x).

    ``extra``: more row keys to show (e.g. ``mcc_abs``), each summarised the same way.
    """
    groups = summarise(rows, key)
    names = [METRICS.get(k, k) for k in (key, *extra)]
    header = ["model", x_name, f"ours: {names[0]} (mean +- std)", "seeds", *[f"ours: {n}" for n in names[1:]],
              "seconds per row", "published"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (model, x), values in groups.items():
        matching = [r for r in rows if r["setting"]["model"] == model and r["setting"].get("x") == x]
        more = [mean_std(present) if (present := [r[k] for r in matching if r.get(k) is not None]) else "-" for k in extra]
        seconds = np.mean([r["seconds"] for r in matching])
        reference = published_value(published, model, x)
        reference = "" if reference is None else (f"{reference:.3f}" if isinstance(reference, float) else str(reference))
        cells = [LABELS.get(model, model), str(x), mean_std(values), str(len(values)), *more, f"{seconds:.0f}", reference]
        lines.append("| " + " | ".join(cells) + " |")
    if published:
        lines += ["", f"Published: {published['source']}; protocol: {published['protocol']}."]
    return "\n".join(lines) + "\n"


def line_figure(rows: list[dict], published: dict | None, x_label: str, path: Path, key: str = "mcc",
                y_label: str = "MCC", title: str = "", model_keys: dict[str, str] | None = None) -> None:  # fmt: skip
    """Ours (mean with +- std bars over seeds, solid) against x per model; published values dashed.

    ``model_keys``: a model's own metric instead of ``key`` (TCL's MCC against |s|), named in its label.
    """
    from matplotlib.figure import Figure

    from ..figures import save_figure

    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    model_keys = model_keys or {}
    for i, model in enumerate(dict.fromkeys(r["setting"]["model"] for r in rows)):
        metric = model_keys.get(model, key)
        groups = summarise([r for r in rows if r["setting"]["model"] == model], metric)
        xs = [x for _, x in groups]
        if all(isinstance(x, (int, float)) for x in xs):
            xs = sorted(xs)
        values = [groups[(model, x)] for x in xs]
        color = f"C{i}"
        named = f", {METRICS.get(metric, metric)}" if metric != key else ""
        ax.errorbar(xs, [np.mean(v) for v in values], yerr=[np.std(v) for v in values], color=color, marker="o",
                    capsize=3, label=f"{LABELS.get(model, model)} (ours{named})")  # fmt: skip
        reference = (published or {}).get("values", {}).get(model, {})
        numeric = {x: v for x, v in reference.items() if isinstance(v, (int, float))}
        if numeric:
            ax.plot(list(numeric), list(numeric.values()), color=color, linestyle="--", marker="x",
                    label=f"{LABELS.get(model, model)} (published)")  # fmt: skip
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title or (published or {}).get("source", ""), fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def standard_report(rows: list[dict], out: Path, published: dict | None, x_name: str, x_label: str,
                    extra: tuple[str, ...] = (), model_keys: dict[str, str] | None = None) -> None:  # fmt: skip
    """The usual report: ``figure.png`` (MCC against x) and ``table.md``."""
    line_figure(rows, published, x_label, out / "figure.png", model_keys=model_keys)
    write_text(out / "table.md", markdown_table(rows, published, x_name, extra=extra))
