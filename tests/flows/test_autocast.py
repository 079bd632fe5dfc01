"""Conditioner networks under autocast: bfloat16 inside while training, the input's dtype outside,
full precision in eval mode and when unset."""

import pytest
import torch

from iflow.flows.autocast import conditioner_networks, set_autocast
from iflow.flows.build import FLOWS, build_flow, options_for
from iflow.flows.multiscale import ConvNet


def inner_dtypes(network: torch.nn.Module, *inputs: torch.Tensor) -> tuple[set[torch.dtype], torch.dtype]:
    """The dtypes the network's linear and conv layers produced, and the dtype of its output."""
    seen: set[torch.dtype] = set()
    layers = [m for m in network.modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)]
    handles = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype)) for m in layers]
    try:
        output = network(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return seen, output.dtype


@pytest.mark.parametrize("name", ["realnvp", "spline", "glow"])
def test_a_flows_conditioners_run_in_bfloat16_only_while_training_with_autocast_set(name, device):
    flow = build_flow(name, 4, **options_for(name, {"depth": 2, "hidden": 8})).to(device)
    networks = conditioner_networks(flow)
    assert len(networks) == 2
    x = torch.randn(16, 2, device=device)
    set_autocast(flow, torch.bfloat16)
    flow.train()
    assert inner_dtypes(networks[0], x) == ({torch.bfloat16}, torch.float32)
    flow.eval()
    assert inner_dtypes(networks[0], x) == ({torch.float32}, torch.float32)
    set_autocast(flow, None)
    flow.train()
    assert inner_dtypes(networks[0], x) == ({torch.float32}, torch.float32)


def test_the_image_conditioner_runs_in_bfloat16_while_training():
    network = ConvNet(2, 4, hidden=8)
    network.autocast_dtype = torch.bfloat16
    assert inner_dtypes(network.train(), torch.randn(2, 2, 4, 4)) == ({torch.bfloat16}, torch.float32)


def test_flows_without_coupling_networks_have_no_conditioners():
    assert conditioner_networks(build_flow("mlp", 4, depth=1)) == []
    assert sorted(FLOWS) == ["glow", "mlp", "realnvp", "spline"], "a new flow: say here whether it has conditioners"
