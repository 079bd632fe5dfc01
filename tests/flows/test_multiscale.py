import warnings

import pytest
import torch
from torch.autograd.functional import jacobian

from iflow.flows.multiscale import OneByOneConvolution, image_glow
from iflow.flows.unit_logit import UnitLogit
from tests.helpers import randomize


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_image_glow_round_trip(dtype):
    torch.manual_seed(0)
    flow = image_glow((1, 8, 8), scales=2, depth=2, hidden=8).to(dtype)
    flow.train()
    flow(torch.randn(16, 64, dtype=dtype))  # actnorm's data-dependent initialisation
    randomize(flow).eval()
    x = torch.randn(5, 64, dtype=dtype)
    z, logabsdet = flow(x)
    back, inverse_logabsdet = flow.inverse(z)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    assert z.shape == (5, 64)
    assert torch.allclose(back, x, atol=tol)
    assert torch.allclose(logabsdet, -inverse_logabsdet, atol=tol * 10)


def test_image_glow_logdet_matches_autograd_jacobian():
    torch.manual_seed(1)
    flow = image_glow((1, 4, 4), scales=2, depth=2, hidden=8).double()
    flow.train()
    flow(torch.randn(8, 16, dtype=torch.float64))
    randomize(flow, 1).eval()
    x = torch.randn(3, 16, dtype=torch.float64)
    _, logabsdet = flow(x)
    for i in range(3):
        jac = jacobian(lambda v: flow(v.unsqueeze(0))[0][0], x[i])
        assert logabsdet[i].item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), abs=1e-8)


def test_image_glow_gradients_reach_every_parameter():
    flow = image_glow((1, 4, 4), scales=2, depth=2, hidden=8)
    flow.train()
    flow(torch.randn(8, 16))
    randomize(flow)
    z, logabsdet = flow(torch.randn(8, 16))
    (z.square().sum() - logabsdet.sum()).backward()
    missing = [n for n, p in flow.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_one_by_one_convolution_inverse_is_warning_free():
    conv = OneByOneConvolution(4)
    randomize(conv)
    x = torch.randn(2, 4, 3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, logabsdet = conv(x)
        back, inverse_logabsdet = conv.inverse(y)
    assert torch.allclose(back, x, atol=1e-5)
    assert torch.allclose(logabsdet, -inverse_logabsdet, atol=1e-5)


def test_unit_logit_round_trip_and_logdet():
    logit = UnitLogit(alpha=0.05)
    x = torch.rand(4, 3, dtype=torch.float64)
    y, logabsdet = logit(x)
    back, inverse_logabsdet = logit.inverse(y)
    assert torch.allclose(back, x, atol=1e-12)
    assert torch.allclose(logabsdet, -inverse_logabsdet, atol=1e-12)
    for i in range(4):
        jac = jacobian(lambda v: logit(v.unsqueeze(0))[0][0], x[i])
        assert logabsdet[i].item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), abs=1e-10)
