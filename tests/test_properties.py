"""Property tests over random shapes, dtypes and parameters, generic over the registries:
every flow in ``FLOWS`` (and each transform inside it), every model in ``MODELS``,
every prior family in ``FAMILIES``. A new builder, model or family is covered by
adding it to its registry (a family also needs its scipy twin in ``SCIPY_TWINS``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from iflow.config import ModelConfig
from iflow.data.dataset import AuxSpec
from iflow.flows.build import FLOWS, build_flow, options_for
from iflow.models.build import MODELS, build_model
from iflow.priors import FAMILIES, ConditionalExpFamilyPrior, StandardNormalPrior
from tests.helpers import autograd_logabsdet, randomize


@dataclass(frozen=True)
class Tolerance:
    inverse: float  # |inverse(forward(x)) - x|, relative to max(1, |x|)
    logdet: float  # |logabsdet - autograd's|, relative to max(1, |logdet|)


TOLERANCES = {torch.float32: Tolerance(inverse=2e-4, logdet=2e-3), torch.float64: Tolerance(inverse=1e-9, logdet=1e-8)}
DTYPES = st.sampled_from(sorted(TOLERANCES, key=str))
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    scale = expected.abs().clamp_min(1.0)
    error = ((actual - expected).abs() / scale).max().item()
    assert error <= tol, f"{what}: relative error {error:.3g} > {tol:.3g}"


def check_transform(transform, x: torch.Tensor, tol: Tolerance, what: str) -> torch.Tensor:
    """Round trip, inverse log-det and autograd log-det of one transform at ``x``; return its output."""
    z, logdet = transform(x)
    x_back, inverse_logdet = transform.inverse(z)
    assert torch.isfinite(z).all() and torch.isfinite(logdet).all(), what
    assert_close(x_back, x, tol.inverse, f"{what}: inverse(forward(x))")
    assert_close(-inverse_logdet, logdet, tol.logdet, f"{what}: inverse log-det")
    assert_close(logdet, autograd_logabsdet(transform, x), tol.logdet, f"{what}: log-det vs autograd")
    return z.detach()


flow_cases = st.fixed_dictionaries(
    {
        "name": st.sampled_from(sorted(FLOWS)),
        "dim": st.integers(2, 4),
        "batch": st.integers(1, 5),
        "depth": st.integers(1, 2),
        "dtype": DTYPES,
        "seed": st.integers(0, 2**16),
        "scale": st.sampled_from([0.0, 0.1, 0.5]),
        "spread": st.sampled_from([0.5, 2.0, 6.0]),  # 6: beyond the spline interval, into the linear tails
    }
)


@SETTINGS
@given(case=flow_cases)
def test_every_flow_and_its_transforms_invert_with_exact_logdet(case: dict) -> None:
    torch.manual_seed(case["seed"])
    options = options_for(case["name"], {"depth": case["depth"], "hidden": 8, "bins": 5})
    flow = build_flow(case["name"], case["dim"], **options).to(case["dtype"]).eval()
    randomize(flow, case["seed"], case["scale"])
    generator = torch.Generator().manual_seed(case["seed"])
    x = case["spread"] * torch.randn(case["batch"], case["dim"], generator=generator, dtype=torch.float64)
    x = x.to(case["dtype"])
    tol = TOLERANCES[case["dtype"]]
    check_transform(flow, x, tol, f"{case['name']} flow")
    h = x
    for i, step in enumerate(flow._transforms):
        h = check_transform(step, h, tol, f"{case['name']} step {i} ({type(step).__name__})")


def model_config(model: str, flow: str, prior: str, dim: int, aux: AuxSpec) -> ModelConfig:
    """A small config of ``model``, with the options the model and its flow read."""
    reads = MODELS[model].options
    options = {"flow": flow, "prior": prior, "depth": 1, "hidden": 8, "bins": 5}
    if "flow" in reads:  # a flow model: the options its flow takes
        options = {"flow": flow, "prior": prior, **options_for(flow, options)}
    return ModelConfig(model=model, dim=dim, aux=aux, **{k: v for k, v in options.items() if k in reads})


model_cases = st.fixed_dictionaries(
    {
        "model": st.sampled_from(sorted(name for name, entry in MODELS.items() if entry.trained)),
        "flow": st.sampled_from(sorted(FLOWS)),
        "prior": st.sampled_from(sorted(FAMILIES)),
        "dim": st.integers(2, 4),
        "batch": st.integers(2, 6),
        "aux": st.sampled_from([AuxSpec("labels", n_labels=3), AuxSpec("continuous", aux_dim=2)]),
        "dtype": DTYPES,
        "seed": st.integers(0, 2**16),
    }
)


def model_inputs(case: dict) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(case["batch"], case["dim"], generator=generator, dtype=torch.float64).to(case["dtype"])
    aux = case["aux"]
    if aux.kind == "labels":
        u = torch.arange(case["batch"]) % aux.n_labels
    else:
        u = torch.randn(case["batch"], aux.aux_dim, generator=generator, dtype=torch.float64).to(case["dtype"])
    return x, u


def build(case: dict, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = model_config(case["model"], case["flow"], case["prior"], case["dim"], case["aux"])
    return build_model(config).to(case["dtype"]).eval()


@SETTINGS
@given(case=model_cases)
def test_every_model_is_finite_trainable_and_reloads_exactly(case: dict) -> None:
    assume(case["model"] != "tcl" or case["aux"].kind == "labels")  # TCL classifies integer labels only
    model = build(case, seed=case["seed"])
    randomize(model, case["seed"], 0.3)
    x, u = model_inputs(case)

    torch.manual_seed(0)
    log_prob = model.log_prob(x, u)
    assert log_prob.shape == (case["batch"],) and log_prob.dtype == case["dtype"]
    assert torch.isfinite(log_prob).all()

    model.zero_grad()
    torch.manual_seed(0)
    model.loss(x, u).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reaches {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient in {name}"
        assert p.grad.abs().sum() > 0, f"zero gradient for {name}"

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    reloaded = build(case, seed=case["seed"] + 1)
    reloaded.load_state_dict(torch.load(buffer, weights_only=True))
    torch.manual_seed(0)
    assert torch.equal(reloaded.log_prob(x, u), log_prob.detach())
    assert torch.equal(reloaded.encode(x, u), model.encode(x, u))

    if model.likelihood == "exact":  # invertible models: decode undoes encode
        with torch.no_grad():
            assert_close(model.decode(model.encode(x, u)), x, TOLERANCES[case["dtype"]].inverse, "decode(encode(x))")


# --- priors ----------------------------------------------------------------------------------


def _gauss(eta: np.ndarray):
    variance = -0.5 / eta[1]
    return stats.norm(eta[0] * variance, np.sqrt(variance))


SCIPY_TWINS = {
    "gauss": _gauss,
    "gauss-var": lambda eta: stats.norm(0.0, np.sqrt(-0.5 / eta[0])),
    "laplace": lambda eta: stats.laplace(0.0, -1.0 / eta[0]),
}


def test_every_family_has_a_scipy_twin() -> None:
    assert set(SCIPY_TWINS) == set(FAMILIES)


family_cases = st.fixed_dictionaries(
    {
        "family": st.sampled_from(sorted(FAMILIES)),
        "raw": st.lists(st.floats(-3.0, 3.0), min_size=2, max_size=2),
        "z": st.lists(st.floats(-10.0, 10.0), min_size=1, max_size=8),
    }
)


def natural_params(family: str, raw: list[float]) -> torch.Tensor:
    fam = FAMILIES[family]
    return fam.constrain(torch.tensor(raw[: fam.n_stats], dtype=torch.float64))


@settings(max_examples=30, deadline=None, derandomize=True)
@given(case=family_cases)
def test_every_family_is_normalised_and_matches_scipy(case: dict) -> None:
    fam = FAMILIES[case["family"]]
    eta = natural_params(case["family"], case["raw"])
    twin = SCIPY_TWINS[case["family"]](eta.numpy())

    def density(z: float) -> float:
        return float(fam.log_prob(torch.tensor([z], dtype=torch.float64), eta.unsqueeze(0)).exp())

    centre, width = twin.mean(), twin.std()  # the mass beyond 60 standard deviations is negligible
    total, _ = integrate.quad(density, centre - 60 * width, centre + 60 * width, points=[centre], limit=200)
    assert total == pytest.approx(1.0, abs=1e-6)

    z = torch.tensor(case["z"], dtype=torch.float64)
    ours = fam.log_prob(z, eta.expand(len(z), -1)).numpy()
    np.testing.assert_allclose(ours, twin.logpdf(z.numpy()), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_samples_follow_scipy(family: str) -> None:
    eta = natural_params(family, [0.7, 0.4])
    generator = torch.Generator().manual_seed(0)
    draws = FAMILIES[family].sample(eta.expand(4000, -1), generator).numpy()
    twin = SCIPY_TWINS[family](eta.numpy())
    assert stats.kstest(draws, twin.cdf).pvalue > 1e-3
    assert stats.kstest(draws, stats.norm(twin.mean() + 0.2 * twin.std(), twin.std()).cdf).pvalue < 1e-3, (
        "test too weak"
    )


@settings(max_examples=15, deadline=None, derandomize=True)
@given(family=st.sampled_from(sorted(FAMILIES)), dim=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_conditional_prior_is_the_product_of_its_components(family: str, dim: int, seed: int) -> None:
    torch.manual_seed(seed)
    prior = ConditionalExpFamilyPrior(dim, family, n_labels=5).double()
    randomize(prior, seed, 1.0)
    u = torch.arange(6) % 5
    z = torch.randn(6, dim, dtype=torch.float64)
    eta = prior.natural_params(u).detach().numpy()
    expected = [sum(SCIPY_TWINS[family](eta[i, j]).logpdf(z[i, j].item()) for j in range(dim)) for i in range(6)]
    np.testing.assert_allclose(prior.log_prob(z, u).detach().numpy(), expected, rtol=1e-9, atol=1e-9)


def test_standard_normal_prior_matches_scipy() -> None:
    z = torch.randn(7, 3, dtype=torch.float64)
    prior = StandardNormalPrior(3).double()
    expected = stats.norm.logpdf(z.numpy()).sum(1)
    np.testing.assert_allclose(prior.log_prob(z, torch.zeros(7)).numpy(), expected, rtol=1e-12)
