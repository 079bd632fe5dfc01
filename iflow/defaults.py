"""Defaults per task, decided once from what the data are (:func:`task_of`) and filled into
the config fields left at None (:func:`with_task_defaults`, called by :func:`iflow.runs.plan_run`).

- ``recovery``: continuous data with an auxiliary variable that varies (several labels, or
  float u): the source-recovery settings (lr 2e-2, batch 512, halved down to 64 on data too
  small for 64 steps an epoch: :func:`batch_for`); on integer labels with fewer training rows
  than the full batch's 64 steps, a flow's prior left unnamed is chosen by held-out likelihood
  among the label priors, as ``--prior auto`` (:func:`chooses_prior`); on fewer rows than batch
  256's 64 steps, at most 100 epochs instead of 50 (:func:`max_epochs_for`).
- ``density``: continuous data without one (a single label: the 2-D toy densities, a CSV):
  density settings (lr 1e-3, batch 256, splines with 16 bins).
- ``image``: discrete or image data (dequantised, e.g. digits): the settings the density
  benchmark measured (lr 1e-3, batch 64; spline depth 6 with 128 hidden units, Glow depth 4).

The VAE family (models trained on a bound) has its own recovery settings, :data:`VAE_FAMILY_DEFAULTS`.

Every task trains to convergence (see :mod:`iflow.training.stopping`) within its ``max_epochs``.
The filled values (and the task) are recorded in ``config.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .config import ModelConfig, TrainConfig
from .data.dataset import Dataset, validation_rows


@dataclass(frozen=True)
class TaskDefaults:
    """What a task sets when the config leaves it at None; ``flow_options``: per flow name."""

    lr: float
    batch_size: int
    max_epochs: int
    patience: int
    tolerance: float
    flow_options: dict[str, dict] = field(default_factory=dict)
    prior_fit: str = "epoch"  # the closed-form M-step of a label prior (TrainConfig.prior_fit)
    min_steps: int = 0  # the batch halves (not below SMALLEST_BATCH) until an epoch has this many steps
    # a flow's label prior left unnamed is chosen by held-out likelihood among the label priors (--prior auto)
    # on integer labels with fewer training rows than this; the Gaussian otherwise
    choose_prior_below: int = 0
    # on fewer training rows than this, at most ``few_rows_max_epochs`` epochs instead of ``max_epochs``
    few_rows_below: int = 0
    few_rows_max_epochs: int = 0
    rate_cut: float = 0.0  # TrainConfig.rate_cut: back to the best state at half the rate (0: off)
    start: str = "random"  # TrainConfig.start where the model can take it (iflow.training.flow_start.start_for)


SMALLEST_BATCH = 64


TASK_DEFAULTS = {
    # patience 16, not 8 (benchmarks/robustness.md): at lr 2e-2 the held-out log-likelihood of a small data set can
    # collapse early and recover as the cosine decays; patience 8 ended 7 of 33 runs at 20 segments x 500 points
    # on such a collapse (epochs 12-49). With 16, 4 of the 7 train on and gain (0.632 -> 0.792, 0.649 -> 0.879,
    # 0.560 -> 0.616, 0.529 -> 0.546), 3 keep their MCC, none loses; every run the rule never stopped (all 18 of
    # the full-size cells, the default benchmark's) is step for step the same. max_epochs 80 lowered the default
    # benchmark's gap (seeds 1, 4: 0.177 -> 0.122, 0.247 -> 0.214) at 126-130 CPU s, past the 120 s target.
    # 16 is not always enough: one 40 x 1000 run (leaky0.2-cond25-laplace, seed 3) stopped at epoch 30 with
    # MCC 0.586 and reaches 0.833 in all 50 epochs.
    # min_steps 64 (benchmarks/robustness.md, "Batch size"): at 20 segments x 500 points an epoch of batch 512 is
    # 17 steps; batch 128 (70 steps, as many as batch 512 makes at 40 x 1000) raised the mean MCC of all 11 cells
    # measured there, by 0.02 to 0.16, and batch 256 at 20 x 1000 and 40 x 500 raised both cells' lowest seeds
    # (0.893 -> 0.949, 0.923 -> 0.975). At 40 x 1000 batch 256 did not pay (MCC 0.979, 0.995, 0.997 against 0.993,
    # 0.989, 0.996, at 1.5x the time), so data of at least 32 768 training rows keep 512: those runs are unchanged.
    # choose_prior_below 32 768, the rows below which the batch halves (benchmarks/robustness.md, "Selection without
    # ground truth"): on the 11 cells measured at 20 segments x 500 points the prior chosen by held-out likelihood
    # among gauss, student-t and shape had a higher mean MCC than the Gaussian on every one (+0.005 to +0.093) and
    # met the recovery target on 7 against 2; at 40 x 1000, where the Gaussian meets it on 6 of the 7 cells
    # measured, the choice moved those 6 by -0.003 to +0.015 for three trainings, past the 2-minute target, so
    # data of at least 32 768 training rows keep the Gaussian.
    # few_rows_below 16 384, at most 100 epochs there (benchmarks/robustness.md, "What limits the cells that miss"):
    # at 20 segments x 500 points (batch 128; 50 epochs take 41-58 CPU s there against 75-81 at 40 x 1000) the
    # prior chosen as above, trained within 100 epochs instead of 50, had a higher mean MCC on 10 of the 11 cells
    # (d = 8 0.696 -> 0.885, 4 layers 0.944 -> 0.971, leaky0.2-cond25-laplace 0.883 -> 0.919, cond25 0.875 ->
    # 0.888, the others +0.002 to +0.016) and a lower one on uniform sources (0.975 -> 0.952: one data set 0.951 ->
    # 0.869 at a higher likelihood), for 1.4-2.3x the time. Segments20 and points500 (18 000 rows, batch 256) meet
    # the target in 50 epochs, so the longer cap starts where the batch halves to 128.
    # rate_cut 0.25 (benchmarks/robustness.md, "What limits the cells that miss", "Back to the best state"): of the
    # Gaussian prior's 33 runs at 20 segments x 500 points, 15 had stopped before epoch 100, on a plateau at a rate
    # near 2e-2 or after a collapse; with the cut 10 went back to their best state at half the rate, and the mean
    # MCC rose on 6 of the 7 cells that changed (cond25 0.792 -> 0.898, lowest 0.540 -> 0.759;
    # leaky0.2-cond25-laplace 0.833 -> 0.881) and fell on one (layers4 0.896 -> 0.890). At 40 x 1000 the Gaussian's
    # leaky0.2-cond25-laplace seed 3 went from 0.589 (stopped at epoch 31) to 0.858. A run with no return is step
    # for step the same: the default benchmark's five runs are, to the last digit. The VAE family, density and
    # image tasks keep 0, the settings their rows were measured with.
    "recovery": TaskDefaults(lr=2e-2, batch_size=512, max_epochs=50, patience=16, tolerance=0.01, min_steps=64,
                             choose_prior_below=512 * 64, few_rows_below=256 * 64, few_rows_max_epochs=100,
                             rate_cut=0.25),
    # tolerance 0.01 stopped checkerboard at epoch 20 (NLL - H 0.078): on 2-D densities the last gains are smaller
    "density": TaskDefaults(
        lr=1e-3, batch_size=256, max_epochs=50, patience=8, tolerance=0.001, flow_options={"spline": {"bins": 16}}
    ),
    "image": TaskDefaults(  # epochs of 20 steps: patience 8 stopped Glow at epoch 32 of 100 (2.201 bits/dim)
        lr=1e-3, batch_size=64, max_epochs=100, patience=20, tolerance=0.01,
        flow_options={"spline": {"depth": 6, "hidden": 128}, "glow": {"depth": 4, "hidden": 64}},
    ),
}  # fmt: skip

# The VAE family's own settings where they differ from the flows' (benchmarks/ivae.md, "defaults" part): at the
# flows' lr 2e-2 and batch 512 a bare --model ivae scored below x itself on the noisy benchmark; the M-step
# maximises the ELBO, not the importance-weighted bound the iVAE trains, and with it the iVAE fell below x on
# data seeds 1 and 3 (0.507, 0.508 against 0.579, 0.533; 30 epochs), so it is off. At most 90 epochs: 60 left
# seeds 1 and 4 below x (0.567, 0.639 against 0.579, 0.652); 90 takes seed 4 above (0.661), seed 1 stays below
# (0.559), as do leaky-ReLU mixing and 4 layers (benchmarks/ivae.md says why); at most about 80 CPU s a model.
# start flow (benchmarks/ivae.md, "Defaults"): from random weights a bare --model ivae ended below x itself on
# noisy benchmark seed 1 and on leaky-ReLU mixing (0.559 and 0.477 against x's 0.579 and 0.547); started from
# the identifiable flow it scored above x on every noisy data set measured, and the baselines (vae, betavae,
# tcvae), which the flow's identifiable latents would no longer be a baseline for, keep random weights.
VAE_FAMILY_DEFAULTS = {
    "recovery": TaskDefaults(lr=3e-3, batch_size=256, max_epochs=90, patience=8, tolerance=0.01, prior_fit="none",
                             start="flow"),
}  # fmt: skip


def defaults_for(task: str, variational: bool) -> TaskDefaults:
    """The settings of ``task``; for the VAE family (``variational``) its own where it has them."""
    return VAE_FAMILY_DEFAULTS.get(task, TASK_DEFAULTS[task]) if variational else TASK_DEFAULTS[task]


def task_of(data: Dataset) -> str:
    """``image`` for discrete or image data, ``density`` when u is one label for every row,
    ``recovery`` otherwise (see the module docstring)."""
    if data.image_shape is not None or np.any(data.dequantize):
        return "image"
    if data.u.ndim == 1 and (len(data.u) == 0 or data.u.min() == data.u.max()):
        return "density"
    return "recovery"


def batch_for(train_rows: int, d: TaskDefaults) -> int:
    """``d.batch_size``, halved while an epoch over ``train_rows`` rows would have fewer than
    ``d.min_steps`` steps, but not below :data:`SMALLEST_BATCH`; never more than ``train_rows``
    (a default that asked for more rows than there are would stop training before its first step)."""
    batch = d.batch_size
    while batch > SMALLEST_BATCH and train_rows // batch < d.min_steps:
        batch //= 2
    return max(1, min(batch, train_rows))


def max_epochs_for(train_rows: int, d: TaskDefaults) -> int:
    """``d.max_epochs``, or ``d.few_rows_max_epochs`` on fewer than ``d.few_rows_below`` ``train_rows``."""
    return d.few_rows_max_epochs if train_rows < d.few_rows_below else d.max_epochs


def train_defaults(data: Dataset, config: TrainConfig, variational: bool = False) -> TrainConfig:
    """``config`` with its task (from ``data`` unless given) and that task's values where it has None
    (``variational``: the VAE family's, see :func:`defaults_for`)."""
    task = config.task or task_of(data)
    d = defaults_for(task, variational)
    train_rows = training_rows(len(data), config)
    capped = config.max_epochs is None and config.epochs is None  # to convergence, the cap left to the task
    return replace(
        config,
        task=task,
        lr=d.lr if config.lr is None else config.lr,
        batch_size=batch_for(train_rows, d) if config.batch_size is None else config.batch_size,
        max_epochs=max_epochs_for(train_rows, d) if capped else config.max_epochs,
        patience=d.patience if config.patience is None else config.patience,
        tolerance=d.tolerance if config.tolerance is None else config.tolerance,
        prior_fit=d.prior_fit if config.prior_fit is None else config.prior_fit,
        rate_cut=d.rate_cut if config.rate_cut is None else config.rate_cut,
    )


def model_defaults(model_config: ModelConfig, task: str, has_flow: bool) -> ModelConfig:
    """A flow's options the task sets and ``model_config`` leaves at None; a model without a flow as given."""
    if not has_flow:
        return model_config
    options = TASK_DEFAULTS[task].flow_options.get(model_config.flow, {})
    return replace(model_config, **{k: v for k, v in options.items() if getattr(model_config, k) is None})


def chooses_prior(data: Dataset, config: TrainConfig) -> bool:
    """Whether a flow's label prior left unnamed is chosen among the label priors by held-out likelihood
    (as ``--prior auto`` does): integer labels and :func:`chooses_prior_on` the training rows."""
    return data.u.ndim == 1 and chooses_prior_on(training_rows(len(data), config), config.task or task_of(data))


def chooses_prior_on(train_rows: int, task: str) -> bool:
    """Whether ``task`` chooses the prior of labelled data with ``train_rows`` training rows: fewer than its
    ``choose_prior_below``."""
    return train_rows < TASK_DEFAULTS[task].choose_prior_below


def training_rows(n: int, config: TrainConfig) -> int:
    """How many of ``n`` rows train (the rest validate: ``config.val_fraction``)."""
    return n - validation_rows(n, config.val_fraction)


def with_task_defaults(
    data: Dataset, model_config: ModelConfig, train_config: TrainConfig, has_flow: bool, variational: bool = False
) -> tuple[ModelConfig, TrainConfig]:
    """Both configs with the defaults of the task ``data`` calls for (see :func:`task_of`);
    ``has_flow``: the model reads the flow options (the task's flow sizes apply); ``variational``:
    the model is of the VAE family (its training settings apply)."""
    train_config = train_defaults(data, train_config, variational)
    return model_defaults(model_config, train_config.task, has_flow), train_config
