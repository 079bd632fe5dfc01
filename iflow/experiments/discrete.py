"""iVAE paper Fig. 6a: discrete (Bernoulli) observations, d = 100, n = 10, iVAE against VAE."""

from __future__ import annotations

from pathlib import Path

from . import common
from .report import standard_report

DESCRIPTION = "iVAE Fig. 6a: Bernoulli observations d = 100 of n = 10 sources, iVAE against VAE"
PUBLISHED = {
    "source": "iVAE paper, Fig. 6a",
    "protocol": "its discrete.py: 10 centred sources, 20 segments x 3000, one linear map to d = 100, Bernoulli "
    "observations; linear encoder and decoder",
    "values": {"ivae": {"d=100, n=10": 0.823}, "vae": {"d=100, n=10": 0.539}},
}
TRAIN = {"epochs": 50, "batch_size": 200, "lr": 1e-2, "prior_fit": "none", "linear_fit": "none"}  # the paper's


def settings(quick: bool) -> list[dict]:
    n, d = (5, 20) if quick else (10, 100)
    data = {"sources": n, "dim": d, "obs": "bernoulli", "layers": 1, "centered": True, "segments": 20,
            "per_segment": 300 if quick else 3000}  # fmt: skip
    options = {"obs": "bernoulli", "latent_dim": n, "depth": 0}  # linear encoder and decoder, as the paper's
    train = {**TRAIN, "epochs": 10} if quick else TRAIN
    x = f"d={d}, n={n}"
    return [{**common.preset(model, data, train["epochs"], options, x=x), "train": train} for model in ("ivae", "vae")]


run = common.run


def report(rows: list[dict], out: Path) -> None:
    standard_report(rows, out, PUBLISHED, "data", "data")
