import math

import pytest
import torch
from scipy import integrate, stats

from iflow.config import ModelConfig
from iflow.data.dataset import AuxSpec
from iflow.errors import UserError
from iflow.models.build import build_model
from iflow.models.decoders import GaussianObservation
from iflow.models.sampling import sample
from iflow.models.vae import (
    VAE,
    GaussianEncoder,
    gaussian_kl,
    gaussian_product,
    normal_log_prob,
    prior_moments,
    total_correlation,
)
from iflow.networks import mlp
from iflow.priors import ConditionalExpFamilyPrior, StandardNormalPrior

pytestmark = pytest.mark.usefixtures("float64_default")  # closed forms and integrals in float64


def test_gaussian_kl_matches_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    mq, vq = torch.tensor([0.3, -1.0]), torch.tensor([0.5, 2.0])
    mp, vp = torch.tensor([1.0, 0.5]), torch.tensor([1.5, 0.7])
    z = mq + vq.sqrt() * torch.randn(400_000, 2, generator=gen)
    log_q = torch.distributions.Normal(mq, vq.sqrt()).log_prob(z).sum(-1)
    log_p = torch.distributions.Normal(mp, vp.sqrt()).log_prob(z).sum(-1)
    mc = (log_q - log_p).mean()
    se = (log_q - log_p).std() / math.sqrt(len(z))
    assert abs(float(gaussian_kl(mq, vq, mp, vp)) - float(mc)) < 4 * float(se)


def conditional_vae(family: str) -> VAE:
    torch.manual_seed(0)
    prior = ConditionalExpFamilyPrior(2, family, n_labels=3)
    with torch.no_grad():
        prior.net.table.normal_(0, 0.7)
    encoder = GaussianEncoder(3, 2, AuxSpec("labels", n_labels=3), hidden=8, layers=1)
    return VAE(encoder, mlp(2, 3, 8, 1), GaussianObservation(3, 0.1), prior)


