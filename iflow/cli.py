"""The ``iflow`` command line. Heavy imports (torch) happen inside commands, so ``--help`` is instant.

User errors print one line ``iflow: error: ...`` on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TextIO

from . import __version__
from .config import (  # dataclasses only: --help stays instant
    LINEAR_FITS,
    MAX_SEED,
    PRECISIONS,
    PRIOR_FITS,
    STARTS,
    ModelConfig,
    TrainConfig,
)
from .training.stopping import STOP_REASONS

DATA_HELP = (
    "eight-gaussians, checkerboard, rings, moons, digits, a .npz with x, u (and optionally s; x may be "
    "images with --levels), or a .csv of floats (no header; u in its last --u-cols columns)"
)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line ``iflow: error: ...`` (exit 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"iflow: error: {self.prog.removeprefix('iflow').strip() + ': ' if self.prog != 'iflow' else ''}"
                     f"{message} (see {self.prog} --help)\n")  # fmt: skip


def _int(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return value


def positive_int(text: str) -> int:
    return _int(text, 1, "a positive integer")


def nonnegative_int(text: str) -> int:
    return _int(text, 0, "an integer >= 0")



def seed(text: str) -> int:
    value = _int(text, 0, f"an integer in 0..{MAX_SEED}")
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..{MAX_SEED}, got {text}")
    return value

def _float(text: str, ok: Callable[[float], bool], what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return value


def positive_float(text: str) -> float:
    return _float(text, lambda v: v > 0, "a number > 0")


def nonnegative_float(text: str) -> float:
    return _float(text, lambda v: v >= 0, "a number >= 0")


def fraction(text: str) -> float:
    return _float(text, lambda v: 0 < v < 1, "a fraction in (0, 1)")


def condition_values(text: str) -> float | list[float]:
    """``--u``: one number (a label, or continuous u) or comma-separated numbers (u of several dimensions)."""
    try:
        values = [int(part) if part.strip().lstrip("+-").isdigit() else float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number or numbers separated by commas, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def add_data_layout_options(p: argparse.ArgumentParser, of_run: bool = False) -> None:
    """``of_run``: the command reads data for a trained run, whose own reading is the default."""
    as_trained = "default: as the run's training file was read, else "
    p.add_argument("--u-cols", type=nonnegative_int, default=None if of_run else 0, metavar="K",
                   help="a CSV's last K columns are u (one integer column: labels; otherwise continuous); "
                   f"{as_trained if of_run else 'default '}0: no u, one label")  # fmt: skip
    p.add_argument("--levels", type=positive_int, default=None, metavar="K",
                   help="an .npz of images x (n, H, W) or (n, C, H, W): their number of levels 0..K-1 "
                   f"({as_trained if of_run else 'default: '}the file's array levels)")  # fmt: skip


def add_split_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", default=None,
                   help="rows to read: train or val, the run's training or held-out validation rows of the data it was "
                   "trained on; all, every row (default for a file); test, a built-in set's test split (its default)")  # fmt: skip


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--threads", type=positive_int, default=TrainConfig().threads,
                   help="torch CPU threads (default %(default)s)")


def add_synthetic_options(p: argparse.ArgumentParser) -> None:
    from_defaults = {"sources": 5, "segments": 40, "per_segment": 1000, "layers": 3}
    p.add_argument("--sources", type=positive_int, default=from_defaults["sources"], help="number of sources n (default 5)")
    p.add_argument("--segments", type=positive_int, default=from_defaults["segments"], help="number of segments M (default 40)")
    p.add_argument("--per-segment", type=positive_int, default=from_defaults["per_segment"], help="points per segment L (default 1000)")
    p.add_argument("--layers", type=positive_int, default=from_defaults["layers"], help="mixing MLP layers (default 3)")
    p.add_argument("--activation", choices=["xtanh", "leaky", "smooth-leaky"], default="xtanh",
                   help="mixing activation (default xtanh); smooth-leaky: c a + (1 - c) softplus(a), c = --slope")
    p.add_argument("--centered", action="store_true", help="zero-mean sources (variance-modulated only)")
    p.add_argument("--prior", choices=["gauss", "laplace", "student-t", "uniform"], default="gauss",
                   help="source distribution (default gauss)")
    p.add_argument("--dof", type=float, default=3.0, help="degrees of freedom of --prior student-t (default 3)")
    p.add_argument("--slope", type=float, default=0.2, help="negative-side slope of the leaky activations (default 0.2)")
    p.add_argument("--condition-percentile", type=float, default=25.0,
                   help="mixing matrices accepted below this percentile of random condition numbers (default 25)")
    p.add_argument("--max-condition", type=float, default=None,
                   help="instead, mixing matrices accepted below this condition number (e.g. 25)")
    p.add_argument(
        "--noise", type=nonnegative_float, default=0.0,
        help="standard deviation (not variance) of Gaussian noise added to x (default 0); the iVAE benchmark's "
        "noise variance 0.01 is --noise 0.1",
    )  # fmt: skip
    p.add_argument("--obs", choices=["gaussian", "bernoulli"], default="gaussian",
                   help="gaussian: x = f(s) + noise (default); bernoulli: x ~ Bernoulli(sigmoid(f(s)))")
    p.add_argument("--dim", type=nonnegative_int, default=0,
                   help="observed dimensions D >= sources (default: = sources); D > n mixes by an MLP from n to D "
                   "and has no true log-likelihood")
    p.add_argument("--seed", type=seed, default=1, help="data seed (default 1)")
    p.add_argument("--mixing", choices=["fresh", "shared", "orthogonal"], default="fresh",
                   help="fresh matrix per layer (default, iFlow), one shared by every layer (iVAE code), or "
                   "orthogonal: activation then a random orthogonal matrix per layer (ICE-BeeM, with --activation leaky)")
    p.add_argument("--means", choices=["uniform", "easy"], default="uniform",
                   help="segment means U(-5, 5) (default), or easy: the second source's mean is 2 x a permuted "
                   "segment index (the iVAE paper's easy-to-classify data)")


MODEL_DEFAULTS = ModelConfig()  # one source of truth for the defaults: the dataclasses
TRAIN_DEFAULTS = TrainConfig()
MODEL_OPTIONS = ("model", "flow", "prior", "depth", "hidden", "bins", "tail_bound", "latent_dim", "obs", "noise_var",
                 "learn_noise", "beta", "anneal_steps", "iw_samples", "train_samples", "encoder", "tcl_ica",
                 "posterior", "posterior_depth", "objective_weights")  # fmt: skip
TRAIN_OPTIONS = ("epochs", "batch_size", "lr", "weight_decay", "val_fraction", "seed", "device", "threads",
                 "prior_fit", "linear_fit", "max_epochs", "patience", "tolerance", "time_limit", "rate_cut",
                 "precision", "compile", "start")  # fmt: skip
PER_TASK = "default: per task, see README"


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Model options default to None ("not given"): the config's default applies, and an option
    given to a model that does not read it is an error."""
    d = MODEL_DEFAULTS
    p.add_argument("--model", default=None,
                   help="iflow (default), flow (unconditional baseline), ivae, noisy-iflow (the identifiable flow "
                   "followed by Gaussian noise, trained as a VAE), the baselines vae, betavae, tcvae, "
                   "tcl (time-contrastive learning), fastica (FastICA on x) or identity (x itself)")
    flow = p.add_argument_group("flows (iflow, flow)")
    flow.add_argument("--flow", default=None, help=f"realnvp, glow, spline or mlp (default {d.flow})")
    p.add_argument("--prior", default=None, help="iflow and ivae: gauss, gauss-var or laplace; iflow also "
                   "student-t, shape, or auto: train gauss, student-t and shape and keep the best held-out "
                   "log-likelihood (default gauss, or auto for iflow on small labelled data; iflow train says "
                   "which)")
    p.add_argument("--depth", type=positive_int, default=None,
                   help="flow depth, or the VAE's hidden layers (default: the flow's own; VAE 3)")
    p.add_argument("--hidden", type=positive_int, default=None,
                   help="hidden units of coupling networks or of the VAE's networks (default 64)")
    flow.add_argument("--bins", type=positive_int, default=None, help="spline bins (default: spline 8, mlp 16)")
    flow.add_argument("--tail-bound", type=positive_float, default=None, help="spline interval [-B, B] (default 4)")
    vae = p.add_argument_group("VAE family (ivae, vae, betavae, tcvae)")
    vae.add_argument("--latent-dim", type=positive_int, default=None, help="latents n <= d (default: d)")
    vae.add_argument("--obs", default=None, help="decoder p(x | z): gaussian (default), bernoulli or poisson")
    vae.add_argument("--noise-var", type=positive_float, default=None,
                     help=f"Gaussian decoder variance, in standardised units of x (default {d.noise_var})")
    vae.add_argument("--learn-noise", action="store_true", default=None, help="learn the Gaussian decoder variance")
    vae.add_argument("--beta", type=nonnegative_float, default=None,
                     help="KL weight; for tcvae the total-correlation weight (default: 1, betavae 4, tcvae 6)")
    vae.add_argument("--anneal-steps", type=nonnegative_int, default=None,
                     help="KL weight rises 0 -> 1 over N steps (default 0)")
    vae.add_argument("--iw-samples", type=positive_int, default=None,
                     help=f"K of the importance-weighted log-likelihood bound (default {d.iw_samples})")
    vae.add_argument("--train-samples", type=positive_int, default=None,
                     help="K of the training objective: 1 the ELBO, K > 1 the importance-weighted bound (IWAE; needs "
                     "beta 1 and no annealing); default 8 for ivae and vae with beta 1, else 1")
    vae.add_argument("--encoder", default=None,
                     help="posterior q(z | x, u): mlp (default; u added at the first layer) or product "
                     "(a Gaussian q(z | x) times the prior p(z | u), normalised; Gaussian priors only)")
    p.add_argument("--tcl-ica", action="store_true", default=None,
                   help="tcl: FastICA of the features after training (the TCL paper's last step)")
    vae.add_argument("--posterior", default=None,
                     help="q's family: gaussian (default) or flow (conditional spline couplings on the Gaussian)")
    vae.add_argument("--posterior-depth", type=positive_int, default=None,
                     help=f"coupling layers of the flow posterior (default {d.posterior_depth})")
    vae.add_argument("--objective-weights", type=float, nargs=4, default=None, metavar=("A", "B", "C", "D"),
                     help="the iVAE code's re-weighted ELBO: reconstruction, mutual information, total correlation, "
                     "dimension-wise KL (its Fig. 2a run: 100 1 0 10)")


