"""The ``iflow`` command line. Heavy imports (torch) happen inside commands, so ``--help`` is instant.

User errors print one line ``iflow: error: ...`` on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import NoReturn

from .config import MAX_SEED, TrainConfig  # dataclasses and numpy only: keeps --help instant (no torch)

DEFAULT_THREADS = 1
DATA_HELP = (
    "eight-gaussians, checkerboard, rings, moons, digits, a .npz with x, u (and optionally s), "
    "or a .csv of floats (no header)"
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


def _float(text: str, ok, what: str) -> float:
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


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--threads", type=positive_int, default=DEFAULT_THREADS, help="torch CPU threads (default 1)")


def add_synthetic_options(p: argparse.ArgumentParser) -> None:
    from_defaults = {"sources": 5, "segments": 40, "per_segment": 1000, "layers": 3}
    p.add_argument("--sources", type=positive_int, default=from_defaults["sources"], help="number of sources n (default 5)")
    p.add_argument("--segments", type=positive_int, default=from_defaults["segments"], help="number of segments M (default 40)")
    p.add_argument("--per-segment", type=positive_int, default=from_defaults["per_segment"], help="points per segment L (default 1000)")
    p.add_argument("--layers", type=positive_int, default=from_defaults["layers"], help="mixing MLP layers (default 3)")
    p.add_argument("--activation", choices=["xtanh", "leaky"], default="xtanh", help="mixing activation (default xtanh)")
    p.add_argument("--centered", action="store_true", help="zero-mean sources (variance-modulated only)")
    p.add_argument("--prior", choices=["gauss", "laplace"], default="gauss", help="source distribution (default gauss)")
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


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="iflow",
                   help="iflow (default), flow (unconditional baseline), ivae, or the baselines vae, betavae, tcvae")
    p.add_argument("--flow", default="spline", help="realnvp, glow, spline (default) or mlp")
    p.add_argument("--prior", default="gauss", help="gauss (default), gauss-var or laplace")
    p.add_argument("--depth", type=positive_int, default=None, help="flow depth (default: the flow's own)")
    p.add_argument("--hidden", type=positive_int, default=64, help="hidden units of coupling networks (default 64)")
    p.add_argument("--bins", type=positive_int, default=8, help="spline bins (default 8)")
    p.add_argument("--tail-bound", type=positive_float, default=4.0, help="spline interval [-B, B] (default 4)")
    vae = p.add_argument_group("VAE family (ivae, vae, betavae, tcvae); --depth: hidden layers (default 3)")
    vae.add_argument("--latent-dim", type=positive_int, default=0, help="latents n <= d (default: d)")
    vae.add_argument("--obs", default="gaussian", help="decoder p(x | z): gaussian (default), bernoulli or poisson")
    vae.add_argument("--noise-var", type=positive_float, default=0.01,
                     help="Gaussian decoder variance, in standardised units of x (default 0.01)")
    vae.add_argument("--learn-noise", action="store_true", help="learn the Gaussian decoder variance")
    vae.add_argument("--beta", type=nonnegative_float, default=None,
                     help="KL weight; for tcvae the total-correlation weight (default: 1, betavae 4, tcvae 6)")
    vae.add_argument("--anneal-steps", type=nonnegative_int, default=0, help="KL weight rises 0 -> 1 over N steps (default 0)")
    vae.add_argument("--iw-samples", type=positive_int, default=100,
                     help="K of the importance-weighted log-likelihood bound (default 100)")
    vae.add_argument("--train-samples", type=positive_int, default=1,
                     help="K of the training objective: 1 the ELBO (default), K > 1 the importance-weighted bound "
                     "(IWAE; needs beta 1 and no annealing)")
    vae.add_argument("--encoder", default="mlp",
                     help="posterior q(z | x, u): mlp (default; u added at the first layer) or product "
                     "(a Gaussian q(z | x) times the prior p(z | u), normalised; Gaussian priors only)")


def add_train_options(p: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()  # one source of truth for the defaults: the dataclass
    p.add_argument("--epochs", type=positive_int, default=defaults.epochs, help="training epochs (default %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=defaults.batch_size, help="batch size (default %(default)s)")
    p.add_argument("--lr", type=positive_float, default=defaults.lr, help="Adam learning rate (default %(default)s)")
    p.add_argument("--weight-decay", type=nonnegative_float, default=0.0, help="Adam weight decay (default 0)")
    p.add_argument("--val-fraction", type=fraction, default=0.1, help="held-out fraction (default 0.1)")
    p.add_argument("--seed", type=seed, default=0, help="training seed (default 0)")
    p.add_argument(
        "--prior-fit", choices=["none", "init", "epoch"], default=defaults.prior_fit,
        help="closed-form M-step of a label prior: none, init (a data-dependent start) or epoch (default: "
        "at the start and after every epoch)",
    )  # fmt: skip
    p.add_argument(
        "--linear-fit", choices=["auto", "epoch", "none"], default=defaults.linear_fit,
        help="after every epoch, refit the flow's last linear layer by L-BFGS on the likelihood with the "
        "Gaussian label prior profiled out (epoch); auto (default): whenever the flow ends in a linear "
        "layer, the prior is a Gaussian label prior and --prior-fit is epoch",
    )  # fmt: skip
    p.add_argument(
        "--restarts", type=positive_int, default=1,
        help="train K models (seeds S, S+1, ...) and keep the best by held-out log-likelihood (default 1)",
    )  # fmt: skip
    p.add_argument(
        "--jobs", type=positive_int, default=None,
        help="restarts trained at once, one process each (default: K, at most the number of CPUs)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="iflow", description="Identifiable flows: train, recover latents, score.")
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
    add_runtime_options(train)
    train.add_argument("--out", required=True, type=Path, help="run directory")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    train.add_argument("--resume", action="store_true", help="continue a killed or interrupted run from its checkpoint")
    train.add_argument("--checkpoint-every", type=nonnegative_float, default=60.0, metavar="SECONDS",
                       help="seconds between resume checkpoints (default 60; 0: every step)")  # fmt: skip
    train.set_defaults(handler=cmd_train)

    encode = commands.add_parser("encode", help="recover latents z = g(x)")
    encode.add_argument("--run", required=True, type=Path)
    encode.add_argument("--data", required=True, type=Path)
    encode.add_argument("--out", required=True, type=Path, help="output .npz holding z (n, k), rows in input order")
    add_runtime_options(encode)
    encode.set_defaults(handler=cmd_encode)

    evaluate = commands.add_parser("eval", help="log-likelihood, bits/dim and MCC of a run on a data file")
    evaluate.add_argument("--run", required=True, type=Path)
    evaluate.add_argument("--data", required=True, help=DATA_HELP + "; built-in sets are scored on their test split")
    evaluate.add_argument("--json", action="store_true", help="one JSON object on stdout")
    add_runtime_options(evaluate)
    evaluate.set_defaults(handler=cmd_eval)

    sample = commands.add_parser("sample", help="draw x from p(x | u)")
    sample.add_argument("--run", required=True, type=Path)
    sample.add_argument("--u", required=True, type=int, help="integer label to condition on")
    sample.add_argument("--n", required=True, type=positive_int, help="number of samples")
    sample.add_argument("--seed", type=seed, default=0)
    sample.add_argument("--out", required=True, type=Path)
    add_runtime_options(sample)
    sample.set_defaults(handler=cmd_sample)

    agree = commands.add_parser("consistency", help="MCC between the latents of independently trained runs")
    agree.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="two or more run directories")
    agree.add_argument("--data", required=True, type=Path, help=".npz to encode with every run")
    agree.add_argument("--json", action="store_true", help="one JSON object on stdout")
    add_runtime_options(agree)
    agree.set_defaults(handler=cmd_consistency)

    demo = commands.add_parser("demo", help="data, train, recover, score, figures on the default benchmark")
    demo.add_argument("--out", type=Path, default=Path("iflow-demo"), help="output directory (default iflow-demo)")
    demo.add_argument("--seed", type=seed, default=1, help="data seed (default 1)")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    add_runtime_options(demo)
    demo.set_defaults(handler=cmd_demo)
    return parser


def setup_torch(args: argparse.Namespace) -> None:
    """Thread count, and the device checked before any work is done."""
    import torch

    from .train.trainer import resolve_device

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

    from .errors import UserError
    from .runs import save_npz
    from .data.synthetic import SyntheticConfig, generate

    check_output_file(args.out)
    fields = ("sources", "segments", "per_segment", "layers", "activation", "centered", "prior", "noise", "seed")
    fields += ("obs", "dim")
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


def configs_from(args: argparse.Namespace):
    """The validated (ModelConfig, TrainConfig) the options describe."""
    from .config import ModelConfig, TrainConfig

    model_config = ModelConfig(
        model=args.model, flow=args.flow, prior=args.prior, depth=args.depth,
        hidden=args.hidden, bins=args.bins, tail_bound=args.tail_bound,
        latent_dim=args.latent_dim, obs=args.obs, noise_var=args.noise_var, learn_noise=args.learn_noise,
        beta=args.beta, anneal_steps=args.anneal_steps, iw_samples=args.iw_samples,
        train_samples=args.train_samples, encoder=args.encoder,
    )  # fmt: skip
    train_config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        val_fraction=args.val_fraction, seed=args.seed, device=args.device, threads=args.threads,
        prior_fit=args.prior_fit, linear_fit=args.linear_fit,
    )  # fmt: skip
    train_config.validate()
    return model_config, train_config


def train_and_save(args: argparse.Namespace, data, out: Path, checkpoint=None, test=None) -> dict:
    """Train on ``data`` per the parsed options, save the run with figures, return its metrics
    (with ``metrics["test"]`` when a held-out ``test`` set is given) and the wall ``seconds``,
    which go to ``timing.json``, not ``metrics.json``.

    The resume ``checkpoint`` (if any) is deleted once the run is saved; with
    ``--restarts`` the candidates are short-lived and not checkpointed.
    """
    from .figures import (
        save_class_samples_figure,
        save_density_figure,
        save_restarts_figure,
        save_sources_figure,
        save_training_figure,
    )  # fmt: skip
    from .runs import TIMING_FILE, encode_dataset, evaluate, save_json, save_run, train
    from .selection import train_with_restarts

    model_config, train_config = configs_from(args)
    if args.restarts > 1:
        jobs = args.jobs or min(args.restarts, os.cpu_count() or 1)
        started = time.perf_counter()
        run, result, restarts = train_with_restarts(data, model_config, train_config, args.restarts, jobs=jobs)
        restarts_seconds = time.perf_counter() - started  # wall time of all restarts, parallel or not
    else:
        (run, result), restarts = train(data, model_config, train_config, checkpoint=checkpoint), []
    metrics = evaluate(run, data)
    metrics.update(best_epoch=result.best_epoch, data=str(args.data))
    timing = {"seconds": result.seconds}
    if restarts:
        metrics["restarts"] = [r.as_dict() for r in restarts]
        timing.update(seconds=restarts_seconds, restarts=[r.seconds for r in restarts])
    if test is not None:
        metrics["test"] = evaluate(run, test)
    save_run(run, out, result, metrics)
    save_json(out / TIMING_FILE, timing)
    save_training_figure(result.history, out / "figures" / "training.png")
    if restarts and data.s is not None:
        save_restarts_figure(metrics["restarts"], out / "figures" / "restarts.png")
    if data.dim == 2:
        save_density_figure(run, data, out / "figures" / "density.png")
    if data.image_shape is not None:
        save_class_samples_figure(run, out / "figures" / "samples.png")
    if data.s is not None:
        save_sources_figure(data.s, encode_dataset(run, data), out / "figures" / "sources.png")
    if checkpoint is not None:
        checkpoint.path.unlink(missing_ok=True)
    return {**metrics, "seconds": timing["seconds"]}


def format_metrics(metrics: dict) -> str:
    parts = [f"log-likelihood {metrics['log_likelihood']:.4f} nats/sample", f"{metrics['bits_per_dim']:.4f} bits/dim"]
    if metrics.get("mcc") is not None:
        parts.append(f"MCC {metrics['mcc']:.4f}")
    if metrics.get("gap") is not None:
        parts.append(f"gap to true model {metrics['gap']:.4f} nats")
    if metrics.get("entropy") is not None:
        parts.append(f"NLL - true entropy {metrics['nll_minus_entropy']:.4f} nats (entropy {metrics['entropy']:.4f})")
    return ", ".join(parts)


def cmd_train(args: argparse.Namespace) -> None:
    """Everything that can be checked is checked before the run directory is touched."""
    from dataclasses import replace

    from .models.build import build_model
    from .train.checkpoint import CHECKPOINT_FILE, Checkpointing
    from .data.dataset import aux_spec
    from .data.builtin import is_builtin, load_data
    from .rundir import discard_if_unused
    from .train.trainer import split_for_training, uses_linear_fit

    setup_torch(args)
    model_config, train_config = configs_from(args)
    data = load_data(args.data, "train")
    test = load_data(args.data, "test") if is_builtin(args.data) else None
    split_for_training(data, train_config)
    model = build_model(replace(model_config, dim=data.dim, aux=aux_spec(data.u, data.source)))  # fails early on bad names
    uses_linear_fit(model, train_config)  # and on a --linear-fit the model cannot have
    one_hot = "one-hot rows detected in u; " if data.u_was_one_hot else ""
    print(f"{args.data}: {len(data)} samples, x dim {data.dim}; {one_hot}{aux_spec(data.u, data.source).describe()}")
    resuming = prepare_run_dir(args.out, args.overwrite, args.resume, resumable=True)
    checkpoint = Checkpointing(args.out / CHECKPOINT_FILE, every=args.checkpoint_every, resume=resuming)
    try:
        metrics = train_and_save(args, data, args.out, checkpoint, test)
    except BaseException:
        discard_if_unused(args.out)  # nothing was saved: leave nothing behind
        raise
    for restart in metrics.get("restarts", []):
        score = "" if restart["mcc"] is None else f", MCC {restart['mcc']:.4f}"
        kept = " (kept)" if restart["chosen"] else ""
        print(f"restart seed {restart['seed']}: held-out log-likelihood {restart['val_log_likelihood']:.4f}{score}{kept}")
    print(f"{args.out}: train {format_metrics(metrics)} ({metrics['seconds']:.0f} s)")
    if test is not None:
        print(f"{args.out}: test {format_metrics(metrics['test'])}")


def cmd_encode(args: argparse.Namespace) -> None:
    from .data.dataset import load_npz
    from .runs import encode_dataset, load_run, save_npz

    setup_torch(args)
    check_output_file(args.out)
    run = load_run(args.run, args.device)
    data = load_npz(args.data)
    z = encode_dataset(run, data)
    save_npz(args.out, z=z)
    kind = getattr(run.model, "encode_kind", "z = g(x)")
    print(f"wrote {args.out}: z {z.shape} ({kind})")


def cmd_eval(args: argparse.Namespace) -> None:
    from .data.builtin import load_data
    from .files import to_json
    from .runs import evaluate, load_run

    setup_torch(args)
    run = load_run(args.run, args.device)
    data = load_data(args.data, "test")
    metrics = evaluate(run, data)
    if args.json:
        print(to_json(metrics))
    else:
        kind = "exact" if metrics["exact"] else metrics.get("estimator", "lower bound")
        print(f"{data.source} ({metrics['n']} samples, {kind}): {format_metrics(metrics)}")


def cmd_sample(args: argparse.Namespace) -> None:
    import numpy as np

    from .runs import load_run, sample, save_npz

    setup_torch(args)
    check_output_file(args.out)
    run = load_run(args.run, args.device)
    x = sample(run, args.u, args.n, args.seed)
    save_npz(args.out, x=x, u=np.full(args.n, args.u, dtype=np.int64))
    kind = getattr(run.model, "sample_kind", "draws from p(x | u)")
    print(f"wrote {args.out}: x {x.shape} for u = {args.u} ({kind})")


def cmd_consistency(args: argparse.Namespace) -> None:
    from .consistency import consistency
    from .data.builtin import load_data
    from .errors import UserError
    from .files import to_json
    from .runs import load_run

    if len(args.runs) < 2:
        raise UserError("consistency needs at least two run directories")
    setup_torch(args)
    runs = [load_run(path, args.device) for path in args.runs]
    report = consistency(runs, load_data(args.data, "test"))
    if args.json:
        print(to_json(report))
        return
    for name, row in zip(report["runs"], report["pairwise"]):
        print(f"{name}: " + " ".join(f"{value:.3f}" for value in row))
    line = f"agreement between runs: mean MCC {report['mean']:.4f}, min {report['min']:.4f}"
    if report["true_mcc"] is not None:
        line += "; MCC to the true sources: " + ", ".join(f"{value:.3f}" for value in report["true_mcc"])
    print(line)


def cmd_demo(args: argparse.Namespace) -> None:
    from types import SimpleNamespace

    from .data.dataset import make_dataset
    from .metrics import mcc
    from .data.synthetic import SyntheticConfig, generate

    setup_torch(args)
    prepare_run_dir(args.out, overwrite=args.overwrite)
    prepare_run_dir(args.out / "run", overwrite=True)  # the run inside is a run directory too
    synthetic = generate(SyntheticConfig(seed=args.seed))
    data = make_dataset(synthetic.x, synthetic.u, synthetic.s, synthetic.log_likelihood, name=f"synthetic seed {args.seed}")
    print(f"data: {len(data)} samples, 5 sources, 40 segments, 3 xtanh mixing layers (seed {args.seed})")
    print(f"baseline: MCC of x itself against the sources = {mcc(data.x, data.s).mcc:.3f}")
    defaults = build_parser().parse_args(["train", "--data", "-", "--out", "-"])
    options = SimpleNamespace(**{**vars(defaults), "device": args.device, "threads": args.threads, "data": "demo"})
    metrics = train_and_save(options, data, args.out / "run")
    print(f"identifiable flow: {format_metrics(metrics)} ({metrics['seconds']:.0f} s)")
    print(f"figures: {args.out / 'run' / 'figures'}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .errors import UserError

    try:
        args.handler(args)
    except UserError as exc:
        print(f"iflow: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"iflow: interrupted{'; ' + one_line(exc) if str(exc) else ''}", file=sys.stderr)
        return 130
    return 0


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