@pytest.mark.parametrize("family", ["gauss", "gauss-var", "laplace"])
def test_model_kl_matches_monte_carlo(family):
    """The KL the loss uses (analytic for Gaussian priors, MC otherwise) has the right expectation."""
    model = conditional_vae(family)
    x, u = torch.randn(4, 3, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        mean, var = model.encoder(x, u)
        z = mean + var.sqrt() * torch.randn(100_000, *mean.shape, generator=torch.Generator().manual_seed(2))
        log_q = torch.distributions.Normal(mean, var.sqrt()).log_prob(z).sum(-1)
        terms = log_q - model.prior(u).log_prob(z)  # (samples, batch)
        mc, se = terms.mean(0), terms.std(0) / math.sqrt(len(z))
        kl = torch.stack([model.kl(mean, var, zk, u) for zk in z[:2000]]).mean(0)
    tolerance = 4 * se if family != "laplace" else 4 * terms.std(0) / math.sqrt(2000)
    assert torch.all((kl - mc).abs() < tolerance), (kl, mc)


def test_laplace_kl_monte_carlo_matches_quadrature():
    model = conditional_vae("laplace")
    u = torch.tensor([0])
    mean, var = torch.tensor([[0.4, -0.2]]), torch.tensor([[0.3, 1.2]])
    scale = (-1 / model.prior.natural_params(u)[0, :, 0]).detach().numpy()
    exact = 0.0
    for i in range(2):
        q = stats.norm(float(mean[0, i]), math.sqrt(float(var[0, i])))
        p = stats.laplace(0, scale[i])
        exact += integrate.quad(lambda t, q=q, p=p: q.pdf(t) * (q.logpdf(t) - p.logpdf(t)), -30, 30)[0]
    z = mean + var.sqrt() * torch.randn(200_000, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        mc = model.kl(mean.expand_as(z), var.expand_as(z), z, u.expand(len(z))).mean()
    assert abs(float(mc) - exact) < 0.01


def linear_gaussian(exact_posterior: bool) -> tuple[VAE, torch.Tensor, torch.Tensor, torch.Tensor]:
    """z ~ N(m_u, v I), x = W z + b + N(0, s2 I) with W^T W diagonal, so q can be exact.

    Returns the model, x, u and the exact log p(x | u) per sample.
    """
    gen = torch.Generator().manual_seed(0)
    n, d, labels, v, s2 = 2, 3, 2, 0.8, 0.2
    means = torch.tensor([[1.0, -0.5], [-1.5, 0.7]])
    w = torch.linalg.qr(torch.randn(d, n, generator=gen))[0] * torch.tensor([1.5, 0.7])  # orthogonal columns
    b = torch.tensor([0.3, -0.2, 0.1])
    prior = ConditionalExpFamilyPrior(n, "gauss", n_labels=labels)
    decoder = mlp(n, d, layers=0)
    encoder = GaussianEncoder(d, n, AuxSpec("labels", n_labels=labels), layers=0)
    precision = 1 / v + (w * w).sum(0) / s2  # diagonal posterior precision, same for every u
    with torch.no_grad():
        prior.net.table.copy_(
            prior.family.unconstrain(torch.stack([means / v, torch.full_like(means, -0.5 / v)], -1)).view(labels, -1)
        )
        decoder[0].weight.copy_(w)
        decoder[0].bias.copy_(b)
        encoder.net[0].weight.zero_()
        encoder.net[0].weight[:n] = (w / s2).T / precision[:, None]
        encoder.net[0].bias.zero_()
        encoder.net[0].bias[n:] = -torch.log(precision)
        encoder.aux.weight.zero_()
        encoder.aux.weight[:, :n] = (means / v - (w.T @ b) / s2) / precision
        if not exact_posterior:
            encoder.net[0].weight.add_(0.3 * torch.randn(encoder.net[0].weight.shape, generator=gen))
            encoder.aux.weight.add_(0.3 * torch.randn(encoder.aux.weight.shape, generator=gen))
    model = VAE(encoder, decoder, GaussianObservation(d, s2), prior).eval()
    u = torch.arange(400) % labels
    z = means[u] + math.sqrt(v) * torch.randn(400, n, generator=gen)
    x = z @ w.T + b + math.sqrt(s2) * torch.randn(400, d, generator=gen)
    marginal = torch.distributions.MultivariateNormal(means @ w.T + b, v * w @ w.T + s2 * torch.eye(d))
    exact = marginal.log_prob(x[:, None, :])[torch.arange(400), u]
    return model, x, u, exact


def test_exact_posterior_makes_every_bound_exact():
    model, x, u, exact = linear_gaussian(exact_posterior=True)
    torch.manual_seed(0)
    with torch.no_grad():
        torch.testing.assert_close(model.log_prob(x, u), exact)  # every importance weight equals p(x | u)
        elbo = torch.stack([model.elbo(x, u) for _ in range(400)])
    # the one-sample ELBO is unbiased for log p(x | u) here; its mean over 160 000 draws is within 0.02
    assert abs(float(elbo.mean() - exact.mean())) < 0.02


def test_elbo_below_importance_weighted_bound_below_exact():
    model, x, u, exact = linear_gaussian(exact_posterior=False)
    torch.manual_seed(0)
    with torch.no_grad():
        elbo = torch.stack([model.elbo(x, u) for _ in range(200)]).mean()
        model.iw_samples = 10
        iw10 = model.log_prob(x, u).mean()
        model.iw_samples = 1000
        iw1000 = model.log_prob(x, u).mean()
    exact = exact.mean()
    assert elbo < iw10 - 0.05
    assert iw10 < iw1000 - 0.01
    assert iw1000 < exact
    assert exact - iw1000 < 0.1 * (exact - elbo)  # K = 1000 closes most of the gap


def test_importance_weighted_objective_is_the_bound_and_k1_is_the_elbo():
    """train_samples = K trains -IW_K, which lies between -log p(x | u) and the negative ELBO."""
    model, x, u, exact = linear_gaussian(exact_posterior=False)
    model.train()
    with torch.no_grad():
        torch.manual_seed(0)
        elbo_loss = torch.stack([model.loss(x, u) for _ in range(200)]).mean()
        model.train_samples = 50
        torch.manual_seed(0)
        iw_loss = torch.stack([model.loss(x, u) for _ in range(20)]).mean()
        torch.manual_seed(1)
        loss = model.loss(x, u)
        torch.manual_seed(1)
        torch.testing.assert_close(loss, -model.iw_bound(x, u, 50).mean())
    assert -exact.mean() < iw_loss < elbo_loss - 0.05
    model.train_samples = 4
    model.loss(x, u).backward()  # the bound's gradient reaches the encoder, decoder and prior
    for part in (model.encoder, model.decoder, model.prior):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters() if p.requires_grad)


def test_importance_weighted_objective_refuses_elbo_weights():
    model, *_ = linear_gaussian(exact_posterior=True)
    with pytest.raises(ValueError, match="needs beta 1"):
        VAE(model.encoder, model.decoder, model.observation, model.prior, beta=4.0, train_samples=5)


def test_encode_is_the_posterior_mean():
    model, x, u, _ = linear_gaussian(exact_posterior=True)
    torch.manual_seed(0)
    with torch.no_grad():
        z = model.encode(x, u)
        torch.testing.assert_close(z, model.encode(x, u))  # deterministic
        mean, var = model.encoder(x, u)
        torch.testing.assert_close(z, mean)
        draws = mean + var.sqrt() * torch.randn(20_000, *mean.shape)
    # the exact posterior mean: the average of posterior draws
    torch.testing.assert_close(draws.mean(0), z, atol=0.03, rtol=0)


def test_kl_annealing_counts_training_steps_only():
    model, x, u, _ = linear_gaussian(exact_posterior=True)
    model.anneal_steps = 4
    model.train()
    weights = [float(model.kl_weight()) for _ in range(6)]
    assert weights == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    model.eval()
    model.step.zero_()
    model.loss(x, u)
    assert int(model.step) == 0
    assert "step" in model.state_dict()


def test_beta_scales_the_kl_term():
    model, x, u, _ = linear_gaussian(exact_posterior=False)
    torch.manual_seed(0)
    with torch.no_grad():
        mean, var = model.encoder(x, u)
        kl = model.kl(mean, var, mean, u).mean()
        torch.manual_seed(1)
        base = model.loss(x, u)
        model.beta = 3.0
        torch.manual_seed(1)
        heavy = model.loss(x, u)
    torch.testing.assert_close(heavy - base, 2 * kl)


def test_total_correlation_is_larger_for_dependent_latents():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 1, generator=gen), torch.randn(256, 1, generator=gen)
    var = torch.full((256, 2), 0.01)
    independent = torch.cat([a, b], 1)
    dependent = torch.cat([a, a + 0.1 * b], 1)
    tc_ind = total_correlation(independent, independent, var).mean()
    tc_dep = total_correlation(dependent, dependent, var).mean()
    assert tc_dep > tc_ind + 1.0


