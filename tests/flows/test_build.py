import warnings

import pytest
import torch

from iflow.flows.build import (
    FLOWS,
    ActNorm,
    AffineCoupling,
    ElementwiseSpline,
    LULinear,
    alternating_mask,
    build_flow,
    inverse_map,
    options_for,
    residual_net_factory,
)
from iflow.flows.conditioner import Conditioner
from tests.helpers import randomize

DIM = 5


def single_transforms(dim: int = DIM) -> dict:
    return {
        "affine_coupling": AffineCoupling(alternating_mask(dim, 0), residual_net_factory(16)),
        "lu_linear": LULinear(dim, identity_init=True),
        "elementwise_spline": ElementwiseSpline(dim, bins=6, tail_bound=2.0),
        "actnorm": ActNorm(dim),
    }


ALL = {**{f"flow:{name}": (lambda n=name: build_flow(n, DIM, **options_for(n, {"depth": 2, "hidden": 16}))) for name in FLOWS},
       **{name: (lambda n=name: single_transforms()[n]) for name in single_transforms()}}  # fmt: skip


@pytest.fixture(params=sorted(ALL))
def transform(request):
    torch.manual_seed(0)
    t = ALL[request.param]()
    randomize(t)
    t.eval()  # actnorm: no data-dependent initialisation in these checks
    return t


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip(transform, dtype, device):
    transform.to(device=device, dtype=dtype)
    x = 2.5 * torch.randn(64, DIM, dtype=dtype, generator=torch.Generator().manual_seed(1)).to(device)
    z, logdet = transform(x)
    x_back, logdet_inv = transform.inverse(z)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(x_back, x, rtol=tol, atol=tol)
    torch.testing.assert_close(logdet_inv, -logdet, rtol=tol, atol=tol)


