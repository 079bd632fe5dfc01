"""Defaults per task: decided from the data, filled only where the config says None, recorded."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from iflow.config import ModelConfig, TrainConfig
from iflow.data.builtin import load_data
from iflow.data.dataset import make_dataset
from iflow.defaults import (
    SMALLEST_BATCH,
    TASK_DEFAULTS,
    VAE_FAMILY_DEFAULTS,
    batch_for,
    chooses_prior,
    max_epochs_for,
    model_defaults,
    task_of,
    train_defaults,
    training_rows,
)
from iflow.models.build import with_prior
from iflow.runs import plan_run


def labelled(n: int = 600, labels: int = 3):
    rng = np.random.default_rng(0)
    return make_dataset(rng.normal(size=(n, 3)), np.arange(n) % labels, name="labelled")


@pytest.mark.parametrize(
    ("data", "task"),
    [
        (lambda: load_data("digits"), "image"),
        (lambda: load_data("checkerboard"), "density"),
        (lambda: labelled(), "recovery"),
        (lambda: labelled(labels=1), "density"),
        (lambda: make_dataset(np.zeros((10, 2)), np.linspace(0, 1, 20).reshape(10, 2)), "recovery"),
    ],
)
def test_task_follows_from_the_data(data, task: str) -> None:
    assert task_of(data()) == task


def test_train_defaults_fill_only_what_is_left_at_none() -> None:
    filled = train_defaults(load_data("digits"), TrainConfig(lr=5e-3))
    image = TASK_DEFAULTS["image"]
    assert (filled.task, filled.lr, filled.batch_size, filled.max_epochs) == (
        "image",
        5e-3,
        image.batch_size,
        image.max_epochs,
    )
    assert filled.patience == image.patience
    assert train_defaults(load_data("digits"), TrainConfig(epochs=3)).max_epochs is None, "a fixed budget has no cap"
    assert train_defaults(load_data("digits"), filled) == filled, "filling is idempotent"
    assert train_defaults(load_data("digits"), TrainConfig(task="recovery")).lr == TASK_DEFAULTS["recovery"].lr


@pytest.mark.parametrize(
    ("rows", "batch"),
    [(40_000, 512), (36_000, 512), (32_768, 512), (32_767, 256), (20_000, 256), (10_000, 128), (5_000, 64), (600, 64)],
)
def test_recovery_batch_halves_until_an_epoch_has_its_steps(rows: int, batch: int) -> None:
    """``rows`` in all, 10% of them validation: the batch leaves at least 64 training steps an epoch,
    down to the smallest batch."""
    n = round(rows / 0.9)
    data = make_dataset(np.zeros((n, 2)), np.arange(n) % 4, name="sized")
    filled = train_defaults(data, TrainConfig())
    assert (filled.task, filled.batch_size) == ("recovery", batch)
    train_rows = n - round(0.1 * n)
    assert train_rows // batch >= TASK_DEFAULTS["recovery"].min_steps or batch == SMALLEST_BATCH
    assert train_defaults(data, TrainConfig(batch_size=1000)).batch_size == 1000, "a given batch wins"


@pytest.mark.parametrize(("rows", "max_epochs"), [(40_000, 50), (16_384, 50), (16_383, 100), (600, 100)])
def test_recovery_trains_longer_on_few_rows(rows: int, max_epochs: int) -> None:
    """``rows`` training rows (validation rows on top): fewer than 16 384 take at most 100 epochs, more 50;
    what is given wins, a fixed budget has no cap, and the VAE family keeps its own."""
    n = next(m for m in itertools.count(int(rows / 0.9) - 2) if training_rows(m, TrainConfig()) == rows)
    data = make_dataset(np.zeros((n, 2)), np.arange(n) % 4, name="sized")
    assert train_defaults(data, TrainConfig()).max_epochs == max_epochs
    assert train_defaults(data, TrainConfig(max_epochs=7)).max_epochs == 7
    assert train_defaults(data, TrainConfig(epochs=7)).max_epochs is None
    vae = VAE_FAMILY_DEFAULTS["recovery"]
    assert train_defaults(data, TrainConfig(), variational=True).max_epochs == vae.max_epochs
    one_label = make_dataset(np.zeros((n, 2)), np.zeros(n, dtype=int))
    assert train_defaults(one_label, TrainConfig()).max_epochs == TASK_DEFAULTS["density"].max_epochs, "density keeps its cap"


@pytest.mark.parametrize("variational", [False, True])
@pytest.mark.parametrize(("labels", "n"), [(4, 50), (1, 100)])
def test_default_batch_is_never_more_than_the_training_rows(labels: int, n: int, variational: bool) -> None:
    """Data smaller than the task's batch (64 for recovery, 256 for density and the VAE family) train on
    all their rows in one batch rather than failing before the first step; a given batch is kept."""
    data = make_dataset(np.zeros((n, 2)), np.arange(n) % labels, name="tiny")
    train_rows = n - round(0.1 * n)
    assert train_defaults(data, TrainConfig(), variational).batch_size == train_rows
    assert train_defaults(data, TrainConfig(batch_size=512), variational).batch_size == 512


def test_batch_rule_is_the_recovery_tasks_alone() -> None:
    """The density task and the VAE family keep one batch at every size."""
    small = make_dataset(np.zeros((2_000, 2)), np.zeros(2_000, dtype=np.int64), name="one label")
    assert train_defaults(small, TrainConfig()).batch_size == TASK_DEFAULTS["density"].batch_size
    assert train_defaults(labelled(), TrainConfig(), variational=True).batch_size == VAE_FAMILY_DEFAULTS["recovery"].batch_size


def test_flow_options_per_task_keep_what_is_given_and_leave_the_vae_family_alone() -> None:
    spline = model_defaults(ModelConfig(flow="spline", hidden=32), "image", has_flow=True)
    assert (spline.depth, spline.hidden) == (6, 32)
    assert model_defaults(ModelConfig(flow="realnvp"), "image", has_flow=True) == ModelConfig(flow="realnvp")
    assert model_defaults(ModelConfig(model="ivae"), "image", has_flow=False) == ModelConfig(model="ivae")


def test_an_unnamed_prior_is_the_gaussian_for_a_model_that_reads_one_and_unset_for_others() -> None:
    assert with_prior(ModelConfig()).prior == "gauss" and with_prior(ModelConfig(model="ivae")).prior == "gauss"
    assert with_prior(ModelConfig(prior="laplace")).prior == "laplace"
    assert with_prior(ModelConfig(model="tcl")).prior is None
    assert plan_run(labelled(), ModelConfig(), TrainConfig(epochs=1)).run.model_config.prior == "gauss"


def test_the_prior_is_chosen_on_labelled_data_below_the_full_batchs_rows_only() -> None:
    """Below ``choose_prior_below`` training rows (with 10% held out) and on integer labels only."""
    rows = TASK_DEFAULTS["recovery"].choose_prior_below
    assert rows == TASK_DEFAULTS["recovery"].batch_size * TASK_DEFAULTS["recovery"].min_steps
    n_below = math.ceil(rows / 0.9) - 2  # 10% held out: just under ``rows`` training rows
    assert chooses_prior(labelled(n_below, labels=8), TrainConfig())
    assert not chooses_prior(labelled(n_below + 4, labels=8), TrainConfig())
    assert not chooses_prior(labelled(n_below, labels=8), TrainConfig(val_fraction=0.01))  # more training rows
    continuous = make_dataset(np.zeros((100, 2)), np.linspace(0, 1, 200).reshape(100, 2))
    assert not chooses_prior(continuous, TrainConfig())
    assert not chooses_prior(labelled(labels=1), TrainConfig())  # the density task chooses none


def test_plan_run_records_the_task_and_its_values() -> None:
    plan = plan_run(load_data("checkerboard"), ModelConfig(), TrainConfig())
    density = TASK_DEFAULTS["density"]
    assert plan.run.train_config.task == "density"
    assert (plan.run.train_config.lr, plan.run.model_config.bins) == (density.lr, 16)
    recovery = plan_run(labelled(), ModelConfig(), TrainConfig()).run
    assert (recovery.train_config.lr, recovery.model_config.bins) == (TASK_DEFAULTS["recovery"].lr, None)


@pytest.mark.parametrize("model", ["ivae", "vae", "betavae", "tcvae"])
def test_plan_run_gives_the_vae_family_its_own_recovery_defaults_and_the_flow_keeps_its_own(model: str) -> None:
    vae, flow = VAE_FAMILY_DEFAULTS["recovery"], TASK_DEFAULTS["recovery"]
    filled = plan_run(labelled(), ModelConfig(model=model), TrainConfig()).run.train_config
    assert (filled.task, filled.lr, filled.batch_size, filled.max_epochs, filled.prior_fit) == (
        "recovery", vae.lr, vae.batch_size, vae.max_epochs, "none"
    )
    assert (filled.patience, filled.tolerance) == (vae.patience, vae.tolerance)
    assert (vae.lr, vae.batch_size, vae.prior_fit) != (flow.lr, flow.batch_size, flow.prior_fit), "a real difference"
    iflow = plan_run(labelled(), ModelConfig(model="iflow"), TrainConfig()).run.train_config
    assert (iflow.lr, iflow.batch_size, iflow.max_epochs, iflow.prior_fit) == (
        flow.lr, batch_for(540, flow), max_epochs_for(540, flow), "epoch"
    )
    given = plan_run(labelled(), ModelConfig(model=model), TrainConfig(lr=1e-4, prior_fit="epoch")).run.train_config
    assert (given.lr, given.prior_fit, given.batch_size) == (1e-4, "epoch", vae.batch_size), "what is given wins"


@pytest.mark.parametrize(
    ("model", "options", "start"),
    [
        ("ivae", {}, "flow"),  # the iVAE on recovery data starts from the identifiable flow
        ("ivae", {"latent_dim": 2}, "random"),  # fewer latents than dimensions: no flow has that z
        ("ivae", {"posterior": "flow"}, "flow"),
        ("vae", {}, "random"),  # the baselines stay baselines
        ("tcvae", {}, "random"),
        ("iflow", {}, "random"),
    ],
)
def test_the_ivae_starts_from_the_flow_where_it_can(model: str, options: dict, start: str) -> None:
    assert plan_run(labelled(), ModelConfig(model=model, **options), TrainConfig()).run.train_config.start == start
    given = plan_run(labelled(), ModelConfig(model="ivae"), TrainConfig(start="random")).run.train_config
    assert given.start == "random", "what is given wins"
    density = plan_run(labelled(labels=1), ModelConfig(model="ivae"), TrainConfig()).run.train_config
    assert density.start == "random", "one label: the density task, no identifiable flow to start from"


def test_the_vae_family_takes_the_task_defaults_where_it_has_none_of_its_own() -> None:
    assert "density" not in VAE_FAMILY_DEFAULTS
    filled = plan_run(labelled(labels=1), ModelConfig(model="ivae"), TrainConfig()).run.train_config
    assert (filled.task, filled.lr, filled.prior_fit) == ("density", TASK_DEFAULTS["density"].lr, "epoch")


def test_glow_on_digits_has_a_finite_readable_first_epoch_with_the_image_defaults() -> None:
    """At the recovery lr (2e-2) one Adam step took Glow's loss from about -72 to 1e4."""
    from iflow.runs import train

    torch.manual_seed(0)
    run, result = train(load_data("digits"), ModelConfig(flow="glow"), TrainConfig(max_epochs=1), progress=False)
    first = result.history[0]
    assert (run.train_config.task, result.stop_reason) == ("image", "max_epochs")
    assert math.isfinite(first["train_loss"]) and first["train_loss"] < 0, first
