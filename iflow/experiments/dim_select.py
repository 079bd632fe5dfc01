"""iVAE paper Fig. 6b: choosing the latent dimension by the likelihood bound, which has a knee at the true one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import common
from .report import line_figure, summarise, write_text

DESCRIPTION = "iVAE Fig. 6b: iVAE's likelihood bound against latent dimension, a knee at the true n"
PUBLISHED = {
    "source": "iVAE paper, Fig. 6b",
    "protocol": "d* = 80 observed, n* = 15 sources; ELBO against latent dimension (qualitative: a knee at 15)",
    "values": {},
}
TRUE = {True: (5, 20), False: (15, 80)}  # quick: (n*, d*)
IW_SAMPLES = 50  # K of the bound compared across latent dimensions


def latent_dims(quick: bool) -> tuple[int, ...]:
    return (2, 3, 5, 7, 9) if quick else (5, 10, 15, 20, 25, 30)


def settings(quick: bool) -> list[dict]:
    n, d = TRUE[quick]
    data = {"centered": True, "sources": n, "dim": d, "noise": 0.1, "segments": 20, "per_segment": 300 if quick else 1000}
    return [common.preset("ivae", data, 10 if quick else 30, {"latent_dim": k, "iw_samples": IW_SAMPLES}, x=k, true_n=n)
            for k in latent_dims(quick)]  # fmt: skip


run = common.run


def knee(dims: list[int], values: list[float]) -> int:
    """The dimension after which the bound's gain per added latent falls most (the largest drop in slope)."""
    slopes = np.diff(values) / np.diff(dims)
    return int(dims[1 + int(np.argmax(slopes[:-1] - slopes[1:]))]) if len(slopes) > 1 else int(dims[-1])


def report(rows: list[dict], out: Path) -> None:
    true_n = rows[0]["setting"]["true_n"]
    groups = summarise(rows, "log_likelihood")
    dims = sorted(x for _, x in groups)
    means = [float(np.mean(groups[("ivae", k)])) for k in dims]
    found = knee(dims, means)
    line_figure(rows, None, f"latent dimension (true n = {true_n})", out / "figure.png", key="log_likelihood",
                y_label=f"IW bound, K = {IW_SAMPLES} (nats/sample)", title=f"{PUBLISHED['source']}: knee at {found}")  # fmt: skip
    lines = ["| latent dim | iVAE IW bound (nats/sample) | MCC |", "|---|---|---|"]
    mccs = summarise(rows, "mcc")
    lines += [f"| {k} | {m:.3f} | {np.mean(mccs[('ivae', k)]):.3f} |" for k, m in zip(dims, means, strict=True)]
    note = f"Knee (largest drop in the bound's slope) at {found}; true n = {true_n}."
    lines += ["", f"{note} Published: {PUBLISHED['source']}; protocol: {PUBLISHED['protocol']}."]
    write_text(out / "table.md", "\n".join(lines) + "\n")
