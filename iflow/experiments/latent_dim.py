"""iVAE paper Fig. 2b: MCC against the latent dimension n (observed d = 5), iVAE against VAE."""

from __future__ import annotations

from pathlib import Path

from . import common
from .report import standard_report

DESCRIPTION = "iVAE Fig. 2b: MCC against latent dimension n = 2..5 (d = 5), iVAE against VAE"
PUBLISHED = {
    "source": "iVAE paper, Fig. 2b",
    "protocol": "iVAE code's data (40 segments x 1000, centred sources), d = 5 observed, n sources and latents",
    "values": {"ivae": {2: 0.958, 3: 0.935, 4: 0.951, 5: 0.957}, "vae": {2: 0.876, 3: 0.944, 4: 0.830, 5: 0.683}},
}
# d > n needs a rectangular first layer: matrices are fresh per layer here (the iVAE code shares one only when n = d)


def settings(quick: bool) -> list[dict]:
    rows = []
    for n in (2, 3, 4, 5):
        data = {"centered": True, "sources": n, "dim": 5, "segments": 10 if quick else 40,
                "per_segment": 400 if quick else 1000}  # fmt: skip
        for model in ("ivae", "vae"):
            rows.append(common.preset(model, data, 8 if quick else 20, {"latent_dim": n}, x=n))
    return rows


run = common.run


def report(rows: list[dict], out: Path) -> None:
    standard_report(rows, out, PUBLISHED, "latent n", "latent dimension n (d = 5)")
