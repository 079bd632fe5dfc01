"""iFlow paper Fig. 2a: MCC over data seeds 1..100, identifiable flow against iVAE against the unconditional flow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import common
from .report import LABELS, summarise, write_text

DESCRIPTION = "iFlow Fig. 2a: data seeds 1..100, identifiable flow vs iVAE vs unconditional flow (iFlow data)"
PUBLISHED = {
    "source": "iFlow paper, Fig. 2a (data seeds 1-100); unconditional flow from reproductions of iFlow",
    "protocol": "iFlow code's data (40 segments x 1000, n = d = 5, segment means U(-5, 5), a fresh matrix per "
    "layer); iFlow about 30 minutes per model on an RTX 2080",
    "values": {"iflow": {"all": (0.7241, 0.0635)}, "ivae": {"all": (0.4964, 0.0723)}, "flow": {"all": (0.645, 0.064)}},
}
PUBLISHED_SECONDS = {"iflow": 30 * 60}  # per model, on a GPU
SEEDS = 100


def settings(quick: bool) -> list[dict]:
    data = {**common.IFLOW_DATA, "segments": 10 if quick else 40, "per_segment": 400 if quick else 1000}
    epochs = {"iflow": 8 if quick else 32, "flow": 8 if quick else 32, "ivae": 10 if quick else 60}
    return [common.preset(model, data, epochs[model], x="all") for model in ("iflow", "ivae", "flow")]


run = common.run


def report(rows: list[dict], out: Path) -> None:
    from matplotlib.figure import Figure

    from ..figures import save_figure

    groups = summarise(rows, "mcc")
    models = [m for m, _ in groups]
    fig = Figure(figsize=(5, 3.6))
    ax = fig.subplots()
    ax.boxplot([groups[(m, "all")] for m in models], showmeans=True)
    ax.set_xticks(range(1, len(models) + 1), [LABELS[m] for m in models], fontsize=8)
    for i, model in enumerate(models, start=1):
        mean, std = PUBLISHED["values"][model]["all"]
        ax.errorbar(i + 0.3, mean, yerr=std, color="red", marker="x", capsize=3, label="published" if i == 1 else None)
    ax.set_ylabel("MCC")
    ax.legend(fontsize=7)
    ax.set_title(f"MCC over {len(groups[(models[0], 'all')])} data seeds", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / "figure.png")
    header = "| model | seeds | ours: MCC mean +- std | published | seconds per model (ours, 1 thread) | published time |"
    lines = [header, "|---|---|---|---|---|---|"]
    for model in models:
        values = groups[(model, "all")]
        seconds = np.mean([r["seconds"] for r in rows if r["setting"]["model"] == model])
        mean, std = PUBLISHED["values"][model]["all"]
        gpu = f"about {PUBLISHED_SECONDS[model] / 60:.0f} min (GPU)" if model in PUBLISHED_SECONDS else ""
        lines.append(f"| {LABELS[model]} | {len(values)} | {np.mean(values):.3f} +- {np.std(values):.3f} | "
                     f"{mean:.3f} +- {std:.3f} | {seconds:.0f} | {gpu} |")  # fmt: skip
    lines += ["", f"Published: {PUBLISHED['source']}; protocol: {PUBLISHED['protocol']}."]
    write_text(out / "table.md", "\n".join(lines) + "\n")