@pytest.mark.parametrize("name", ["ivae", "vae", "betavae", "tcvae"])
def test_models_build_train_and_score(name):
    torch.manual_seed(0)
    config = ModelConfig(model=name, dim=6, latent_dim=3, aux=AuxSpec("labels", n_labels=4), hidden=16, iw_samples=5)
    model = build_model(config)
    assert isinstance(model.prior, StandardNormalPrior) == (name != "ivae")
    x, u = torch.randn(32, 6), torch.arange(32) % 4
    loss = model.train().loss(x, u)
    loss.backward()
    assert all(
        p.grad is not None
        for p in model.parameters()
        if p.requires_grad and p is not getattr(model.encoder.aux, "weight", None)
    )
    model.eval()
    assert model.log_prob(x, u).shape == (32,)
    assert model.encode(x, u).shape == (32, 3)
    assert sample(model, 5, u[:5]).shape == (5, 6)
    assert model.likelihood != "exact"


def test_ivae_encoder_and_prior_see_u():
    config = ModelConfig(model="ivae", dim=4, aux=AuxSpec("labels", n_labels=3), hidden=8)
    model = build_model(config)
    assert isinstance(model.prior, ConditionalExpFamilyPrior)
    x, u = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    model.train().loss(x, u).backward()
    assert model.encoder.aux.weight.grad.abs().sum() > 0
    assert model.prior.net.table.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": "iflow", "latent_dim": 2}, "latent_dim is for the VAE family"),
        ({"model": "ivae", "obs": "laplace"}, "unknown obs"),
        ({"model": "ivae", "noise_var": 0.0}, "noise_var must be > 0"),
        ({"model": "flow", "obs": "bernoulli"}, "obs bernoulli is for the VAE family"),
        ({"model": "ivae", "train_samples": 0}, "train_samples must be >= 1"),
        ({"model": "iflow", "train_samples": 4}, "train_samples is for the VAE family"),
        ({"model": "betavae", "train_samples": 4}, "which has no beta, total-correlation or annealing"),
        ({"model": "tcvae", "train_samples": 4, "beta": 1.0}, "which has no beta, total-correlation or annealing"),
        ({"model": "ivae", "train_samples": 4, "anneal_steps": 10}, "which has no beta, total-correlation or annealing"),
        ({"model": "ivae", "encoder": "product", "prior": "laplace"}, "use prior gauss or gauss-var, not laplace"),
        ({"model": "iflow", "encoder": "product"}, "encoder product is for the VAE family"),
        ({"model": "ivae", "encoder": "attention"}, "unknown encoder 'attention'"),
    ],
)
def test_bad_model_options_raise_user_errors(changes, message):
    config = ModelConfig(dim=4, aux=AuxSpec("labels", n_labels=2), **changes)
    with pytest.raises(UserError, match=message):
        build_model(config)


