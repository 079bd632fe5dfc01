"""Training and sampling throughput (samples/s) of iflow's flows beside a minimal pure-torch RealNVP.

All models run side by side in one process, interleaved over several rounds,
and are reported as ratios to the reference, since the machine is shared. The
spline flow also runs with nflows' own RQ coupling in place of iflow's
(iflow/splines.py; same parameters, same function), to measure what that buys.

    python benchmarks/throughput.py [--dim 5] [--batch 512 256] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from nflows.transforms import CompositeTransform, PiecewiseRationalQuadraticCouplingTransform
from torch import Tensor, nn

from iflow.flows.build import FLOWS, build_flow, options_for
from iflow.flows.splines import RationalQuadraticCoupling
from iflow.models.identifiable_flow import IdentifiableFlow
from iflow.models.sampling import sample
from iflow.priors import ConditionalExpFamilyPrior

NFLOWS_SPLINE = "iflow spline, nflows' RQ coupling"


class ReferenceCoupling(nn.Module):
    """Hand-written affine coupling: the half selected by ``mask`` conditions the other."""

    def __init__(self, dim: int, hidden: int, mask: Tensor):
        super().__init__()
        self.register_buffer("mask", mask.float())
        inner = [m for _ in range(4) for m in (nn.Linear(hidden, hidden), nn.ReLU())]  # as 2 residual blocks
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), *inner, nn.Linear(hidden, 2 * dim))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_s, t = (self.net(x * self.mask) * (1 - self.mask).repeat(2)).chunk(2, dim=-1)
        log_s = 3 * torch.tanh(log_s / 3)
        return x * log_s.exp() + t, log_s.sum(-1)

    def inverse(self, y: Tensor) -> Tensor:
        log_s, t = (self.net(y * self.mask) * (1 - self.mask).repeat(2)).chunk(2, dim=-1)
        log_s = 3 * torch.tanh(log_s / 3)
        return (y - t) * (-log_s).exp()


class ReferenceRealNVP(nn.Module):
    """Minimal pure-torch RealNVP with a conditional Gaussian prior table (same job as iflow's)."""

    def __init__(self, dim: int, depth: int, hidden: int, n_labels: int):
        super().__init__()
        self.layers = nn.ModuleList(ReferenceCoupling(dim, hidden, (torch.arange(dim) + i) % 2) for i in range(depth))
        self.prior = ConditionalExpFamilyPrior(dim, "gauss", n_labels=n_labels)

    def loss(self, x: Tensor, u: Tensor) -> Tensor:
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return -(self.prior.log_prob(x, u) + logdet).mean()

    @torch.no_grad()
    def sample(self, n: int, u: Tensor) -> Tensor:  # IdentifiableFlow.sample's signature; n == len(u) here
        z = self.prior.sample(u)
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z


def with_nflows_coupling(flow: CompositeTransform) -> CompositeTransform:
    """The same flow (a copy, same parameters) with nflows' RQ coupling in place of iflow's."""
    layers = []
    for layer in flow._transforms:
        if isinstance(layer, RationalQuadraticCoupling):
            net = copy.deepcopy(layer.transform_net)
            mask = torch.zeros(layer.features, dtype=torch.long).index_fill(0, layer.transform_features, 1)
            layer = PiecewiseRationalQuadraticCouplingTransform(
                mask, lambda *_, net=net: net, num_bins=layer.num_bins, tails="linear", tail_bound=layer.tail_bound
            )
        else:
            layer = copy.deepcopy(layer)
        layers.append(layer)
    return CompositeTransform(layers)


def train_rate(model: nn.Module, x: Tensor, u: Tensor, steps: int) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    start = time.perf_counter()
    for _ in range(steps):
        loss = model.loss(x, u)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * x.shape[0] / (time.perf_counter() - start)


@torch.no_grad()
def sample_rate(model: nn.Module, u: Tensor, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        sample(model, u.shape[0], u)
    return steps * u.shape[0] / (time.perf_counter() - start)


def measure(args: argparse.Namespace, batch: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(batch, args.dim)
    u = torch.randint(0, 40, (batch,))
    models: dict[str, nn.Module] = {"reference (pure torch RealNVP)": ReferenceRealNVP(args.dim, args.depth, args.hidden, 40)}
    for name in FLOWS:
        flow = build_flow(name, args.dim, **options_for(name, {"depth": args.depth, "hidden": args.hidden}))
        models[f"iflow {name}"] = IdentifiableFlow(flow, ConditionalExpFamilyPrior(args.dim, "gauss", n_labels=40))
    spline = models["iflow spline"]
    models[NFLOWS_SPLINE] = IdentifiableFlow(with_nflows_coupling(spline.flow), copy.deepcopy(spline.prior))
    torch.testing.assert_close(models[NFLOWS_SPLINE].loss(x, u), spline.loss(x, u))  # the same model
    rates: dict[str, dict[str, list[float]]] = {name: {"train": [], "sample": []} for name in models}
    for _ in range(args.rounds):  # interleaved, so load changes hit every model alike
        for name, model in models.items():
            rates[name]["train"].append(train_rate(model, x, u, args.steps))
            rates[name]["sample"].append(sample_rate(model.eval(), u, args.steps))
            model.train()
    median = {n: {k: sorted(v)[len(v) // 2] for k, v in r.items()} for n, r in rates.items()}
    ref = median["reference (pure torch RealNVP)"]
    print(f"dim {args.dim}, batch {batch}, depth {args.depth}, hidden {args.hidden}, {args.threads} thread(s); medians of {args.rounds} rounds")
    print()
    print("| model | parameters | train samples/s | ratio to reference | sample samples/s | ratio to reference |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters())
        m = median[name]
        print(f"| {name} | {params} | {m['train']:.0f} | {m['train'] / ref['train']:.2f} | {m['sample']:.0f} | {m['sample'] / ref['sample']:.2f} |")
    ours, theirs = rates["iflow spline"], rates[NFLOWS_SPLINE]
    # per round, ours over nflows' (the two ran seconds apart), then the median over rounds
    speedup = {k: sorted(a / b for a, b in zip(ours[k], theirs[k], strict=False))[args.rounds // 2] for k in ("train", "sample")}
    print()
    print(f"iflow's RQ coupling over nflows' (same flow, same parameters), median of per-round ratios: "
          f"training step {speedup['train']:.2f}x, sampling {speedup['sample']:.2f}x")  # fmt: skip
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=5)
    parser.add_argument("--batch", type=int, nargs="+", default=[512, 256])
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for batch in args.batch:
        measure(args, batch)


if __name__ == "__main__":
    main()
