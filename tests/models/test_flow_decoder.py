import math

import numpy as np
import pytest
import torch

from iflow.config import ModelConfig, TrainConfig
from iflow.data.dataset import AuxSpec, make_dataset
from iflow.data.synthetic import SyntheticConfig, generate
from iflow.errors import UserError
from iflow.flows.build import LULinear, build_flow
from iflow.models.build import build_model
from iflow.models.decoders import GaussianObservation
from iflow.models.flow_decoder import noisy_flow, warm_start_from_flow
from iflow.models.identifiable_flow import IdentifiableFlow
from iflow.priors import ConditionalExpFamilyPrior
from iflow.runs import evaluate, load_run, plan_run, save_run, train, train_planned
from tests.helpers import randomize

pytestmark = pytest.mark.usefixtures("float64_default")  # closed forms in float64

LABELS, DIM = 3, 2


def prior() -> ConditionalExpFamilyPrior:
    torch.manual_seed(0)
    p = ConditionalExpFamilyPrior(DIM, "gauss", n_labels=LABELS)
    with torch.no_grad():
        p.net.table.normal_(0, 0.7)
    return p


def model_on(flow, noise_var: float, train_samples: int = 1):
    return noisy_flow(flow, prior(), GaussianObservation(DIM, noise_var), AuxSpec("labels", n_labels=LABELS),
                      hidden=16, layers=1, train_samples=train_samples).eval()  # fmt: skip


def test_the_decoder_inverts_the_flow_and_q_starts_at_g_of_x_scaled_by_the_noise():
    flow = randomize(build_flow("realnvp", DIM, depth=2, hidden=8), scale=0.3)
    model = model_on(flow, noise_var=0.04)
    x, u = torch.randn(20, DIM), torch.arange(20) % LABELS
    with torch.no_grad():
        z = flow(x)[0]
        torch.testing.assert_close(model.decoder(z), x)  # round trip g^{-1}(g(x)) = x
        torch.testing.assert_close(model.decoder(z.expand(4, -1, -1)), x.expand(4, -1, -1))  # sample axes
        mean, var = model.posterior(x, u)
    torch.testing.assert_close(mean, z)
    torch.testing.assert_close(var, torch.full_like(var, 0.04))
    assert model.decoder.flow is model.encoder.flow, "one flow, used both ways"


def test_bounds_are_ordered_elbo_iw_exact_on_a_linear_flow():
    """g(x) = W x + b: x | u ~ N(W^-1 (m_u - b), W^-1 V_u W^-T + s2 I) exactly."""
    s2 = 0.3
    flow = randomize(LULinear(DIM), seed=1, scale=0.5)
    model = model_on(flow, noise_var=s2)
    randomize(model.encoder.correction, seed=2, scale=0.3)  # a q that is not the posterior
    u = torch.arange(600) % LABELS
    with torch.no_grad():
        inverse = torch.linalg.inv(flow._create_lower_upper()[0] @ flow._create_lower_upper()[1])
        mean_z, var_z = model.prior.family.moments(model.prior.natural_params(u))
        mean_x = (mean_z - flow.bias) @ inverse.T
        cov = inverse @ torch.diag_embed(var_z) @ inverse.T + s2 * torch.eye(DIM)
        x = torch.distributions.MultivariateNormal(mean_x, cov).sample()
        exact = torch.distributions.MultivariateNormal(mean_x, cov).log_prob(x)
        torch.manual_seed(1)
        elbo = torch.stack([model.elbo(x, u) for _ in range(100)]).mean(0)
        iw8 = torch.stack([model.iw_bound(x, u, 8) for _ in range(30)]).mean(0)
        iw1000 = model.iw_bound(x, u, 1000)
    assert float(elbo.mean()) < float(iw8.mean()) - 0.05
    assert float(iw8.mean()) < float(iw1000.mean()) - 0.01
    assert float(iw1000.mean()) < float(exact.mean()) < float(iw1000.mean()) + 0.05


@pytest.mark.parametrize("noise_var", [1e-4, 1e-6])
def test_noiseless_limit_is_the_identifiable_flows_exact_likelihood(noise_var: float):
    """q = N(g(x), s2 I) is the posterior as s2 -> 0 when J_g is near the identity (here within about 0.3)."""
    flow = randomize(build_flow("realnvp", DIM, depth=2, hidden=8), scale=0.1)
    model = model_on(flow, noise_var=noise_var)
    exact_flow = IdentifiableFlow(flow, model.prior)
    x, u = torch.randn(200, DIM), torch.arange(200) % LABELS
    torch.manual_seed(0)
    with torch.no_grad():
        bound, exact = model.iw_bound(x, u, 2000), exact_flow.log_prob(x, u)
        wider = model_on(flow, noise_var=0.1).iw_bound(x, u, 2000)
    assert abs(float((bound - exact).mean())) < 0.01 and float((bound - exact).abs().mean()) < 0.04
    assert float((wider - exact).abs().mean()) > 0.1, "the noise does change the likelihood"


def test_gradients_reach_the_flow_the_prior_the_correction_and_the_posterior_flow():
    config = ModelConfig(model="noisy-iflow", flow="realnvp", dim=DIM, depth=1, hidden=8, posterior="flow",
                         learn_noise=True, aux=AuxSpec("labels", n_labels=LABELS))  # fmt: skip
    torch.manual_seed(0)
    model = randomize(build_model(config), scale=0.2)  # off the zero-initialised correction
    model.train()
    x, u = torch.randn(32, DIM), torch.arange(32) % LABELS
    model.loss(x, u).backward()
    assert model.train_samples == 8, "the IW bound by default"
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"hidden": 8, "encoder": "product"}, "encoder"), ({"beta": 2.0}, "beta"), ({"train_samples": 0}, "train_samples")],
)
def test_options_the_noisy_flow_does_not_read_are_refused(changes, message):
    with pytest.raises(UserError, match=message):
        build_model(ModelConfig(model="noisy-iflow", dim=DIM, aux=AuxSpec("labels", n_labels=LABELS), **changes))


def test_warm_started_from_a_trained_flow_it_trains_saves_and_loads(tmp_path):
    torch.set_default_dtype(torch.float32)
    synthetic = generate(SyntheticConfig(sources=2, segments=4, per_segment=250, layers=2, noise=0.1, seed=3))
    data = make_dataset(synthetic.x, synthetic.u, synthetic.s)
    flow_run, _ = train(data, ModelConfig(flow="realnvp", depth=2, hidden=16), TrainConfig(epochs=3), progress=False)
    config = ModelConfig(model="noisy-iflow", flow="realnvp", depth=2, hidden=16, iw_samples=16)
    plan = plan_run(data, config, TrainConfig(epochs=2, batch_size=100))
    warm_start_from_flow(plan.run.model, flow_run.model)
    x, u = torch.as_tensor(plan.train_data.x[:50]), torch.as_tensor(plan.train_data.u[:50])
    with torch.no_grad():
        torch.testing.assert_close(plan.run.model.posterior(x, u)[0], flow_run.model.encode(x, u))
    run, result = train_planned(plan, progress=False)
    metrics = evaluate(run, data)
    assert np.isfinite(metrics["log_likelihood"]) and metrics["mcc"] > 0.5
    assert math.isfinite(result.history[-1]["val_log_likelihood"])
    save_run(run, tmp_path / "run", result, metrics)
    loaded = load_run(tmp_path / "run")
    torch.manual_seed(0)
    again = evaluate(loaded, data)
    assert abs(again["mcc"] - metrics["mcc"]) < 1e-6
