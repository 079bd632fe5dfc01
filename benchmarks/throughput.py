"""Throughput of iflow's flows beside hand-written pure-torch flows of the same architectures.

Each flow (spline, realnvp, glow) runs beside its reference in ``benchmarks/reference_flows.py``:
the same layers, masks, conditioner, spline and prior, holding the same weights (the
parameter counts are asserted equal, and the two log-likelihoods on the batch too).
Both are timed interleaved over several rounds in one process, per cell of a grid of
dimensions and batch sizes: a training step (iflow's ``train_step``: loss, backward,
gradient clipping, Adam; for both flows the same ``foreach`` Adam over the model's own parameter
tensors, so the ratio compares the flows, not the trainer's fused Adam over one flat buffer, which
``benchmarks/speedup.py`` measures), the log-likelihood (no gradient) and sampling. Reported
as ratios (reference time / iflow time: above 1 iflow is faster), since the machine is
shared; the achieved FLOP/s of the training step (6 x weights of the linear layers x
batch) as a fraction of a 1024^3 fp32 matmul timed in the same rounds; peak memory of a
training step in a subprocess per model and cell (peak resident memory, ``VmHWM``,
after 3 steps minus before them, the models built without gradients); and the wall time to MCC 0.95 of
``iflow demo``'s training (its data and default model, per-epoch work included, from
the history's ``seconds`` and ``mcc``). Writes ``benchmarks/throughput.md``.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/throughput.py [--quick] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_flows  # noqa: E402
from demo_run import TARGET_MCC, demo_training  # noqa: E402

from iflow.flows.build import build_flow  # noqa: E402
from iflow.models.identifiable_flow import IdentifiableFlow  # noqa: E402
from iflow.models.sampling import sample  # noqa: E402
from iflow.priors import ConditionalExpFamilyPrior  # noqa: E402
from iflow.training.distributed import LossModule  # noqa: E402
from iflow.training.trainer import train_step  # noqa: E402

OUT = Path(__file__).with_suffix(".md")
LABELS = 40
FLOWS = ("spline", "realnvp", "glow")
MIN_SECONDS = 0.15  # each measurement runs calls until this much time has passed
PEAK_SIZE = 1024


def build_pair(flow: str, dim: int, batch: int = 512) -> tuple[nn.Module, nn.Module]:
    """iflow's model (default options, actnorm initialised on a batch) and the reference with its weights."""
    torch.manual_seed(0)
    ours = IdentifiableFlow(build_flow(flow, dim), ConditionalExpFamilyPrior(dim, "gauss", n_labels=LABELS))
    reference = reference_flows.REFERENCES[flow](dim, LABELS)
    x, u = batch_of(dim, batch)
    with torch.no_grad():
        ours(x, u), reference(x, u)  # data-dependent starts (actnorm) in both, then the same weights
        reference_flows.copy_parameters(ours, reference)
        torch.testing.assert_close(reference(x, u), ours(x, u), rtol=1e-4, atol=1e-4)  # the same function
    n_ours, n_ref = (sum(p.numel() for p in m.parameters()) for m in (ours, reference))
    assert n_ours == n_ref, f"{flow}: {n_ours} parameters against the reference's {n_ref}"
    return ours, reference


def batch_of(dim: int, batch: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(batch, dim, generator=gen), torch.randint(0, LABELS, (batch,), generator=gen)


def linear_weights(model: nn.Module) -> int:
    """Weights of the linear layers (the matmuls): 2 FLOP per weight and row forward, 4 backward."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def per_call(fn: Callable[[], object]) -> float:
    """Seconds per call of ``fn``, over calls filling ``MIN_SECONDS`` (after one warm-up call)."""
    fn()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < MIN_SECONDS or calls < 2:
        fn()
        calls += 1
    return elapsed / calls


def tasks(model: nn.Module, x: Tensor, u: Tensor, reference: bool) -> dict[str, tuple[bool, Callable[[], object]]]:
    """The three timed jobs on one model, each with the mode it runs in (``model.train(mode)`` is set
    before the job is timed, not inside it): a training step, log-likelihood, sampling (both without
    gradients, for both models)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6, foreach=True)
    loss_module = LossModule(model)

    def step() -> None:
        train_step(loss_module, optimizer, x, u, 10.0)

    @torch.no_grad()
    def log_prob() -> None:
        model.log_prob(x, u)

    @torch.no_grad()
    def draw() -> None:
        model.sample(len(u), u) if reference else sample(model, len(u), u)

    return {"train": (True, step), "log_prob": (False, log_prob), "sample": (False, draw)}


def matmul_seconds() -> float:
    a, b = torch.randn(PEAK_SIZE, PEAK_SIZE), torch.randn(PEAK_SIZE, PEAK_SIZE)
    return per_call(lambda: a @ b)


