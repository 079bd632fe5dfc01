"""Conditioner networks under autocast: bfloat16 inside while training, the input's dtype outside,
full precision in eval mode and when unset."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from iflow.flows.autocast import conditioner_networks, set_autocast
from iflow.flows.build import FLOWS, build_flow, options_for
from iflow.flows.multiscale import ConvNet


class MatmulDtypes(TorchDispatchMode):
    """Records the dtypes the matrix products and convolutions under it produced."""

    OPS = ("aten.addmm", "aten.mm", "aten.convolution")

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[torch.dtype] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        if str(func).startswith(self.OPS):
            self.seen.add(out.dtype)
        return out


def inner_dtypes(network: torch.nn.Module, *inputs: torch.Tensor) -> tuple[set[torch.dtype], torch.dtype]:
    """The dtypes the network's linear and conv layers produced, and the dtype of its output."""
    with MatmulDtypes() as recorded:
        output = network(*inputs)
    return recorded.seen, output.dtype


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
