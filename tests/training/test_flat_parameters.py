"""The optimizer's flat parameters: gradients land in the flat buffer, one step over it is the
per-tensor step, broken aliasing is caught, and training matches training without it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from iflow.config import ModelConfig, TrainConfig
from iflow.data.dataset import AuxSpec
from iflow.flows.build import ActNorm
from iflow.models.build import build_model
from iflow.training import trainer as trainer_module
from iflow.training.flat_parameters import FlatParameters, StepParameters, step_parameters
from iflow.training.trainer import fit
from tests import helpers


def small_net(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).to(dtype)


def loss_of(net: nn.Module, dtype: torch.dtype) -> torch.Tensor:
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(1), dtype=dtype)
    return net(x).square().sum()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_land_in_the_flat_buffer_and_a_step_over_it_is_the_per_tensor_step(dtype) -> None:
    """The same to rounding: fused Adam computes each tensor's last few entries in a scalar loop that
    rounds apart from its vector loop (one ulp in a few entries here)."""
    flat_net, reference = small_net(dtype), small_net(dtype)
    start = [p.detach().clone() for p in reference.parameters()]
    flat = FlatParameters(list(flat_net.parameters()))
    flat_optimizer = torch.optim.Adam([flat.flat], lr=0.1, weight_decay=0.01, fused=True)
    optimizer = torch.optim.Adam(reference.parameters(), lr=0.1, weight_decay=0.01, fused=True)
    for _ in range(3):
        for net, opt in ((flat_net, flat_optimizer), (reference, optimizer)):
            opt.zero_grad(set_to_none=False)
            loss_of(net, dtype).backward()
            opt.step()
        torch.testing.assert_close(flat.flat.grad, torch.cat([p.grad.reshape(-1) for p in reference.parameters()]))
    for ours, theirs, before in zip(flat_net.parameters(), reference.parameters(), start, strict=True):
        torch.testing.assert_close(ours, theirs)  # fused Adam rounds a vector's tail apart: 1 ulp here and there
        assert not torch.equal(ours, before)
    flat.check()


def test_the_check_names_a_rebound_parameter_and_a_dropped_gradient() -> None:
    net = small_net()
    flat = FlatParameters(list(net.parameters()))
    flat.check()
    net[2].bias.data = net[2].bias.detach().clone()  # as nflows' ActNorm start did
    with pytest.raises(RuntimeError, match=r"shape \(2,\) no longer aliases"):
        flat.check()
    net = small_net()
    flat = FlatParameters(list(net.parameters()))
    net.zero_grad(set_to_none=True)
    with pytest.raises(RuntimeError, match="no longer aliases"):
        flat.check()


def test_separate_and_frozen_parameters_stay_apart_and_dtypes_get_a_buffer_each() -> None:
    net = small_net()
    net[0].bias.requires_grad_(False)
    net.append(nn.Linear(2, 2).double())
    step = step_parameters(net, [net[2].weight])
    assert [f.flat.dtype for f in step.flat] == [torch.float32, torch.float64]
    assert [f.flat.numel() for f in step.flat] == [3 * 5 + 2, 6]
    assert step.optimized[2:] == [net[0].bias, net[2].weight]
    assert all(p.data_ptr() != step.flat[0].flat.data_ptr() for p in step.optimized[2:])


def test_actnorm_starts_in_place_so_its_parameters_stay_in_the_buffer() -> None:
    layer = ActNorm(3)
    flat = FlatParameters(list(layer.parameters()))
    layer.train()
    x = torch.randn(50, 3) * torch.tensor([1.0, 2.0, 5.0]) + 3
    z, _ = layer(x)
    flat.check()
    assert torch.allclose(z.mean(0), torch.zeros(3), atol=1e-5) and torch.allclose(z.std(0), torch.ones(3), atol=1e-5)
    assert layer.initialized


@pytest.mark.parametrize("flow", ["spline", "glow"])
def test_training_over_the_flat_buffer_matches_training_over_every_tensor(flow, monkeypatch) -> None:
    """The same updates to rounding; a low clip makes clipping act, and glow's ActNorm starts in a step."""
    config = TrainConfig(epochs=2, batch_size=30, clip_grad=0.5, prior_fit="none")
    data = helpers.tiny_data(200, 3)

    def model() -> nn.Module:
        torch.manual_seed(0)
        return build_model(ModelConfig(flow=flow, dim=3, aux=AuxSpec("labels", n_labels=4), depth=2, hidden=8))

    flat_model = model()
    fit(flat_model, data, config, progress=False)
    monkeypatch.setattr(trainer_module, "step_parameters", lambda m, separate: StepParameters(list(m.parameters()), []))
    reference = model()
    fit(reference, data, config, progress=False)
    start = dict(model().named_parameters())
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(flat_model.state_dict()[key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert all(not torch.equal(value, start[key]) for key, value in reference.named_parameters())