def time_grid(cells: list[tuple[str, int, int]], rounds: int) -> tuple[dict, list[float]]:
    """Median seconds per job, model and cell, interleaved over ``rounds``; the matmul GFLOP/s of each round."""
    jobs = {}
    for flow, dim, batch in cells:
        ours, reference = build_pair(flow, dim, batch)
        x, u = batch_of(dim, batch)
        jobs[flow, dim, batch] = {"iflow": (ours, tasks(ours, x, u, False)),
                                  "reference": (reference, tasks(reference, x, u, True)),
                                  "weights": linear_weights(ours), "parameters": sum(p.numel() for p in ours.parameters())}  # fmt: skip
    times: dict = {key: {m: {j: [] for j in ("train", "log_prob", "sample")} for m in ("iflow", "reference")}
                   for key in jobs}  # fmt: skip
    peaks = []
    for r in range(rounds):
        peaks.append(2 * PEAK_SIZE**3 / matmul_seconds() / 1e9)
        for key, job in jobs.items():
            order = ("iflow", "reference") if r % 2 == 0 else ("reference", "iflow")
            for model in order:
                module, model_tasks = job[model]
                for name, (training, fn) in model_tasks.items():
                    module.train(training)
                    times[key][model][name].append(per_call(fn))
        print(f"round {r + 1}/{rounds} done (matmul {peaks[-1]:.1f} GFLOP/s)", file=sys.stderr)
    medians = {key: {m: {j: statistics.median(v) for j, v in jobs_.items()} for m, jobs_ in t.items()}
               for key, t in times.items()}  # fmt: skip
    for key in medians:
        medians[key].update(weights=jobs[key]["weights"], parameters=jobs[key]["parameters"])
    return medians, peaks


def peak_rss_kib() -> int:
    """This process's peak resident memory (``VmHWM``, KiB); ``ru_maxrss`` would carry a parent's peak over exec."""
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])


def memory_of(flow: str, dim: int, batch: int, model: str) -> float:
    """MB of peak resident memory that 3 training steps add (after the models are built), in a fresh process."""
    code = (
        "import sys, torch; sys.path.insert(0, %r); import throughput as t; torch.set_num_threads(1)\n"
        "ours, ref = t.build_pair(%r, %d, %d); x, u = t.batch_of(%d, %d); _, fn = t.tasks(%s, x, u, %s)['train']\n"
        "before = t.peak_rss_kib()\n"
        "[fn() for _ in range(3)]\n"
        "print(t.peak_rss_kib() - before)\n"
    ) % (str(Path(__file__).parent), flow, dim, batch, dim, batch, "ref" if model == "reference" else "ours", model == "reference")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024


def report(medians: dict, peaks: list[float], memory: dict, mcc: dict | None, args: argparse.Namespace) -> str:
    peak = statistics.median(peaks)
    lines = [
        "# Flow throughput beside hand-written pure-torch flows of the same architectures",
        "",
        f"Generated by `OMP_NUM_THREADS=1 nice -n 10 python benchmarks/throughput.py{' --quick' if args.quick else ''}"
        f" --rounds {args.rounds}` ({args.threads} thread(s), torch {torch.__version__}, {platform.machine()};"
        " a 2-core machine shared with other jobs: compare ratios, not absolute times).",
        "References: `benchmarks/reference_flows.py` (same layers, conditioner, spline, prior and parameter count,"
        " holding iflow's weights). Ratios are reference time / iflow time, medians of interleaved rounds:"
        " above 1 iflow is faster. FLOP/s: 6 x linear-layer weights x batch per training step, as a fraction"
        f" of a {PEAK_SIZE}^3 fp32 matmul in the same rounds (median {peak:.1f} GFLOP/s, rounds"
        f" {', '.join(f'{p:.1f}' for p in peaks)}). Memory: peak RSS added by 3 training steps, one fresh process"
        " per model and cell (`VmHWM` after the steps minus before them: activations, gradients, Adam's state).",
        "",
        "| flow | dim | batch | parameters | iflow train ms | train ratio | log-prob ratio | sample ratio |"
        " iflow GFLOP/s (of peak) | memory MB iflow / ref |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (flow, dim, batch), m in medians.items():
        ours, ref = m["iflow"], m["reference"]
        gflops = 6 * m["weights"] * batch / ours["train"] / 1e9
        mem = memory.get((flow, dim, batch))
        mem_text = f"{mem['iflow']:.0f} / {mem['reference']:.0f}" if mem else "-"
        lines.append(
            f"| {flow} | {dim} | {batch} | {m['parameters']} | {1e3 * ours['train']:.2f} | {ref['train'] / ours['train']:.2f} |"
            f" {ref['log_prob'] / ours['log_prob']:.2f} | {ref['sample'] / ours['sample']:.2f} |"
            f" {gflops:.1f} ({gflops / peak:.0%}) | {mem_text} |"
        )
    if mcc is not None:
        reached = "not reached" if mcc["to_target"] is None else f"{mcc['to_target']:.1f} s (epoch {mcc['target_epoch']})"
        lines += ["", f"Time to MCC {TARGET_MCC} (`iflow demo`'s data and model, trained as `iflow demo` does, per-epoch"
                  f" work included): {reached}; training stopped after {mcc['epochs']} epochs,"
                  f" {mcc['s']:.1f} s, final MCC {mcc['mcc']:.3f}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="dim 5 and 20, batch 512, no MCC run (about a minute)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--flows", nargs="+", default=list(FLOWS), choices=FLOWS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dims, batches = ((5, 20), (512,)) if args.quick else ((5, 20, 100), (64, 512, 4096))
    cells = [(flow, dim, batch) for flow in args.flows for dim in dims for batch in batches]
    medians, peaks = time_grid(cells, args.rounds)
    memory = {cell: {m: memory_of(*cell, m) for m in ("iflow", "reference")} for cell in cells if cell[2] >= 512}
    mcc = None if args.quick else demo_training()
    text = report(medians, peaks, memory, mcc, args)
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
