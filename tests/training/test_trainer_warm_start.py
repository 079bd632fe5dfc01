import numpy as np
import torch

from iflow.config import TrainConfig
from iflow.data.dataset import make_dataset
from iflow.flows.build import build_flow
from iflow.models.identifiable_flow import IdentifiableFlow
from iflow.priors import ConditionalExpFamilyPrior, StandardNormalPrior
from iflow.training.trainer import fit, refit_prior, warm_start


def segmented_data(seed=0):
    rng = np.random.default_rng(seed)
    u = np.repeat(np.arange(4), 150)
    x = rng.normal(rng.uniform(-3, 3, (4, 2))[u], rng.uniform(0.5, 2, (4, 2))[u]).astype(np.float32)
    return torch.tensor(x), torch.tensor(u)


def model(prior=None):
    torch.manual_seed(0)
    return IdentifiableFlow(build_flow("mlp", 2, depth=1), prior or ConditionalExpFamilyPrior(2, "gauss", n_labels=4))


def test_refit_prior_maximises_the_likelihood_over_the_prior():
    x, u = segmented_data()
    m = model()
    before = m.log_prob(x, u).mean().item()
    assert refit_prior(m, x, u)
    after = m.log_prob(x, u).mean().item()
    assert after > before + 0.5  # from N(0, 1) per segment to the segments' own mean and variance
    with torch.no_grad():  # any perturbation of the prior's table is worse: a maximum
        m.prior.net.table.add_(0.05 * torch.randn_like(m.prior.net.table))
    assert m.log_prob(x, u).mean().item() < after
    assert not refit_prior(model(StandardNormalPrior(2)), x, u)


def test_warm_start_runs_actnorm_init_before_the_m_step():
    x, u = segmented_data()
    m = model()
    warm_start(m, x, u)
    z = m.encode(x)
    actnorm = m.flow._transforms[0]
    assert bool(actnorm.initialized)
    table_mean = m.prior.natural_params(u)
    expected = ConditionalExpFamilyPrior(2, "gauss", n_labels=4)
    expected.fit_labels(z, u)
    torch.testing.assert_close(table_mean, expected.natural_params(u))


def test_fit_with_prior_fit_modes_keeps_a_finite_likelihood():
    x, u = segmented_data()
    data = make_dataset(x.numpy(), u.numpy())
    for mode in ("none", "init", "epoch"):
        result = fit(model(), data, TrainConfig(epochs=2, batch_size=64, prior_fit=mode), progress=False)
        assert np.isfinite(result.best_val_log_likelihood), mode


def test_fit_with_prior_fit_epoch_leaves_a_vae_at_its_elbo_m_step():
    """Every epoch's prior refit of a VAE is the M-step from its posteriors (not from their means alone)."""
    from iflow.config import ModelConfig
    from iflow.data.dataset import aux_spec, split_indices
    from iflow.models.build import build_model

    x, u = segmented_data()
    data = make_dataset(x.numpy(), u.numpy())
    torch.manual_seed(0)
    vae = build_model(ModelConfig(model="ivae", dim=2, hidden=8, depth=1, aux=aux_spec(u.numpy()), iw_samples=4))
    config = TrainConfig(epochs=2, batch_size=64, prior_fit="epoch")
    fit(vae, data, config, progress=False)
    train_idx, _ = split_indices(len(data), config.val_fraction, config.seed)
    table = vae.prior.net.table.clone()
    assert refit_prior(vae, x[train_idx], u[train_idx])  # the M-step is idempotent at fixed posteriors
    torch.testing.assert_close(vae.prior.net.table, table)
    vae.prior.fit_labels(vae.encode(x[train_idx], u[train_idx]).detach(), u[train_idx])
    assert not torch.allclose(vae.prior.net.table, table, atol=1e-3)  # the means-only fit is another prior