def test_gaussian_product_is_the_normalised_product_of_the_densities():
    """Against brute force on a grid: the product of two normal densities, normalised by quadrature."""
    grid = torch.linspace(-12, 12, 240_001)
    cases = [(0.3, 0.5, -1.0, 2.0), (2.0, 1e-4, -3.0, 0.7), (-1.5, 4.0, 1.0, 1e-3), (0.0, 1.0, 0.0, 1.0)]
    for case in cases:
        mean_a, var_a, mean_b, var_b = (torch.tensor(v) for v in case)
        log_density = normal_log_prob(grid, mean_a, var_a) + normal_log_prob(grid, mean_b, var_b)
        density = torch.exp(log_density - log_density.max())
        density = density / torch.trapezoid(density, grid)
        mean = torch.trapezoid(grid * density, grid)
        var = torch.trapezoid((grid - mean) ** 2 * density, grid)
        got_mean, got_var = gaussian_product(mean_a, var_a, mean_b, var_b)
        torch.testing.assert_close(got_mean, mean, rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(got_var, var, rtol=1e-5, atol=1e-9)
        normal = torch.exp(normal_log_prob(grid, got_mean, got_var))
        assert float((normal - density).abs().max()) < 1e-6 * float(density.max())


def product_ivae(prior: str = "gauss", train_samples: int = 1) -> VAE:
    torch.manual_seed(0)
    config = ModelConfig(model="ivae", dim=4, latent_dim=2, prior=prior, aux=AuxSpec("labels", n_labels=3),
                         hidden=8, encoder="product", train_samples=train_samples)  # fmt: skip
    model = build_model(config)
    with torch.no_grad():
        model.prior.net.table.normal_(0, 0.7)
        model.encoder.net[-1].bias[2:] = math.log(0.5)  # posterior factor as broad as the prior
    return model


@pytest.mark.parametrize("prior", ["gauss", "gauss-var"])
def test_product_posterior_is_encoder_times_prior_everywhere(prior):
    """q(z | x, u) = N(m(x), v(x)) p(z | u), normalised; encode, the KL, the M-step statistics and the
    importance weights all see it, and the encoder itself ignores u."""
    model = product_ivae(prior).eval()
    assert model.encoder.aux is None
    gen = torch.Generator().manual_seed(4)
    x, u = torch.randn(6, 4, generator=gen), torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        factor_mean, factor_var = model.encoder(x, u)
        prior_mean, prior_var = prior_moments(model.prior, u)
        mean, var = model.posterior(x, u)
        torch.testing.assert_close((mean, var), gaussian_product(factor_mean, factor_var, prior_mean, prior_var))
        assert torch.all(var < torch.minimum(factor_var, prior_var))
        torch.testing.assert_close(model.encode(x, u), mean)
        torch.testing.assert_close(model.encode(x, u.roll(1)), model.posterior(x, u.roll(1))[0])
        assert not torch.allclose(model.encode(x, u.roll(1)), mean)  # u moves the posterior
        torch.testing.assert_close(
            model.expected_prior_stats(x, u), model.prior.family.gaussian_expected_stats(mean, var)
        )
        # importance weights at the exact draw z = mean + sqrt(var) eps: the same noise reproduces the sample
        torch.manual_seed(5)
        log_w = model.log_weights(x, u, 1)[0]
        torch.manual_seed(5)
        z = mean + var.sqrt() * torch.randn(1, *mean.shape)
        log_q = torch.distributions.Normal(mean, var.sqrt()).log_prob(z).sum(-1)
        expected = model.observation.log_prob(x, model.decoder(z)) + model.prior(u).log_prob(z) - log_q
        torch.testing.assert_close(log_w, expected[0])


@pytest.mark.parametrize("train_samples", [1, 4])
def test_product_posterior_gradients_reach_encoder_and_prior(train_samples):
    model = product_ivae(train_samples=train_samples).train()
    x, u = torch.randn(12, 4), torch.arange(12) % 3
    model.loss(x, u).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.prior.net.table.grad.abs().sum() > 0
    assert model.encoder.net[0].weight.grad.abs().sum() > 0


def test_product_posterior_m_step_is_a_fixed_point_of_the_ml_prior():
    """With a product posterior the M-step changes q too; iterated, it converges to the prior whose
    per-label moments match the posteriors' (the ELBO's stationary point in the prior). The factor
    must be narrower than the spread of its means, else that point is a prior of variance 0 (collapse)."""
    from iflow.training.trainer import refit_prior

    model = product_ivae().eval()
    with torch.no_grad():
        model.encoder.net[-1].bias[2:] = math.log(0.01)
        model.encoder.net[-1].weight[:2] *= 30  # factor means spread over ~1
    x, u = torch.randn(300, 4, generator=torch.Generator().manual_seed(6)), torch.arange(300) % 3
    for _ in range(200):
        refit_prior(model, x, u)
    with torch.no_grad():
        mean, var = model.posterior(x, u)
        prior_mean, prior_var = prior_moments(model.prior, u)
        for label in range(3):
            rows = u == label
            moment = mean[rows].mean(0)
            second = (var[rows] + mean[rows] ** 2).mean(0) - moment**2
            torch.testing.assert_close(prior_mean[rows][0], moment, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(prior_var[rows][0], second, rtol=1e-4, atol=1e-5)


def test_product_posterior_needs_a_gaussian_prior():
    encoder = GaussianEncoder(3, 2, None, hidden=8, layers=1)
    prior = ConditionalExpFamilyPrior(2, "laplace", n_labels=3)
    with pytest.raises(ValueError, match="needs a Gaussian prior"):
        VAE(encoder, mlp(2, 3, 8, 1), GaussianObservation(3, 0.1), prior, product_posterior=True)


def prior_term(model: VAE, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The part of the ELBO that depends on the prior, E_q[log p(z | u)] summed over the batch (exact)."""
    mean, var = model.encoder(x, u)
    family = model.prior.family
    eta = model.prior.natural_params(u)
    expected = family.gaussian_expected_stats(mean, var)  # every family here has log Q(z) = 0
    return ((expected * eta).sum(-1) - family.log_normalizer(eta)).sum()


@pytest.mark.parametrize("family", ["gauss", "gauss-var", "laplace"])
def test_vae_m_step_maximises_the_elbo_over_the_prior(family):
    """refit_prior on a VAE gives the prior table that a brute-force optimiser of the ELBO finds."""
    from iflow.training.trainer import refit_prior

    model = conditional_vae(family)
    gen = torch.Generator().manual_seed(3)
    x, u = torch.randn(300, 3, generator=gen), torch.arange(300) % 3
    with torch.no_grad():  # broad posteriors, so that E_q[z^2] differs from the squared mean
        model.encoder.net[-1].bias[2:] = math.log(0.5)
    brute = conditional_vae(family)
    brute.load_state_dict(model.state_dict())
    optimizer = torch.optim.LBFGS([brute.prior.net.table], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure():
        optimizer.zero_grad()
        loss = -prior_term(brute, x, u) / len(x)
        loss.backward()
        return loss

    optimizer.step(closure)
    assert refit_prior(model, x, u)
    with torch.no_grad():
        best, found = prior_term(model, x, u), prior_term(brute, x, u)
        torch.testing.assert_close(model.prior.natural_params(u), brute.prior.natural_params(u), rtol=1e-4, atol=1e-5)
        assert best >= found - 1e-8
        # the ELBO itself (same noise for both) agrees: only the prior's block changed
        torch.manual_seed(0)
        elbo_m = model.elbo(x, u).sum()
        torch.manual_seed(0)
        elbo_b = brute.elbo(x, u).sum()
        assert elbo_m >= elbo_b - 1e-6 * abs(float(elbo_b))
        if family == "gauss":  # the posterior variance counts: not the fit to the posterior means alone
            means_only = conditional_vae(family)
            means_only.load_state_dict(model.state_dict())
            means_only.prior.fit_labels(model.encode(x, u), u)
            assert prior_term(means_only, x, u) < best - 1.0


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"model": "ivae"}, 8),
        ({"model": "vae"}, 8),
        ({"model": "ivae", "train_samples": 1}, 1),
        ({"model": "ivae", "beta": 4.0}, 1),
        ({"model": "ivae", "anneal_steps": 100}, 1),
        ({"model": "ivae", "objective_weights": [100.0, 1.0, 0.0, 10.0]}, 1),
        ({"model": "betavae"}, 1),
        ({"model": "tcvae"}, 1),
    ],
)
def test_the_vae_family_trains_the_importance_weighted_bound_by_default_where_it_applies(options, expected):
    config = ModelConfig(dim=3, aux=AuxSpec("labels", n_labels=3), latent_dim=3, **options)
    assert build_model(config).train_samples == expected