def add_train_options(p: argparse.ArgumentParser) -> None:
    d = TRAIN_DEFAULTS
    p.add_argument("--epochs", type=positive_int, default=d.epochs,
                   help="a fixed budget of epochs, cosine schedule (default: train to convergence)")
    p.add_argument("--max-epochs", type=positive_int, default=d.max_epochs,
                   help=f"at most this many epochs when training to convergence ({PER_TASK})")
    p.add_argument("--patience", type=positive_int, default=d.patience,
                   help=f"stop after this many epochs without a held-out gain above --tolerance ({PER_TASK})")
    p.add_argument("--tolerance", type=nonnegative_float, default=d.tolerance,
                   help=f"held-out log-likelihood gain (nats/sample) that counts as progress ({PER_TASK})")
    p.add_argument("--rate-cut", type=nonnegative_float, default=d.rate_cut, metavar="F",
                   help="on a held-out plateau while the learning rate is at least F x --lr, and when the held-out "
                        "log-likelihood collapses (0.2 nats per dimension below its best), go back to the best "
                        f"epoch's state at half the rate instead of stopping; 0: off ({PER_TASK})")
    p.add_argument("--time-limit", type=positive_float, default=d.time_limit, metavar="SECONDS",
                   help="stop after the first epoch that ends past this many seconds of training (default: none)")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size, help=f"batch size ({PER_TASK})")
    p.add_argument("--lr", type=positive_float, default=d.lr, help=f"Adam learning rate ({PER_TASK})")
    p.add_argument("--weight-decay", type=nonnegative_float, default=d.weight_decay,
                   help="Adam weight decay (default %(default)s)")
    p.add_argument("--val-fraction", type=fraction, default=d.val_fraction, help="held-out fraction (default %(default)s)")
    p.add_argument("--seed", type=seed, default=d.seed, help="training seed (default %(default)s)")
    p.add_argument(
        "--prior-fit", choices=PRIOR_FITS, default=d.prior_fit,
        help="closed-form M-step of a label prior: none, init (a data-dependent start) or epoch (at the start "
        "and after every epoch); default: epoch for flows, none for the VAE family",
    )  # fmt: skip
    p.add_argument(
        "--linear-fit", choices=LINEAR_FITS, default=d.linear_fit,
        help="after every epoch, refit the flow's last linear layer by L-BFGS on the likelihood with the "
        "Gaussian label prior profiled out (epoch); auto (default): whenever the flow ends in a linear "
        "layer, the prior is a Gaussian label prior and --prior-fit is epoch",
    )  # fmt: skip
    p.add_argument(
        "--start", choices=STARTS, default=d.start,
        help="ivae: flow, first train the identifiable flow with its defaults on the same rows, fit the encoder's "
        "mean and the decoder to its latents, then train the iVAE from there; or random weights (default: flow "
        "for ivae on recovery data with as many latents as dimensions and --obs gaussian, else random)",
    )  # fmt: skip
    p.add_argument(
        "--precision", choices=PRECISIONS, default=d.precision,
        help="of the training steps: fp32 (default); tf32, CUDA matmuls and convolutions in TensorFloat-32; "
        "bf16, the coupling flows' conditioner networks in bfloat16 (CPU or CUDA; log-determinants, splines and "
        "the prior stay float32); evaluation is always full precision",
    )  # fmt: skip
    p.add_argument(
        "--restarts", type=positive_int, default=1,
        help="train K models (seeds S, S+1, ...; K per prior with --prior auto) and keep the best by held-out "
        "log-likelihood (default 1)",
    )  # fmt: skip
    p.add_argument(
        "--jobs", type=positive_int, default=None,
        help="restarts (and --prior auto's priors) trained at once, one process each (default: all of them, at "
        "most the number of CPUs)",
    )  # fmt: skip
    p.add_argument("--compile", action="store_true", default=d.compile,
                   help="torch.compile the training loss: tens of seconds to compile on a model's first run, "
                   "cached for the next (see README, Performance)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="iflow", description="Identifiable flows: train, recover latents, score.")
    parser.add_argument("--version", action="version", version=f"iflow {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="make data sets")
    kinds = data.add_subparsers(dest="kind", required=True, metavar="KIND")
    synthetic = kinds.add_parser("synthetic", help="nonstationary sources mixed by an invertible MLP")
    add_synthetic_options(synthetic)
    synthetic.add_argument("--out", required=True, type=Path, help="output .npz")
    synthetic.set_defaults(handler=cmd_data_synthetic)

    train = commands.add_parser("train", help="train a model on a data file")
    train.add_argument("--data", required=True, help=DATA_HELP)
    add_model_options(train)
    add_train_options(train)
    add_data_layout_options(train)
    add_runtime_options(train)
    train.add_argument("--out", required=True, type=Path, help="run directory")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    train.add_argument("--resume", action="store_true", help="continue a killed or interrupted run from its checkpoint")
    train.add_argument("--checkpoint-every", type=nonnegative_float, default=60.0, metavar="SECONDS",
                       help="seconds between resume checkpoints (default 60; 0: every step)")  # fmt: skip
    train.set_defaults(handler=cmd_train)

    encode = commands.add_parser("encode", help="recover latents z = g(x)")
    encode.add_argument("--run", required=True, type=Path)
    encode.add_argument("--data", required=True, help=DATA_HELP + "; built-in sets: their test split")
    encode.add_argument("--out", required=True, type=Path, help="output .npz holding z (n, k), rows in input order")
    add_split_option(encode)
    add_data_layout_options(encode, of_run=True)
    add_runtime_options(encode)
    encode.set_defaults(handler=cmd_encode)

    evaluate = commands.add_parser("eval", help="log-likelihood, bits/dim and MCC of a run on a data file")
    evaluate.add_argument("--run", required=True, type=Path)
    evaluate.add_argument("--data", required=True, help=DATA_HELP + "; built-in sets are scored on their test split")
    evaluate.add_argument("--json", action="store_true", help="one JSON object on stdout")
    add_split_option(evaluate)
    add_data_layout_options(evaluate, of_run=True)
    add_runtime_options(evaluate)
    evaluate.set_defaults(handler=cmd_eval)

    sample = commands.add_parser("sample", help="draw x from p(x | u)")
    sample.add_argument("--run", required=True, type=Path)
    condition = sample.add_mutually_exclusive_group(required=True)
    condition.add_argument("--u", type=condition_values, metavar="U",
                           help="integer label, or continuous u: V or V1,V2,... in the units of the training u")
    condition.add_argument("--u-file", type=Path, help=".npz whose array u holds one condition per draw")
    sample.add_argument("--n", type=positive_int, help="number of samples (default with --u-file: one per row)")
    sample.add_argument("--seed", type=seed, default=0)
    sample.add_argument("--out", required=True, type=Path)
    add_runtime_options(sample)
    sample.set_defaults(handler=cmd_sample)

    params = commands.add_parser("params", help="export the prior's natural parameters lambda(u) per label")
    params.add_argument("--run", required=True, type=Path)
    params.add_argument("--u-file", type=Path, help=".npz whose array u holds the values to export at "
                        "(required for continuous u; default: every label)")  # fmt: skip
    params.add_argument("--out", required=True, type=Path,
                        help="output .npz: natural_params (n, dim, n_stats), u, family, and for Gaussian priors "
                        "mean and variance (n, dim)")  # fmt: skip
    add_runtime_options(params)
    params.set_defaults(handler=cmd_params)

    agree = commands.add_parser("consistency", help="MCC between the latents of independently trained runs")
    agree.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="two or more run directories")
    agree.add_argument("--data", required=True, help=DATA_HELP + "; built-in sets: their test split")
    agree.add_argument("--json", action="store_true", help="one JSON object on stdout")
    add_data_layout_options(agree, of_run=True)
    add_runtime_options(agree)
    agree.set_defaults(handler=cmd_consistency)

    add_experiment_parser(commands)

    demo = commands.add_parser("demo", help="data, train, recover, score, figures on the default benchmark")
    demo.add_argument("--out", type=Path, default=Path("iflow-demo"), help="output directory (default iflow-demo)")
    demo.add_argument("--seed", type=seed, default=1, help="data seed (default 1)")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    demo.add_argument("--compile", action="store_true", help="torch.compile the training loss (as iflow train --compile)")
    add_runtime_options(demo)
    demo.set_defaults(handler=cmd_demo)
    return parser


def add_experiment_parser(commands: argparse._SubParsersAction) -> None:
    experiment = commands.add_parser("experiment", help="the papers' experiments, or a sweep file, over seeds")
    experiment.add_argument("name", nargs="?", help="experiment to run (see --list)")
    experiment.add_argument("--list", action="store_true", help="describe every experiment and exit")
    experiment.add_argument("--config", type=Path, help="a sweep file (TOML): a grid of options x seeds")
    experiment.add_argument("--seeds", type=positive_int, help="data seeds 1..K (default: the experiment's; 1 with --quick)")
    experiment.add_argument("--quick", action="store_true", help="the toy-scale preset (minutes on 2 cores)")
    experiment.add_argument("--models", type=lambda text: [m for m in text.split(",") if m], metavar="A,B",
                            help="only the settings of these models (e.g. iflow; default: every model of the grid)")
    experiment.add_argument("--jobs", type=positive_int, default=1, help="rows trained at once, one process and torch "
                            "thread each (default 1; results are the same for any number)")  # fmt: skip
    experiment.add_argument("--launcher", choices=["local", "slurm"], default="local",
                            help="local joblib workers (default) or a SLURM job array through submitit")
    experiment.add_argument("--out", type=Path, help="results folder (default experiments/NAME[-quick]); a rerun "
                            "skips the rows already there")  # fmt: skip
    slurm = experiment.add_argument_group("SLURM (--launcher slurm)")
    slurm.add_argument("--partition", help="SLURM partition")
    slurm.add_argument("--time", type=positive_int, default=60, help="minutes per row (default 60)")
    slurm.add_argument("--mem", type=positive_float, default=4.0, help="GB of memory per row (default 4)")
    slurm.add_argument("--gpus", type=nonnegative_int, default=0, help="GPUs per row (default 0)")
    slurm.add_argument("--array-parallelism", type=positive_int, default=64, help="rows running at once (default 64)")
    experiment.set_defaults(handler=cmd_experiment)


def setup_torch(args: argparse.Namespace) -> None:
    """Thread count, and the device checked before any work is done."""
    import torch

    from .runtime import resolve_device

    torch.set_num_threads(args.threads)
    resolve_device(args.device)


def check_output_file(path: Path) -> None:
    """Fail before any work when ``path`` cannot be written."""
    import tempfile

    from .errors import UserError

    if path.exists() and path.is_dir():
        raise UserError(f"{path}: is a directory, expected a file path")
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"{path}: output folder {folder} does not exist")
    try:  # a real probe: os.access says yes to root even on read-only file systems
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(f"{path}: output folder {folder} is not writable ({exc.strerror})") from None


