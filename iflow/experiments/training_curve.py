"""iVAE paper Fig. 2a: MCC against training epoch for the identifiable flow and the VAE family."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import common
from .report import LABELS, markdown_table, write_text

DESCRIPTION = "iVAE Fig. 2a: MCC against epoch, identifiable flow, iVAE, VAE, beta-VAE, beta-TC-VAE (iVAE data)"
PUBLISHED = {
    "source": "iVAE paper, Fig. 2a (MCC after 20 epochs)",
    "protocol": "iVAE code's data (40 segments x 1000, n = d = 5, centred sources, one mixing matrix in all 3 "
    "layers), MCC of a posterior sample, the iVAE code's weighted objective",
    "values": {"ivae": {"final": 0.952}, "vae": {"final": 0.682}, "betavae": {"final": 0.665}, "tcvae": {"final": 0.722}},
}
MODELS = ("iflow", "ivae", "vae", "betavae", "tcvae")


def settings(quick: bool) -> list[dict]:
    data = {**common.IVAE_DATA, "segments": 10 if quick else 40, "per_segment": 400 if quick else 1000}
    return [common.preset(model, data, 8 if quick else 20, x="final") for model in MODELS]


run = common.run


def report(rows: list[dict], out: Path) -> None:
    from matplotlib.figure import Figure

    from ..figures import save_figure

    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    for i, model in enumerate(dict.fromkeys(r["setting"]["model"] for r in rows)):
        curves = np.array([[e["mcc"] for e in r["epochs"]] for r in rows if r["setting"]["model"] == model])
        epochs = np.arange(1, curves.shape[1] + 1)
        ax.plot(epochs, curves.mean(0), color=f"C{i}", marker=".", label=f"{LABELS[model]} (ours)")
        if len(curves) > 1:
            ax.fill_between(epochs, curves.min(0), curves.max(0), color=f"C{i}", alpha=0.15)
        published = PUBLISHED["values"].get(model, {}).get("final")
        if published is not None:
            ax.axhline(published, color=f"C{i}", linestyle="--", linewidth=1, label=f"{LABELS[model]} (published, epoch 20)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MCC")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(PUBLISHED["source"], fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / "figure.png")
    write_text(out / "table.md", markdown_table(rows, PUBLISHED, "epoch"))