def test_logdet_matches_autograd_jacobian_float64(transform, autograd_logabsdet):
    transform.double()
    x = 2.5 * torch.randn(8, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    _, logdet = transform(x)
    torch.testing.assert_close(logdet, autograd_logabsdet(transform, x), rtol=1e-9, atol=1e-9)


def test_inverse_logdet_matches_autograd_jacobian_float64(transform, autograd_logabsdet):
    transform.double()
    z = 2.5 * torch.randn(8, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    _, logdet = transform.inverse(z)
    torch.testing.assert_close(logdet, autograd_logabsdet(transform.inverse, z), rtol=1e-9, atol=1e-9)


def test_affine_coupling_can_expand_beyond_nflows_cap():
    """nflows 0.14 caps the scale at 1.001; ours must be able to scale up."""
    layer = AffineCoupling(alternating_mask(4, 0), residual_net_factory(8), max_log_scale=3.0)
    with torch.no_grad():
        layer.transform_net.final_layer.bias[2:].fill_(2.0)  # raw log-scale of both transformed features
    x = torch.ones(3, 4)
    y, logdet = layer(x)
    assert (y[:, layer.transform_features] > 5.0).all()
    assert torch.allclose(logdet, torch.full((3,), 2 * 3.0 * torch.tanh(torch.tensor(2.0 / 3.0)).item()))


def test_lu_linear_inverse_is_warning_free_and_matches_weight_inverse():
    layer = LULinear(4, identity_init=False).double()
    randomize(layer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z = torch.randn(10, 4, dtype=torch.float64)
        x, _ = layer.inverse_no_cache(z)
        w_inv = layer.weight_inverse()
    torch.testing.assert_close(x, (z - layer.bias) @ w_inv.t())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("context_features", [None, 2])
def test_lu_linear_and_conditioner_compute_nflows_functions_and_gradients(dtype, context_features):
    from nflows.nn.nets import ResidualNet
    from nflows.transforms import LULinear as NflowsLULinear

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(16, 4, generator=gen, dtype=dtype)
    net_inputs = (x,) if context_features is None else (x, torch.randn(16, context_features, generator=gen, dtype=dtype))
    pairs = [
        (LULinear(4, identity_init=False), NflowsLULinear(4, identity_init=False), (x,)),
        (Conditioner(4, 7, 8, context_features), ResidualNet(4, 7, 8, context_features), net_inputs),
    ]
    for ours, theirs, inputs in pairs:
        randomize(ours.to(dtype), seed=4)
        theirs.to(dtype).load_state_dict(ours.state_dict())  # the same parameters under the same names
        outs = [m(*inputs) for m in (ours, theirs)]
        flat = [torch.cat([o.flatten() for o in (out if isinstance(out, tuple) else (out,))]) for out in outs]
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(flat[0], flat[1], rtol=tol, atol=tol)
        grads = [torch.autograd.grad(f.square().sum(), list(m.parameters())) for f, m in zip(flat, (ours, theirs), strict=True)]
        for a, b in zip(*grads, strict=True):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_elementwise_spline_is_nflows_spline_both_ways(dtype):
    from nflows.transforms import PiecewiseRationalQuadraticCDF

    ours = randomize(ElementwiseSpline(4, bins=6, tail_bound=2.0).to(dtype), seed=6, scale=1.0)
    theirs = PiecewiseRationalQuadraticCDF((4,), num_bins=6, tails="linear", tail_bound=2.0).to(dtype)
    theirs.load_state_dict(ours.state_dict())
    x = 1.5 * torch.randn(64, 4, generator=torch.Generator().manual_seed(7), dtype=dtype)  # some beyond the bound
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for direction in ("forward", "inverse"):
        for a, b in zip(getattr(ours, direction)(x), getattr(theirs, direction)(x), strict=True):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_inverse_map_is_the_flows_inverse():
    flow = randomize(build_flow("glow", DIM, depth=2, hidden=8), seed=5).eval()
    z = torch.randn(32, DIM)
    torch.testing.assert_close(inverse_map(flow, z), flow.inverse(z)[0])


def test_builders_start_at_identity():
    x = torch.randn(16, DIM)
    for name in ("realnvp", "spline"):
        flow = build_flow(name, DIM).eval()
        z, logdet = flow(x)
        torch.testing.assert_close(z, x, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logdet, torch.zeros(16), rtol=1e-5, atol=1e-5)


def test_unknown_flow_and_too_small_dim():
    with pytest.raises(ValueError, match="unknown flow"):
        build_flow("maf", 3)
    with pytest.raises(ValueError, match="at least 2"):
        build_flow("realnvp", 1)


def test_gradients_reach_every_parameter():
    for name in FLOWS:
        flow = build_flow(name, DIM, **options_for(name, {"depth": 2, "hidden": 8}))
        randomize(flow)
        flow.train()
        z, logdet = flow(torch.randn(32, DIM))
        (z.square().sum() - logdet.sum()).backward()
        missing = [n for n, p in flow.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not missing, (name, missing)


@pytest.mark.parametrize("shape", [(64, DIM), (8, 3, 4, 4)])
def test_actnorm_is_nflows_actnorm_reading_its_flag_once(shape, monkeypatch):
    from nflows.transforms import ActNorm as NflowsActNorm

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * 3 + 1
    ours, theirs = ActNorm(shape[1]), NflowsActNorm(shape[1])
    for _ in range(2):  # the first training call initialises both from the batch
        for a, b in zip(ours(x), theirs(x), strict=True):
            assert torch.equal(a, b)
    for a, b in zip(ours.inverse(x), theirs.inverse(x), strict=True):
        assert torch.equal(a, b)
    reads = []
    original = torch.Tensor.__bool__
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda t: reads.append(1) or original(t))
    ours(x)
    assert reads == [], "an initialised actnorm must not read its buffer back"
    ours.load_state_dict(ActNorm(shape[1]).state_dict())  # an uninitialised state: initialise again
    ours(2 * x)
    monkeypatch.undo()
    assert len(reads) == 1 and bool(ours.initialized)
    torch.testing.assert_close(ours(2 * x)[0].transpose(0, 1).reshape(shape[1], -1).mean(1), torch.zeros(shape[1]),
                               atol=1e-5, rtol=0)  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["spline", "glow", "mlp"])
def test_batched_lu_weights_compute_the_composite_function_and_gradients(name, dtype):
    """The LU layers' weights built together: nflows' composite's values, log-determinants and gradients."""
    from nflows.transforms import CompositeTransform

    flow = randomize(build_flow(name, 4).to(dtype), seed=8)
    assert type(flow).forward is not CompositeTransform.forward
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(9), dtype=dtype)
    flow.train()
    flow(x)  # the data-dependent start of actnorm, before both passes
    results = []
    for forward in (flow.forward, lambda inputs: CompositeTransform.forward(flow, inputs)):
        z, logabsdet = forward(x)
        grads = torch.autograd.grad(z.square().sum() - logabsdet.sum(), list(flow.parameters()))
        results.append((z, logabsdet, grads))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    (z, ld, grads), (z_ref, ld_ref, grads_ref) = results
    torch.testing.assert_close(z, z_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(ld, ld_ref, rtol=tol, atol=tol)
    for a, b in zip(grads, grads_ref, strict=True):  # float32 rounds apart: relative to each tensor's largest
        scale = b.abs().max().clamp_min(1.0)
        torch.testing.assert_close(a / scale, b / scale, rtol=0, atol=10 * tol)


def test_batched_lu_weights_compile_to_the_eager_function():
    """Under torch.compile (``--compile``) too: an expanded start once made inductor share one row for all layers."""
    flow = randomize(build_flow("spline", 3, depth=2, hidden=8), seed=10)
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(11))
    for a, b in zip(torch.compile(flow.forward, dynamic=False)(x), flow(x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
