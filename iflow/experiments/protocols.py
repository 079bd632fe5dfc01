"""Both papers' data and protocols on both models: why the papers disagree about the iVAE (0.95 against 0.50)."""

from __future__ import annotations

from pathlib import Path

from . import common
from .report import markdown_table, write_text

DESCRIPTION = "Both papers' data on the identifiable flow and iVAE: why the iVAE scores 0.95 in one paper, 0.50 in the other"
PUBLISHED = {
    "source": "iVAE paper Fig. 2a (iVAE data); iFlow paper Fig. 2a (iFlow data)",
    "protocol": "iVAE data: centred sources, one mixing matrix in all 3 layers, MCC of a posterior sample, the "
    "iVAE code's weighted objective; iFlow data: segment means U(-5, 5), a fresh matrix per layer, data seeds "
    "1-100. Both 40 segments x 1000, n = d = 5",
    "values": {"ivae": {"ivae data": 0.952, "iflow data": 0.4964}, "iflow": {"iflow data": 0.7241}},
}
DATA = {"ivae data": common.IVAE_DATA, "iflow data": common.IFLOW_DATA}


def settings(quick: bool) -> list[dict]:
    size = {"segments": 10 if quick else 40, "per_segment": 400 if quick else 1000}
    epochs = {"iflow": 8 if quick else 32, "ivae": 10 if quick else 60}
    return [common.preset(model, {**data, **size}, epochs[model], x=name)
            for name, data in DATA.items() for model in ("iflow", "ivae")]  # fmt: skip


def run(setting: dict, seed: int) -> dict:
    """The usual row; for the VAE family also ``mcc_sample``, the MCC of a posterior sample."""
    row, data, _, trained = common.train_and_score(setting, seed)
    sample = common.posterior_sample_mcc(trained, data, seed) if setting["model"] in common.VAE_FAMILY else None
    return {**row, "mcc_sample": sample}


def report(rows: list[dict], out: Path) -> None:
    import numpy as np
    from matplotlib.figure import Figure

    from ..figures import save_figure
    from .report import LABELS, summarise

    groups = summarise(rows, "mcc")
    fig = Figure(figsize=(5, 3.6))
    ax = fig.subplots()
    names = list(DATA)
    for i, model in enumerate(("iflow", "ivae")):
        xs = np.arange(len(names)) + 0.35 * i
        ax.bar(xs, [np.mean(groups.get((model, n), [np.nan])) for n in names], width=0.3, color=f"C{i}",
               label=f"{LABELS[model]} (ours)")  # fmt: skip
        published = PUBLISHED["values"].get(model, {})
        ax.scatter([x for x, n in zip(xs, names, strict=True) if n in published], [published[n] for n in names if n in published],
                   color="k", marker="_", s=300, zorder=3, label="published" if i == 0 else None)  # fmt: skip
    ax.set_xticks(np.arange(len(names)) + 0.175, names)
    ax.set_ylabel("MCC")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "figure.png")
    write_text(out / "table.md", markdown_table(rows, PUBLISHED, "data", extra=("mcc_sample",)))