def cmd_data_synthetic(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    import numpy as np

    from .data.synthetic import SyntheticConfig, generate
    from .errors import UserError
    from .files import save_npz

    check_output_file(args.out)
    fields = ("sources", "segments", "per_segment", "layers", "activation", "centered", "prior", "noise", "seed")
    fields += ("obs", "dim")
    fields += ("dof", "slope", "condition_percentile", "max_condition")
    fields += ("mixing", "means")
    config = SyntheticConfig(**{name: getattr(args, name) for name in fields})
    try:
        data = generate(config)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    arrays = {"x": data.x, "u": data.u, "s": data.s, "config": np.array(json.dumps(asdict(config)))}
    if data.log_likelihood is not None:
        arrays["true_log_likelihood"] = data.log_likelihood
    save_npz(args.out, **arrays)
    print(f"wrote {args.out}: x {data.x.shape}, {config.segments} segments, sources {data.s.shape}")


def prepare_run_dir(out: Path, overwrite: bool, resume: bool = False, resumable: bool = False) -> bool:
    """Make ``out`` ready for a run; True when it holds a checkpoint to resume from.

    Only an iflow run directory is ever resumed into, overwritten or cleared (see :mod:`iflow.rundir`).
    """
    from .rundir import prepare_run_dir as prepare

    return prepare(out, overwrite, resume, resumable)


def configs_from(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    """The (ModelConfig, TrainConfig) the options describe; model options not given keep their defaults."""
    given = {name: getattr(args, name) for name in MODEL_OPTIONS if getattr(args, name) is not None}
    return ModelConfig(**given), TrainConfig(**{name: getattr(args, name) for name in TRAIN_OPTIONS})


def format_metrics(metrics: dict) -> str:
    if metrics["log_likelihood"] is None:  # TCL, FastICA, x itself
        parts = ["no likelihood"]
    else:
        parts = [f"log-likelihood {metrics['log_likelihood']:.4f} nats/sample", f"{metrics['bits_per_dim']:.4f} bits/dim"]
    if metrics.get("mcc") is not None:
        parts.append(f"MCC {metrics['mcc']:.4f}")
    if metrics.get("gap") is not None:
        parts.append(f"gap to true model {metrics['gap']:.4f} nats")
    if metrics.get("entropy") is not None:
        parts.append(f"NLL - true entropy {metrics['nll_minus_entropy']:.4f} nats (entropy {metrics['entropy']:.4f})")
    return ", ".join(parts)


def cmd_train(args: argparse.Namespace) -> None:
    """Everything that can be checked is checked (the run planned) before the run directory is touched."""
    from .data.builtin import is_builtin, load_data
    from .defaults import TASK_DEFAULTS
    from .inputs import single_label_warning
    from .models.build import with_prior
    from .rundir import discard_if_unused
    from .selection import plan_candidates
    from .training import distributed
    from .training.checkpoint import CHECKPOINT_FILE, Checkpointing
    from .workflow import train_to_directory

    setup_torch(args)
    distributed.check_restarts(args.restarts)
    data = load_data(args.data, "train", args.u_cols, args.levels)
    test = load_data(args.data, "test") if is_builtin(args.data) else None
    model_config, train_config = configs_from(args)
    if args.resume:  # one resumable model: the candidates of a prior the task would choose are not checkpointed
        model_config = with_prior(model_config)
    plan, priors = plan_candidates(data, model_config, train_config)
    distributed.check_prior_choice(priors)
    one_hot = "one-hot rows detected in u; " if data.u_was_one_hot else ""
    print(f"{args.data}: {len(data)} samples, x dim {data.dim}; {one_hot}{plan.run.model_config.aux.describe()}")
    if priors and args.prior is None:
        print(f"choosing the prior among {', '.join(priors)} by held-out log-likelihood, the default on fewer than "
              f"{TASK_DEFAULTS[plan.run.train_config.task].choose_prior_below} training rows ({len(priors)} runs, not "
              "checkpointed; name --prior to train one)")
    warning = None if is_builtin(args.data) else single_label_warning(plan.run)
    if warning is not None and distributed.is_main():
        print(warning, file=sys.stderr)
    resuming = distributed.on_main(lambda: prepare_run_dir(args.out, args.overwrite, args.resume, resumable=True))
    checkpoint = Checkpointing(args.out / CHECKPOINT_FILE, every=args.checkpoint_every, resume=resuming)
    try:
        outcome = train_to_directory(plan, args.out, checkpoint, restarts=args.restarts, jobs=args.jobs, test=test,
                                     priors=priors)  # fmt: skip
    except BaseException:
        if distributed.is_main():
            discard_if_unused(args.out)  # nothing was saved: leave nothing behind
        raise
    report_training(args.out, outcome.metrics, outcome.seconds)


def report_training(out: Path, metrics: dict, seconds: float) -> None:
    for restart in metrics.get("restarts", []):
        score = "" if restart["mcc"] is None else f", MCC {restart['mcc']:.4f}"
        kept = " (kept)" if restart["chosen"] else ""
        print(f"restart seed {restart['seed']}, prior {restart['prior']}: held-out log-likelihood "
              f"{restart['val_log_likelihood']:.4f}{score}{kept}")
    if metrics["stop_reason"]:  # a closed-form model (FastICA, x itself) has no epochs
        print(f"{out}: stopped after {metrics['epochs_trained']} epochs ({metrics['stop_reason']}: "
              f"{STOP_REASONS[metrics['stop_reason']]}); kept epoch {metrics['best_epoch']}, the best held out")
    if metrics["returns_to_best"]:
        print(f"{out}: went back to the best state at half the learning rate {metrics['returns_to_best']} time(s), "
              "after a collapse or a plateau at a high rate (--rate-cut; the epochs in history.csv, returned_to_best)")
    print(f"{out}: training rows {format_metrics(metrics['train'])} ({seconds:.0f} s)")
    print(f"{out}: validation rows {format_metrics(metrics['val'])}")
    if "test" in metrics:
        print(f"{out}: test {format_metrics(metrics['test'])}")


def cmd_encode(args: argparse.Namespace) -> None:
    from .files import save_npz
    from .runs import encode_dataset, load_run
    from .splits import load_split

    setup_torch(args)
    check_output_file(args.out)
    run = load_run(args.run, args.device)
    data = load_split(args.data, run, args.split, args.u_cols, args.levels)
    z = encode_dataset(run, data)
    save_npz(args.out, z=z)
    print(f"wrote {args.out}: z {z.shape} ({run.model.encode_kind})")


def cmd_eval(args: argparse.Namespace) -> None:
    from .files import to_json
    from .runs import evaluate, load_run
    from .splits import load_split

    setup_torch(args)
    run = load_run(args.run, args.device)
    data = load_split(args.data, run, args.split, args.u_cols, args.levels)
    metrics = evaluate(run, data)
    if args.json:
        print(to_json(metrics))
    else:
        kind = "exact" if metrics["exact"] else metrics.get("estimator", "lower bound")
        print(f"{data.source} ({metrics['n']} samples, {kind}): {format_metrics(metrics)}")


def cmd_sample(args: argparse.Namespace) -> None:
    import numpy as np

    from .errors import UserError
    from .files import save_npz
    from .inputs import conditions_per_draw, read_u_file
    from .runs import load_run, sample

    setup_torch(args)
    check_output_file(args.out)
    run = load_run(args.run, args.device)
    u = read_u_file(args.u_file) if args.u_file is not None else np.asarray(args.u)
    given = f"--u-file {args.u_file}" if args.u_file is not None else f"--u {args.u}"
    n = args.n or (len(u) if args.u_file is not None else None)
    if n is None:
        raise UserError("--n N is required with --u (with --u-file it defaults to the rows of u)")
    try:
        x = sample(run, u, n, args.seed)
    except UserError as exc:
        raise UserError(f"{given}: {exc}") from None
    images = {} if run.model_config.image_shape is None else {"images": x.reshape(n, *run.model_config.image_shape)}
    save_npz(args.out, x=x, u=conditions_per_draw(u, run.model_config.aux, n), **images)
    print(f"wrote {args.out}: x {x.shape} for {given} ({run.model.sample_kind})")


def cmd_params(args: argparse.Namespace) -> None:
    from .errors import UserError
    from .export import prior_parameters
    from .files import save_npz
    from .inputs import read_u_file
    from .runs import load_run

    setup_torch(args)
    check_output_file(args.out)
    run = load_run(args.run, args.device)
    try:
        exported = prior_parameters(run, None if args.u_file is None else read_u_file(args.u_file))
    except UserError as exc:
        raise UserError(f"{args.run}: {exc}" if args.u_file is None else f"--u-file {args.u_file}: {exc}") from None
    save_npz(args.out, **exported)
    named = "".join(f", {k} {v.shape}" for k, v in exported.items() if k in ("mean", "variance"))
    print(f"wrote {args.out}: natural_params {exported['natural_params'].shape} ({exported['family']} prior){named}")


def cmd_consistency(args: argparse.Namespace) -> None:
    from .consistency import consistency
    from .data.builtin import load_data
    from .errors import UserError
    from .files import to_json
    from .runs import load_run
    from .splits import read_options

    if len(args.runs) < 2:
        raise UserError("consistency needs at least two run directories")
    setup_torch(args)
    runs = [load_run(path, args.device) for path in args.runs]
    report = consistency(runs, load_data(args.data, "test", *read_options(args.data, runs[0], args.u_cols, args.levels)))
    if args.json:
        print(to_json(report))
        return
    for name, row in zip(report["runs"], report["pairwise"], strict=False):
        print(f"{name}: " + " ".join(f"{value:.3f}" for value in row))
    line = f"agreement between runs: mean MCC {report['mean']:.4f}, min {report['min']:.4f}"
    if report["true_mcc"] is not None:
        line += "; MCC to the true sources: " + ", ".join(f"{value:.3f}" for value in report["true_mcc"])
    print(line)
    print(f"note: {report['caveat']}")


def cmd_experiment(args: argparse.Namespace) -> None:
    """List, or run a paper's experiment or a sweep file, and say where the results are."""
    from .errors import UserError
    from .experiments import available, experiment
    from .experiments.runner import SlurmOptions, run_experiment

    if args.list:
        for name in available():
            print(f"{name:16s} {experiment(name).DESCRIPTION}")
        return
    if (args.name is None) == (args.config is None):
        raise UserError("name one experiment (see --list) or give --config FILE, not both")
    settings, seeds = None, args.seeds
    if args.config is not None:
        from .experiments import sweep

        spec = sweep.read_toml(args.config)
        settings, file_seeds = sweep.grid(spec, str(args.config))
        module, name, seeds = sweep, spec.get("name", args.config.stem), seeds or file_seeds
    else:
        module, name = experiment(args.name), args.name
    out = args.out or Path("experiments") / (f"{name}-quick" if args.quick else name)
    slurm = SlurmOptions(args.partition, args.time, args.mem, args.gpus, args.array_parallelism)
    rows = run_experiment(module, out, seeds, args.quick, args.jobs, args.launcher, slurm, settings, args.models)
    print(f"{name}: {len(rows)} rows; {out / 'table.md'}, {out / 'figure.png'}, {out / 'results.csv'}")
    print((out / "table.md").read_text(), end="")


def cmd_demo(args: argparse.Namespace) -> None:
    """The default benchmark end to end: data, the identifiable flow with every default, figures."""
    from .data.dataset import make_dataset
    from .data.synthetic import SyntheticConfig, generate
    from .metrics import mcc
    from .workflow import train_and_save

    setup_torch(args)
    prepare_run_dir(args.out, overwrite=args.overwrite)
    prepare_run_dir(args.out / "run", overwrite=True)  # the run inside is a run directory too
    synthetic = generate(SyntheticConfig(seed=args.seed))
    data = make_dataset(synthetic.x, synthetic.u, synthetic.s, synthetic.log_likelihood, name=f"synthetic seed {args.seed}")
    print(f"data: {len(data)} samples, 5 sources, 40 segments, 3 xtanh mixing layers (seed {args.seed})")
    print(f"baseline: MCC of x itself against the sources = {mcc(data.x, data.s).mcc:.3f}")
    train_config = TrainConfig(device=args.device, threads=args.threads, compile=args.compile)
    outcome = train_and_save(data, args.out / "run", ModelConfig(), train_config)
    print(f"identifiable flow: {format_metrics(outcome.metrics)} ({outcome.seconds:.0f} s)")
    print(f"figures: {args.out / 'run' / 'figures'}")


class ConsoleHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` (or, with ``errors``, ``sys.stderr``) is when a record arrives."""

    def __init__(self, errors: bool) -> None:
        super().__init__()
        self.errors = errors

    @property
    def stream(self) -> TextIO:
        return sys.stderr if self.errors else sys.stdout

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # chosen at each record, never fixed


def log_progress() -> None:
    """The library's log on the console as it is: per-epoch INFO lines (progress off a terminal) on
    stdout, beside the results (``iflow demo > log`` keeps them); warnings on stderr."""
    logger = logging.getLogger("iflow")
    if any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        return
    progress, warnings = ConsoleHandler(errors=False), ConsoleHandler(errors=True)
    progress.addFilter(lambda record: record.levelno < logging.WARNING)
    warnings.setLevel(logging.WARNING)
    for handler in (progress, warnings):
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .errors import UserError

    log_progress()

    try:
        run_command(args)
    except UserError as exc:
        print(f"iflow: error: {exc.for_command_line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"iflow: interrupted{'; ' + one_line(exc) if str(exc) else ''}", file=sys.stderr)
        return 130
    return 0


def run_command(args: argparse.Namespace) -> None:
    """The command; ``iflow train`` under torchrun in its process group (this rank's device in ``args.device``)."""
    if args.command != "train":
        args.handler(args)
        return
    from .training.distributed import process_group

    with process_group(args.device) as args.device:
        args.handler(args)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
