"""The iVAE authors' own code beside iflow's iVAE, on the data their code makes (the Fig. 2a protocol).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/ivae_authors.py --code PATH --seeds 1 2 3 4 5   # benchmarks/ivae_authors.md
    OMP_NUM_THREADS=1 python benchmarks/ivae_authors.py --code PATH --seeds 1 --noise 0

PATH is a checkout of github.com/ilkhem/iVAE (measured at commit cf6ff68). Nothing in it is edited or
written to; its code predates numpy 1.24 and torch 2, so while it runs ``np.int`` is aliased to ``int`` and
``ReduceLROnPlateau`` drops its removed ``verbose`` argument. Per data seed (the ``s`` of their
``configs/ivae.yaml``; everything else as shipped: 5 centred Gaussian sources, 40 x 1000, 3 xtanh layers
reusing one matrix) and noise level (their ``noisy``: the standard deviation of Gaussian noise on x; 0 as
shipped, 0.1 as the paper's text says):

- ``authors``: their runner, training seed 0 as their ``main.py`` sets it (cleanIVAE, objective weights
  (100, 1, 0, 10), Adam 1e-2, batch 64, 20 epochs, learning rate x 0.1 on every epoch whose training loss
  did not improve); MCC of one posterior draw on all points, as their runner computes it;
- ``iflow``: iflow's iVAE with the paper's settings (:data:`iflow.experiments.ivae_fig2a.PAPER_MODEL`,
  ``PAPER_TRAIN``) on the same arrays; MCC of q's mean and of one posterior draw.

Rows are cached in ``benchmarks/ivae_authors.json`` (key noise/seed/which); ``--refresh`` re-runs them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import torch
from cache import update_cache

from iflow.data.dataset import make_dataset
from iflow.experiments import common
from iflow.experiments.ivae_fig2a import PAPER_MODEL, PAPER_TRAIN, PUBLISHED
from iflow.runs import evaluate, train

HERE = Path(__file__).parent
CACHE = HERE / "ivae_authors.json"
REPORT = HERE / "ivae_authors.md"
MEASURED_AT = "cf6ff68"


class QuietPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """ReduceLROnPlateau without the ``verbose`` argument their runner passes (removed from torch)."""

    def __init__(self, optimizer: torch.optim.Optimizer, *args: object, verbose: bool = False, **kwargs: object) -> None:
        super().__init__(optimizer, *args, **kwargs)


@contextlib.contextmanager
def authors_code(code: Path):
    """Their packages importable and the two shims in place; everything restored afterwards."""
    if not (code / "runners" / "ivae.py").is_file():
        sys.exit(f"ivae_authors: error: {code} is not a checkout of github.com/ilkhem/iVAE (no runners/ivae.py)")
    had_int, plateau = hasattr(np, "int"), torch.optim.lr_scheduler.ReduceLROnPlateau
    sys.path.insert(0, str(code))
    np.int = int  # type: ignore[attr-defined]
    torch.optim.lr_scheduler.ReduceLROnPlateau = QuietPlateau
    try:
        yield importlib.import_module("runners.ivae")
    finally:
        torch.optim.lr_scheduler.ReduceLROnPlateau = plateau
        if not had_int:
            del np.int  # type: ignore[attr-defined]
        sys.path.remove(str(code))
        for name in [name for name, module in sys.modules.items() if _loaded_from(module, code)]:
            del sys.modules[name]  # their top-level names (data, models, runners) are common; do not leave them cached


def _loaded_from(module: object, code: Path) -> bool:
    """Whether ``module`` was imported from a file under ``code``."""
    file = getattr(module, "__file__", None)
    return file is not None and Path(file).resolve().is_relative_to(code.resolve())


def shipped_config(code: Path, seed: int, noise: float) -> Namespace:
    """Their ``configs/ivae.yaml`` with data seed ``seed`` and noise ``noise``, on the CPU."""
    import yaml  # their configs are YAML; pyyaml is only needed here

    config = yaml.safe_load((code / "configs" / "ivae.yaml").read_text())
    config.update(s=seed, noisy=noise)
    return Namespace(**config, device=torch.device("cpu"))


def run_authors(code: Path, seed: int, noise: float) -> tuple[dict, dict[str, np.ndarray]]:
    """Their runner on their data (made in a temporary folder); the row and the data arrays."""
    with authors_code(code) as runner, tempfile.TemporaryDirectory() as folder:
        config = shipped_config(code, seed, noise)
        args = Namespace(data_path=folder + "/", seed=0, n_sims=1)
        np.random.seed(0)
        torch.manual_seed(0)
        started = time.process_time()
        log = io.StringIO()
        try:
            with contextlib.redirect_stdout(log):
                perfs, losses, _ = runner.runner(args, config)
            loss = losses[0]  # per epoch; a blow-up: an epoch's training loss above the first epoch's
            row = {"mcc_sample": float(perfs[0]), "blew_up": bool(max(loss[1:]) > loss[0]),
                   "first_loss": float(loss[0]), "final_loss": float(loss[-1])}  # fmt: skip
        except ValueError as exc:  # their MCC of non-finite latents (scipy's assignment refuses NaN)
            epochs = [line.strip() for line in log.getvalue().splitlines() if line.startswith("==> Epoch")]
            row = {"mcc_sample": None, "blew_up": True, "failed": str(exc), "last_epoch": epochs[-1] if epochs else None}
        row["cpu_seconds"] = time.process_time() - started
        (path,) = Path(folder).glob("*.npz")
        with np.load(path) as saved:
            arrays = {name: saved[name] for name in ("x", "u", "s")}
    return row, arrays


def run_iflow(arrays: dict[str, np.ndarray], seed: int) -> dict:
    """iflow's iVAE with the paper's settings on their arrays (one-hot u as labels)."""
    data = make_dataset(arrays["x"], np.argmax(arrays["u"], axis=1), arrays["s"])
    started = time.process_time()
    trained, result = train(data, PAPER_MODEL, PAPER_TRAIN, progress=False)
    seconds = time.process_time() - started
    return {"mcc": evaluate(trained, data)["mcc"], "mcc_sample": common.posterior_sample_mcc(trained, data, seed),
            "cpu_seconds": seconds, "best_epoch": result.best_epoch}  # fmt: skip


def markdown(cache: dict, noises: list[float], seeds: list[int]) -> str:
    """Per noise level: both codes' MCC per data seed, their means, and the published number."""
    lines = [
        f"The authors' code (github.com/ilkhem/iVAE at {MEASURED_AT}) and iflow's iVAE on the same data, made by "
        f"the authors' generator (shipped `configs/ivae.yaml`, data seed `s`); published (Fig. 2a): "
        f"{PUBLISHED['paper']}. Regenerate: `OMP_NUM_THREADS=1 nice -n 10 python benchmarks/ivae_authors.py "
        f"--code PATH --seeds {' '.join(map(str, seeds))}`.",
        "",
        "| noise sd | code | MCC per data seed | mean | runs that blew up | CPU s |",
        "|---:|---|---|---:|---:|---:|",
    ]
    for noise in noises:
        for which, label in (("authors", "authors' (a posterior draw)"), ("iflow", "iflow, paper's settings (q's mean)")):
            rows = [cache[key] for key in (f"{noise}/{seed}/{which}" for seed in seeds) if key in cache]
            if not rows:
                continue
            values = [r["mcc_sample"] if which == "authors" else r["mcc"] for r in rows]
            finished = [v for v in values if v is not None]
            blown = sum(r.get("blew_up", False) for r in rows)
            mean = f"{np.mean(finished):.3f}" if finished else "-"
            if len(finished) < len(values):
                mean += f" ({len(finished)} of {len(values)} finished)"
            lines.append(
                f"| {noise:g} | {label} | {', '.join('failed' if v is None else f'{v:.3f}' for v in values)} | {mean} | "
                f"{blown if which == 'authors' else '-'} | {np.mean([r['cpu_seconds'] for r in rows]):.0f} |"
            )
    ours = [cache[f"{noise}/{seed}/iflow"] for noise in noises for seed in seeds if f"{noise}/{seed}/iflow" in cache]
    lines += ["", "Blew up: an epoch's training loss above the first epoch's; failed: the loss went to NaN and their "
              "runner's MCC of the NaN latents raised."]  # fmt: skip
    if ours:
        spread = max(abs(r["mcc"] - r["mcc_sample"]) for r in ours)
        lines[-1] += f" iflow's MCC of one posterior draw (their metric) is within {spread:.3f} of q's mean's."
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, required=True, help="a checkout of github.com/ilkhem/iVAE")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--refresh", action="store_true", help="re-run rows already in the cache")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    for noise in args.noise:
        for seed in args.seeds:
            key = f"{noise}/{seed}"
            if not args.refresh and f"{key}/iflow" in cache:
                continue
            authors, arrays = run_authors(args.code, seed, noise)
            update_cache(CACHE, f"{key}/authors", authors)
            update_cache(CACHE, f"{key}/iflow", run_iflow(arrays, seed))
            cache = json.loads(CACHE.read_text())
            print(json.dumps({"noise": noise, "seed": seed, "authors": cache[f"{key}/authors"],
                              "iflow": cache[f"{key}/iflow"]}), flush=True)  # fmt: skip
    REPORT.write_text(markdown(cache, args.noise, args.seeds))
    print(REPORT.read_text())


if __name__ == "__main__":
    main()
