"""The benchmark's hand-written reference flows (benchmarks/reference_flows.py) are iflow's
architectures: same parameter shapes, the same function given the same weights, exact
inverses and log-determinants."""

import sys
from pathlib import Path

import pytest
import torch

from iflow.flows.build import build_flow
from iflow.models.identifiable_flow import IdentifiableFlow
from iflow.priors import ConditionalExpFamilyPrior
from tests.helpers import autograd_logabsdet, randomize

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import reference_flows  # noqa: E402

DIM, LABELS = 5, 7


def pair(name: str, dtype: torch.dtype) -> tuple[IdentifiableFlow, reference_flows.ReferenceFlow]:
    """iflow's model with randomized weights, and the reference holding the same weights."""
    torch.manual_seed(0)
    flow = build_flow(name, DIM, depth=3, hidden=16)
    ours = randomize(IdentifiableFlow(flow, ConditionalExpFamilyPrior(DIM, "gauss", n_labels=LABELS)), scale=0.3)
    ours = ours.to(dtype)
    reference = reference_flows.REFERENCES[name](DIM, LABELS, depth=3, hidden=16).to(dtype)
    reference_flows.copy_parameters(ours, reference)
    return ours, reference


def data(dtype: torch.dtype, n: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return 3 * torch.randn(n, DIM, generator=gen, dtype=dtype), torch.randint(0, LABELS, (n,), generator=gen)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(reference_flows.REFERENCES))
def test_same_parameters_same_function(name, dtype):
    ours, reference = pair(name, dtype)
    x, u = data(dtype)
    ours.train(), reference.train()  # actnorm's data-dependent start runs in both
    ours(x, u), reference(x, u)
    reference_flows.copy_parameters(ours, reference)  # the initialised actnorm weights
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(reference(x, u), ours(x, u), rtol=tol, atol=tol)
    (grad_ours,) = torch.autograd.grad(ours.loss(x, u), list(ours.parameters())[-2])  # the last conditioner layer
    (grad_ref,) = torch.autograd.grad(reference.loss(x, u), list(reference.parameters())[-2])
    torch.testing.assert_close(grad_ref, grad_ours, rtol=tol, atol=tol)
    z = ours.encode(x)
    torch.testing.assert_close(reference.flow[-1].inverse(reference.flow[-1](z)[0])[0], z, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", sorted(reference_flows.REFERENCES))
def test_round_trip_and_logdet_against_autograd_float64(name):
    _, reference = pair(name, torch.float64)
    x, _ = data(torch.float64, n=20)
    layers = reference.flow

    def forward(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = v.new_zeros(v.shape[0])
        for layer in layers:
            v, ld = layer(v)
            logdet = logdet + ld
        return v, logdet

    v = x
    for layer in layers:  # layer by layer: the composed random flow amplifies rounding (iflow's alike)
        y, ld = layer(v)
        back, inverse_ld = layer.inverse(y)
        torch.testing.assert_close(back, v, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(inverse_ld, -ld, rtol=1e-9, atol=1e-9)
        v = y
    torch.testing.assert_close(forward(x)[1], autograd_logabsdet(forward, x), rtol=1e-7, atol=1e-7)  # a wrong one is O(1) off


def test_copy_refuses_another_architecture():
    ours, _ = pair("spline", torch.float64)
    with pytest.raises(ValueError, match="same parameters"):
        reference_flows.copy_parameters(ours, reference_flows.realnvp(DIM, LABELS, depth=3, hidden=16))
