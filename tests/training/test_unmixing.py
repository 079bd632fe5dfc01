import math

import numpy as np
import pytest
import torch

from iflow.config import TrainConfig
from iflow.data.dataset import make_dataset
from iflow.data.synthetic import SyntheticConfig, generate
from iflow.flows.build import LULinear, build_flow
from iflow.metrics import mcc
from iflow.models.identifiable_flow import IdentifiableFlow
from iflow.priors import ConditionalExpFamilyPrior, StandardNormalPrior
from iflow.training.epoch_end import uses_linear_fit
from iflow.training.trainer import fit
from iflow.training.unmixing import fit_unmixing, label_scatter, profiled_log_likelihood


def segment_sources(centered: bool, seed: int = 0, labels: int = 20, per: int = 400, n: int = 3):
    rng = np.random.default_rng(seed)
    u = np.repeat(np.arange(labels), per)
    means = np.zeros((labels, n)) if centered else rng.uniform(-3, 3, (labels, n))
    s = rng.normal(means[u], rng.uniform(0.3, 3, (labels, n))[u])
    return torch.tensor(s), torch.tensor(u)


@pytest.mark.parametrize("centered", [False, True])
def test_fit_unmixing_undoes_a_linear_mixing(centered):
    s, u = segment_sources(centered)
    mixing = torch.tensor(np.random.default_rng(1).normal(size=(3, 3)))
    z = s @ mixing.T
    assert mcc(z.numpy(), s.numpy()).mcc < 0.9  # the test can fail: z itself is mixed
    unmixing = fit_unmixing(z, u, 20, centered=centered)
    y = z @ unmixing.T
    assert mcc(y.numpy(), s.numpy()).mcc > 0.995
    product = (unmixing @ mixing).abs()  # a scaled permutation
    product = product / product.max(dim=1, keepdim=True).values
    assert torch.sort(product, dim=1).values[:, :-1].max() < 0.05


def test_fit_unmixing_leaves_unmixed_sources_nearly_alone():
    s, u = segment_sources(False)
    unmixing = fit_unmixing(s, u, 20)
    off_diagonal = unmixing - torch.diag(torch.diagonal(unmixing))
    assert off_diagonal.abs().max() < 0.02 * torch.diagonal(unmixing).abs().min()


@pytest.mark.parametrize("family, centered", [("gauss", False), ("gauss-var", True)])
def test_profiled_likelihood_equals_the_likelihood_after_the_m_step(family, centered):
    s, u = segment_sources(centered)
    unmixing = torch.tensor(np.random.default_rng(2).normal(size=(3, 3)))
    y = s @ unmixing.T
    prior = ConditionalExpFamilyPrior(3, family, n_labels=20).double()
    prior.fit_labels(y, u)
    direct = prior.log_prob(y, u).mean() + torch.linalg.slogdet(unmixing)[1]
    weights, scatter = label_scatter(s, u, 20, centered)
    constant = -0.5 * 3 * (1 + math.log(2 * math.pi))
    profiled = profiled_log_likelihood(unmixing, weights, scatter) + constant
    torch.testing.assert_close(profiled, direct.detach(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compose_left_applies_the_returned_matrix(dtype, autograd_logabsdet):
    torch.manual_seed(0)
    layer = LULinear(4, identity_init=False).to(dtype)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(50, 4, dtype=dtype)
    before = layer(x)[0]
    matrix = torch.tensor([[0.0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, -3], [0.5, 0, 1, 0]], dtype=torch.float64)  # needs pivoting
    applied = layer.compose_left(matrix)
    after, logabsdet = layer(x)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(after, before @ applied.T, atol=tol, rtol=tol)
    torch.testing.assert_close(logabsdet, autograd_logabsdet(layer, x), atol=tol, rtol=tol)
    torch.testing.assert_close(layer.upper_diag, torch.ones(4, dtype=dtype), atol=1e-6, rtol=0)
    ratio = applied.double() @ torch.linalg.inv(matrix)  # rows of M are rows of W, reordered and rescaled
    assert ((ratio.abs() > 1e-6).sum(dim=1) == 1).all() and ((ratio.abs() > 1e-6).sum(dim=0) == 1).all()


def flow_model(flow="spline", prior=None, dim=3, labels=10):
    torch.manual_seed(0)
    return IdentifiableFlow(
        build_flow(flow, dim, depth=1, hidden=16), prior or ConditionalExpFamilyPrior(dim, "gauss", n_labels=labels)
    )


def test_linear_fit_applies_only_where_it_is_defined():
    auto = TrainConfig(prior_fit="epoch")  # the flows' default (filled by iflow.defaults)
    assert uses_linear_fit(flow_model(), auto)
    assert flow_model("realnvp").final_linear() is None and not uses_linear_fit(flow_model("realnvp"), auto)
    assert not uses_linear_fit(flow_model(prior=StandardNormalPrior(3)), auto)
    assert not uses_linear_fit(flow_model(prior=ConditionalExpFamilyPrior(3, "laplace", n_labels=10)), auto)
    assert not uses_linear_fit(flow_model(), TrainConfig(prior_fit="init"))
    assert not uses_linear_fit(flow_model(), TrainConfig(linear_fit="none"))


def test_training_with_the_linear_fit_unmixes_a_linear_mixture_in_one_epoch():
    syn = generate(SyntheticConfig(sources=3, segments=10, per_segment=300, layers=1, seed=3))
    data = make_dataset(syn.x, syn.u, syn.s)
    scores = {}
    for mode in ("auto", "none"):
        result = fit(flow_model(), data, TrainConfig(epochs=1, batch_size=128, linear_fit=mode), progress=False)
        scores[mode] = result.history[-1]["mcc"]
    assert scores["auto"] > 0.98
    assert scores["none"] < scores["auto"] - 0.05


def test_label_scatter_in_chunks_gives_the_same_sums(monkeypatch):
    s, u = segment_sources(False)
    whole = label_scatter(s, u, 20, centered=False)[1]
    monkeypatch.setattr("iflow.training.unmixing.SCATTER_CHUNK", 7 * 9)  # 7 rows of 3 x 3 at a time
    chunked = label_scatter(s, u, 20, centered=False)[1]
    assert torch.equal(chunked, whole)
    direct = torch.stack([torch.cov(s[u == k].T, correction=0) for k in range(20)])
    torch.testing.assert_close(whole, direct, atol=1e-5, rtol=1e-6)  # covariances (+ the tiny ridge)


def test_label_scatter_sums_on_the_device_of_the_latents_and_returns_cpu_matrices(device):
    s, u = segment_sources(False)
    weights, scatter = label_scatter(s.to(device), u.to(device), 20, centered=False)
    assert weights.device.type == scatter.device.type == "cpu"
    reference = label_scatter(s, u, 20, centered=False)[1]
    torch.testing.assert_close(scatter, reference, atol=1e-12, rtol=1e-12)
