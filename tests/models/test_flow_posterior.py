import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from iflow.config import ModelConfig, TrainConfig
from iflow.data.dataset import AuxSpec, make_dataset
from iflow.data.synthetic import SyntheticConfig, generate
from iflow.errors import UserError
from iflow.models.build import build_model
from iflow.models.decoders import GaussianObservation
from iflow.models.flow_posterior import FlowPosterior
from iflow.models.vae import VAE, GaussianEncoder, weighted_elbo
from iflow.networks import mlp
from iflow.priors import ConditionalExpFamilyPrior
from iflow.runs import encode_dataset, evaluate, load_run, save_run, train

pytestmark = pytest.mark.usefixtures("float64_default")  # closed forms and integrals in float64


def bent(flow: FlowPosterior, scale: float = 0.5, seed: int = 0) -> FlowPosterior:
    """The flow with random conditioner outputs (an untrained flow is the identity map)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for step in flow.transform._transforms:
            layer = step.transform_net.final_layer
            layer.weight.copy_(scale * torch.randn(layer.weight.shape, generator=gen))
    return flow


def test_untrained_flow_posterior_is_the_gaussian():
    torch.manual_seed(0)
    flow = FlowPosterior(3, 4, hidden=8, depth=2)
    x, mean, var = torch.randn(5, 4), torch.randn(5, 3), torch.rand(5, 3) + 0.2
    eps = torch.randn(7, 5, 3)
    z, log_q = flow(x, mean, var, eps)
    torch.testing.assert_close(z, mean + var.sqrt() * eps)
    torch.testing.assert_close(log_q, torch.distributions.Normal(mean, var.sqrt()).log_prob(z).sum(-1))


def test_flow_posterior_density_integrates_to_one_and_matches_its_samples():
    """On a 2-D grid: integral of q = 1, and E_q[z] by quadrature = the mean of draws from the sampling path."""
    torch.manual_seed(0)
    flow = bent(FlowPosterior(2, 3, hidden=16, depth=4), scale=0.3)
    x, mean, var = torch.tensor([[0.3, -1.0, 0.5]]), torch.tensor([[0.5, -1.0]]), torch.tensor([[0.6, 1.5]])
    grid = torch.linspace(-10, 10, 301)
    step = float(grid[1] - grid[0])
    z = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        density = torch.exp(flow.log_prob(z, x.expand(len(z), -1), mean.expand(len(z), -1), var.expand(len(z), -1)))
        draws, log_q = flow(x, mean, var, torch.randn(50_000, 1, 2, generator=torch.Generator().manual_seed(1)))
        draws, log_q = draws[:, 0], log_q[:, 0]
        again = flow.log_prob(draws[:2000], x.expand(2000, -1), mean.expand(2000, -1), var.expand(2000, -1))
    total = float(density.sum()) * step**2
    assert abs(total - 1) < 1e-3, total
    torch.testing.assert_close(log_q[:2000], again)  # sampling path and inverse path agree
    quadrature_mean = (density[:, None] * z).sum(0) * step**2
    standard_error = draws.std(0) / math.sqrt(len(draws))
    assert torch.all((draws.mean(0) - quadrature_mean).abs() < 4 * standard_error)
    gaussian_mean = mean[0]  # and the flow does bend q: its mean is far from the Gaussian's
    assert torch.any((quadrature_mean - gaussian_mean).abs() > 20 * standard_error)


def linear_gaussian_with_flow_posterior() -> tuple[VAE, torch.Tensor, torch.Tensor, torch.Tensor]:
    """z ~ N(m_u, diag v_u), x = W z + b + N(0, s2 I): exact log p(x | u) = log N(x; W m_u + b, W V W^T + s2 I).

    The posterior is an (untrained, randomly bent) flow posterior. Returns the model, x, u, exact log p(x | u).
    """
    torch.manual_seed(0)
    n, d, labels, s2 = 2, 3, 3, 0.2
    prior = ConditionalExpFamilyPrior(n, "gauss", n_labels=labels)
    with torch.no_grad():
        prior.net.table.normal_(0, 0.7)
    decoder = mlp(n, d, layers=0)
    encoder = GaussianEncoder(d, n, AuxSpec("labels", n_labels=labels), hidden=16, layers=1)
    flow = bent(FlowPosterior(n, d, hidden=16, depth=2), scale=0.3)
    model = VAE(encoder, decoder, GaussianObservation(d, s2), prior, posterior_flow=flow).eval()
    u = torch.arange(300) % labels
    with torch.no_grad():
        z = prior.sample(u)
        w, b = decoder[0].weight, decoder[0].bias
        x = z @ w.T + b + math.sqrt(s2) * torch.randn(300, d)
        prior_mean, prior_var = prior.family.moments(prior.natural_params(u))
        cov = w @ torch.diag_embed(prior_var) @ w.T + s2 * torch.eye(d)
        exact = torch.distributions.MultivariateNormal(prior_mean @ w.T + b, cov).log_prob(x)
    return model, x, u, exact


def test_flow_posterior_bounds_are_ordered_elbo_iw_exact():
    model, x, u, exact = linear_gaussian_with_flow_posterior()
    torch.manual_seed(1)
    with torch.no_grad():
        elbo = torch.stack([model.elbo(x, u) for _ in range(200)]).mean(0)  # (batch,)
        iw8 = torch.stack([model.iw_bound(x, u, 8) for _ in range(50)]).mean(0)
        iw500 = model.iw_bound(x, u, 500)
    assert float(elbo.mean()) < float(iw8.mean()) - 0.05
    assert float(iw8.mean()) < float(iw500.mean()) - 0.01
    assert float(iw500.mean()) < float(exact.mean())


def flow_ivae(train_samples: int = 1, bend: float = 0.3) -> VAE:
    config = ModelConfig(model="ivae", dim=3, latent_dim=2, hidden=16, depth=1, aux=AuxSpec("labels", n_labels=3),
                         posterior="flow", posterior_depth=2, train_samples=train_samples)  # fmt: skip
    torch.manual_seed(0)
    model = build_model(config)
    bent(model.posterior_flow, scale=bend)
    with torch.no_grad():
        model.encoder.net[-1].bias[2:] = 0.0  # unit posterior variances, so the flow's bends show
    return model


@pytest.mark.parametrize("train_samples", [1, 4])
def test_gradients_reach_encoder_flow_decoder_and_prior(train_samples):
    model = flow_ivae(train_samples)
    model.train()
    x, u = torch.randn(32, 3), torch.arange(32) % 3
    model.loss(x, u).backward()
    for part in (model.encoder, model.posterior_flow, model.decoder, model.prior):
        for name, p in part.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_flow_posterior_encode_is_deterministic_and_m_step_uses_its_moments():
    model = flow_ivae(bend=1.0)
    x, u = torch.randn(200, 3), torch.arange(200) % 3
    with torch.no_grad():
        z = model.encode(x, u)
        torch.testing.assert_close(model.encode(x, u), z)
        mean, var = model.posterior(x, u)
        assert torch.all(z != mean)  # the bent flow moves the latent off the Gaussian's mean
        torch.manual_seed(0)
        stats = model.expected_prior_stats(x, u)  # from 32 draws of q per point
        draws, _ = model.draw(x, mean, var, torch.randn(1000, *mean.shape))
    # the M-step averages the statistics over a label's points: compare those averages
    flow_mean, spread = draws.mean((0, 1)), draws.std(0).mean(0)
    tolerance = 5 * spread / math.sqrt(32 * len(x))
    assert torch.all((stats[..., 0].mean(0) - flow_mean).abs() < tolerance)  # E_q[z] of the flow's q
    assert (flow_mean - mean.mean(0)).abs().max() > 3 * tolerance.max()  # ... which is not the Gaussian's


def test_weighted_objective_with_unit_weights_is_the_elbo():
    """(a, b, c, d) = (1, 1, 1, 1) is the one-sample ELBO; (1, 1, beta, 1) is beta-TC-VAE's objective."""
    torch.manual_seed(0)
    z, mean, var = torch.randn(16, 2), torch.randn(16, 2), torch.rand(16, 2) + 0.3
    log_px, log_q, log_prior = torch.randn(16), torch.randn(16), torch.randn(16)
    elbo = weighted_elbo(log_px, log_q, log_prior, z, mean, var, (1.0, 1.0, 1.0, 1.0))
    torch.testing.assert_close(elbo, log_px - log_q + log_prior)
    heavy = weighted_elbo(log_px, log_q, log_prior, z, mean, var, (100.0, 1.0, 0.0, 10.0))
    assert not torch.allclose(heavy, 100 * elbo)


