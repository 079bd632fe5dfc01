"""Fig. 1 of both papers: 2-D sources, their observations, and the latents each model recovers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import common
from .report import LABELS, markdown_table, write_text

DESCRIPTION = "Fig. 1 of both papers: 2-D sources, observations, latents recovered by each model"
PUBLISHED = {
    "source": "reproductions of iFlow, 2-D (5 segments)",
    "protocol": "iFlow code's data with n = d = 2 and 5 segments",
    "values": {"ivae": {5: 0.818}, "iflow": {5: 0.773}},
}
SHOWN = 1500  # points drawn per panel


def settings(quick: bool) -> list[dict]:
    data = {**common.IFLOW_DATA, "sources": 2, "segments": 5, "per_segment": 400 if quick else 1000}
    epochs = 10 if quick else 40
    return [common.preset(m, data, epochs, x=5) for m in ("iflow", "ivae", "flow", "tcl", "fastica")]


def run(setting: dict, seed: int) -> dict:
    """The usual row, plus a fixed subset of sources, observations and latents for the figure."""
    row, data, latents, _ = common.train_and_score(setting, seed)
    shown = np.random.default_rng(0).permutation(len(data.x))[:SHOWN]
    points = {"s": data.s[shown], "x": data.x[shown], "z": latents[shown], "u": data.u[shown]}
    return {**row, **{key: value.tolist() for key, value in points.items()}}


def report(rows: list[dict], out: Path) -> None:
    from matplotlib.figure import Figure

    from ..figures import save_figure

    first = [r for r in rows if r["seed"] == rows[0]["seed"]]
    panels = [("sources", first[0]["s"]), ("observations", first[0]["x"])]
    panels += [(f"{LABELS[r['setting']['model']]}: MCC {r['mcc']:.2f}", r["z"]) for r in first]
    fig = Figure(figsize=(2.4 * len(panels), 2.6))
    axes = fig.subplots(1, len(panels))
    for ax, (title, points) in zip(axes, panels, strict=True):
        points = np.asarray(points)
        ax.scatter(points[:, 0], points[:, 1], c=first[0]["u"], s=1, cmap="tab10")
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"data seed {rows[0]['seed']}, colour = segment", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / "figure.png")
    write_text(out / "table.md", markdown_table(rows, PUBLISHED, "segments"))
