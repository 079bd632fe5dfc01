"""Typed configuration, saved as ``config.json`` in every run and enough to rebuild the model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from .data.dataset import AuxSpec
from .errors import UserError, param

FORMAT_VERSION = 1
PRIOR_FITS = ("none", "init", "epoch")
LINEAR_FITS = ("auto", "epoch", "none")
ENCODERS = ("mlp", "product")
POSTERIORS = ("gaussian", "flow")
SCHEDULES = ("cosine", "plateau", "constant")
TASKS = ("recovery", "density", "image")
STARTS = ("random", "flow")
PRECISIONS = ("fp32", "tf32", "bf16")  # see iflow/training/precision.py
MAX_SEED = 2**32 - 1  # seeds are 0..MAX_SEED (numpy's legacy seeding; restarts add their index to it in torch)


@dataclass
class ModelConfig:
    """What to build. ``dim``: observed dimension; ``aux``: how u enters the prior."""

    model: str = "iflow"
    flow: str = "spline"
    prior: str | None = None  # None: the task's (iflow/defaults.py): the Gaussian, or chosen (--prior auto) on few rows
    dim: int = 0
    depth: int | None = None  # None (here and below): the flow's or the VAE's own default
    hidden: int | None = None  # units of the coupling networks, or of the VAE's MLPs
    bins: int | None = None  # spline bins (flows spline, mlp)
    tail_bound: float | None = None  # spline interval [-B, B] (flows spline, mlp)
    aux: AuxSpec = field(default_factory=lambda: AuxSpec("labels", n_labels=1))
    image_shape: tuple[int, int, int] | None = None  # (C, H, W) of image data; --flow glow is then multi-scale
    unit_interval: bool = False  # x is scaled to [0, 1): the flow starts with a fixed logit map
    # VAE family (ivae, vae, betavae, tcvae); see iflow/ivae.py
    latent_dim: int = 0  # 0: as many latents as observed dimensions (set by runs.train)
    obs: str = "gaussian"  # observation model p(x | z): gaussian, bernoulli, poisson
    noise_var: float = 0.01  # Gaussian decoder variance, in standardised units of x
    learn_noise: bool = False  # learn the decoder variance (started at noise_var)
    beta: float | None = None  # KL weight (TC weight for tcvae); None: the model's default
    anneal_steps: int = 0  # KL weight rises from 0 to 1 over this many steps
    iw_samples: int = 100  # K of the importance-weighted log-likelihood bound
    train_samples: int | None = None  # K of the objective: 1 the ELBO, K > 1 the IW bound; None: the model's default
    encoder: str = "mlp"  # q(z | x, u): "mlp" (u added at the first layer) or "product" (q(z | x) times p(z | u))
    tcl_ica: bool = False  # TCL: FastICA of the features after training (the TCL paper's last step)
    posterior: str = "gaussian"  # q's family: "gaussian", or "flow" (spline couplings bending the Gaussian)
    posterior_depth: int = 2  # coupling layers of the flow posterior
    objective_weights: list[float] | None = None  # (a, b, c, d) of the iVAE code's re-weighted ELBO; None: the ELBO

    def flow_options(self) -> dict:
        """The flow options set here (the builder's defaults apply to the rest)."""
        options = {"depth": self.depth, "hidden": self.hidden, "bins": self.bins, "tail_bound": self.tail_bound}
        return {name: value for name, value in options.items() if value is not None}


@dataclass
class TrainConfig:
    """How to train. Every model uses the same trainer."""

    epochs: int | None = None  # a fixed budget (no early stop); None: train to convergence
    max_epochs: int | None = None  # None (here and below): the task's default (iflow/defaults.py)
    patience: int | None = None  # epochs without a held-out gain above the tolerance before stopping
    tolerance: float | None = None  # nats per sample
    time_limit: float | None = None  # seconds of training, checked after each epoch; None: no limit
    # on a held-out plateau while the learning rate is at least rate_cut x lr, and on a collapse of the held-out
    # log-likelihood, go back to the best epoch's state at half the rate instead of stopping (or going on);
    # 0: off; None: the task's default (iflow/defaults.py)
    rate_cut: float | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 0.0
    schedule: str = "cosine"  # over epochs, or max_epochs when training to convergence; or plateau, constant
    task: str | None = None  # recovery, density or image: which defaults apply; None: decided from the data
    val_fraction: float = 0.1
    clip_grad: float = 10.0
    seed: int = 0
    split_seed: int | None = None  # None: the training seed; restarts share one split
    prior_fit: str | None = None  # closed-form M-step of a label prior: none, at init, or every epoch; None: the
    # model's default (epoch for flows, none for the VAE family; iflow/defaults.py)
    linear_fit: str = "auto"  # second-order refit of the flow's last linear layer each epoch (iflow/unmixing.py)
    device: str = "cpu"
    threads: int = 1
    precision: str = "fp32"  # of the training steps: fp32, tf32 (CUDA matmuls) or bf16 (conditioner networks)
    compile: bool = False  # torch.compile the training loss (iflow/training/compiled.py)
    # the VAE's start: random weights, or fitted to the latents of an identifiable flow trained first with its
    # defaults on the same rows (iflow/training/flow_start.py); None: the task's (flow for the iVAE where it applies)
    start: str | None = None

    def validate(self) -> None:
        """:class:`UserError` for values out of range or options that contradict each other."""
        checks = [
            (self.epochs is None or self.epochs >= 1, f"{param('epochs')} must be >= 1, got {self.epochs}"),
            (self.max_epochs is None or self.max_epochs >= 1,
             f"{param('max_epochs')} must be >= 1, got {self.max_epochs}"),
            (self.epochs is None or self.max_epochs is None,
             f"{param('epochs')} is a fixed budget and {param('max_epochs')} a cap on training to convergence; give one"),
            (self.patience is None or self.patience >= 1, f"{param('patience')} must be >= 1, got {self.patience}"),
            (self.tolerance is None or self.tolerance >= 0,
             f"{param('tolerance')} must be >= 0, got {self.tolerance}"),
            (self.rate_cut is None or 0 <= self.rate_cut < 1, f"{param('rate_cut')} must be in [0, 1), got {self.rate_cut}"),
            (self.time_limit is None or self.time_limit > 0,
             f"{param('time_limit')} must be > 0 seconds, got {self.time_limit}"),
            (self.batch_size is None or self.batch_size >= 1,
             f"{param('batch_size')} must be >= 1, got {self.batch_size}"),
            (self.lr is None or self.lr > 0, f"{param('lr')} must be > 0, got {self.lr}"),
            (self.task is None or self.task in TASKS, f"unknown {param('task')} {self.task!r}; choose from {TASKS}"),
            (self.weight_decay >= 0, f"{param('weight_decay')} must be >= 0, got {self.weight_decay}"),
            (0 < self.val_fraction < 1, f"{param('val_fraction')} must be in (0, 1), got {self.val_fraction}"),
            (self.clip_grad > 0, f"{param('clip_grad')} must be > 0, got {self.clip_grad}"),
            (self.threads >= 1, f"{param('threads')} must be >= 1, got {self.threads}"),
            (0 <= self.seed <= MAX_SEED, f"{param('seed')} must be in 0..{MAX_SEED}, got {self.seed}"),
            (self.schedule in SCHEDULES, f"unknown {param('schedule')} {self.schedule!r}; choose from {SCHEDULES}"),
            (self.prior_fit is None or self.prior_fit in PRIOR_FITS,
             f"unknown {param('prior_fit')} {self.prior_fit!r}; choose from {PRIOR_FITS}"),
            (self.linear_fit in LINEAR_FITS,
             f"unknown {param('linear_fit')} {self.linear_fit!r}; choose from {LINEAR_FITS}"),
            (self.linear_fit != "epoch" or self.prior_fit in (None, "epoch"),
             f"{param('linear_fit')} epoch profiles the prior out, so it needs {param('prior_fit')} epoch"),
            (self.start is None or self.start in STARTS, f"unknown {param('start')} {self.start!r}; choose from {STARTS}"),
            (self.precision in PRECISIONS,
             f"unknown {param('precision')} {self.precision!r}; choose from {PRECISIONS}"),
            (self.precision != "tf32" or self.device.startswith("cuda"),
             f"{param('precision')} tf32 sets the matmul precision of CUDA devices, and changes nothing on "
             f"{param('device')} {self.device}; use fp32 or bf16"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise UserError(message)


def to_dict(model: dict, train: TrainConfig, extra: dict | None = None) -> dict:
    """What ``config.json`` holds: the model's fields (``model``, as chosen by the caller), the training config."""
    return {"format_version": FORMAT_VERSION, "model": model, "train": asdict(train), **(extra or {})}


def _known(cls: type, values: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def model_config_from_dict(d: dict, applicable: set[str] | None = None) -> ModelConfig:
    """The config ``d`` records; with ``applicable``, fields outside it (options an older iflow
    recorded for a model that does not read them) take their defaults."""
    values = _known(ModelConfig, d)
    if applicable is not None:
        values = {k: v for k, v in values.items() if k in applicable}
    values["aux"] = AuxSpec(**d["aux"])
    if values.get("image_shape") is not None:
        values["image_shape"] = tuple(values["image_shape"])
    return ModelConfig(**values)


def train_config_from_dict(d: dict) -> TrainConfig:
    return TrainConfig(**_known(TrainConfig, d))