def test_weighted_objective_reaches_the_loss():
    """With a Laplace prior both KLs are the same one-draw estimate, so unit weights give the ELBO's loss exactly."""
    config = ModelConfig(model="ivae", prior="laplace", dim=3, latent_dim=2, hidden=16, depth=1, train_samples=1,
                         aux=AuxSpec("labels", n_labels=3))  # fmt: skip
    x, u = torch.randn(32, 3), torch.arange(32) % 3
    losses = []
    for weights in (None, [1.0, 1.0, 1.0, 1.0], [100.0, 1.0, 0.0, 10.0]):
        torch.manual_seed(0)
        model = build_model(replace(config, objective_weights=weights)).train()
        torch.manual_seed(1)
        losses.append(float(model.loss(x, u).detach()))
    assert abs(losses[0] - losses[1]) < 1e-9 * abs(losses[0])
    assert abs(losses[2] - losses[0]) > 10 * abs(losses[0])


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"posterior": "normal"}, "unknown posterior 'normal'"),
        ({"posterior": "flow", "model": "tcvae"}, "no total-correlation term"),
        ({"posterior": "flow", "latent_dim": 1}, "needs latent_dim >= 2"),
        ({"objective_weights": [1.0, 2.0]}, "four numbers"),
        ({"objective_weights": [100.0, 1, 0, 10], "train_samples": 8}, "re-weights the ELBO"),
        ({"posterior_depth": 0}, "posterior_depth must be >= 1"),
        ({"posterior": "flow", "model": "iflow"}, "is for the VAE family"),
    ],
)
def test_bad_posterior_options_raise_user_errors(changes, message):
    config = {"model": "ivae", "dim": 3, "latent_dim": 3, "aux": AuxSpec("labels", n_labels=3), **changes}
    with pytest.raises(UserError, match=message):
        build_model(ModelConfig(**config))


def test_flow_posterior_ivae_trains_saves_and_loads(tmp_path):
    torch.set_default_dtype(torch.float32)
    synthetic = generate(SyntheticConfig(sources=2, segments=4, per_segment=250, layers=2, noise=0.1, seed=3))
    data = make_dataset(synthetic.x, synthetic.u, synthetic.s)
    config = ModelConfig(model="ivae", posterior="flow", posterior_depth=2, hidden=16, depth=2, train_samples=4,
                         iw_samples=8)  # fmt: skip
    run, result = train(data, config, TrainConfig(epochs=3, batch_size=100, lr=3e-3, seed=0), progress=False)
    metrics = evaluate(run, data)
    assert np.isfinite(metrics["log_likelihood"]) and metrics["mcc"] > 0.5
    assert result.history[-1]["val_log_likelihood"] > result.history[0]["val_log_likelihood"]
    save_run(run, tmp_path / "run", result, metrics)
    loaded = load_run(tmp_path / "run")
    assert loaded.model.posterior_flow is not None
    np.testing.assert_allclose(encode_dataset(loaded, data), encode_dataset(run, data), rtol=1e-5, atol=1e-6)
