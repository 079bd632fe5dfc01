import numpy as np
import torch
from nflows.transforms import CompositeTransform

from iflow.data.dataset import make_dataset
from iflow.flows.build import LULinear, build_flow
from iflow.metrics import mcc
from iflow.models.identifiable_flow import IdentifiableFlow
from iflow.models.sampling import sample
from iflow.priors import FAMILIES, ConditionalExpFamilyPrior, StandardNormalPrior


def small_model(prior="conditional", flow="spline"):
    torch.manual_seed(0)
    p = ConditionalExpFamilyPrior(3, "gauss", n_labels=4) if prior == "conditional" else StandardNormalPrior(3)
    model = IdentifiableFlow(build_flow(flow, 3, depth=2, hidden=8), p)
    with torch.no_grad():
        for q in model.parameters():
            q.add_(0.1 * torch.randn_like(q))
    return model.double().eval()


def test_log_prob_is_prior_plus_logdet_by_change_of_variables(autograd_logabsdet):
    model = small_model()
    x = torch.randn(6, 3, dtype=torch.float64)
    u = torch.tensor([0, 1, 2, 3, 0, 1])
    z = model.encode(x)
    expected = model.prior.log_prob(z, u) + autograd_logabsdet(model.flow, x)
    torch.testing.assert_close(model.log_prob(x, u), expected)
    assert model.loss(x, u).item() == -model.log_prob(x, u).mean().item()


def test_decode_inverts_encode_and_sample_follows_the_label():
    model = small_model()
    x = torch.randn(20, 3, dtype=torch.float64)
    torch.testing.assert_close(model.decode(model.encode(x)), x)
    with torch.no_grad():
        model.prior.net.table[2, 0] = 40.0  # eta1 of z_0 in segment 2
    mean, variance = FAMILIES["gauss"].moments(model.prior.natural_params(torch.tensor([2])))
    gen = torch.Generator().manual_seed(0)
    z = model.encode(sample(model, 2000, 2, generator=gen))
    assert mean[0, 0] > 10
    assert sample(model, 3, torch.tensor([0, 1, 2])).shape == (3, 3)  # or one condition per draw
    torch.testing.assert_close(z.mean(0), mean[0], atol=0.1, rtol=0)
    torch.testing.assert_close(z.var(0), variance[0], atol=0, rtol=0.1)


def test_density_integrates_to_one_in_2d():
    torch.manual_seed(0)
    model = IdentifiableFlow(build_flow("spline", 2, depth=2, hidden=8), ConditionalExpFamilyPrior(2, "gauss", n_labels=1))
    with torch.no_grad():
        for q in model.parameters():
            q.add_(0.05 * torch.randn_like(q))
    model.double().eval()
    grid = torch.linspace(-12, 12, 481, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    x = torch.stack([xx.ravel(), yy.ravel()], 1)
    with torch.no_grad():
        density = model.log_prob(x, torch.zeros(len(x), dtype=torch.long)).exp()
    cell = (grid[1] - grid[0]) ** 2
    assert abs(density.sum().item() * cell - 1.0) < 2e-3


def test_conditional_flow_identifies_linear_mixing_where_unconditional_cannot():
    """Gaussian sources mixed linearly: a rotation is unidentifiable without u, identifiable with it."""
    from iflow.config import TrainConfig
    from iflow.training.trainer import fit

    rng = np.random.default_rng(0)
    segments, per = 10, 300
    stds = rng.uniform(0.3, 3.0, size=(segments, 2))
    u = np.repeat(np.arange(segments), per)
    s = stds[u] * rng.standard_normal((segments * per, 2))
    angle = np.pi / 5
    x = s @ np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    data = make_dataset(x / x.std(0), u, s)
    config = TrainConfig(epochs=20, batch_size=200, lr=3e-2, seed=0)
    scores = {}
    for name, prior in [("cond", ConditionalExpFamilyPrior(2, "gauss-var", n_labels=segments)), ("uncond", StandardNormalPrior(2))]:
        torch.manual_seed(0)
        model = IdentifiableFlow(CompositeTransform([LULinear(2)]), prior)
        fit(model, data, config, progress=False)
        z = model.encode(torch.as_tensor(data.x)).detach().numpy()
        scores[name] = mcc(z, s).mcc
    assert scores["cond"] > 0.97, scores
    assert scores["uncond"] < scores["cond"] - 0.05, scores
