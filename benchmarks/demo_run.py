"""``iflow demo``'s training as one function, for the benchmarks that time it.

Its data (the default synthetic benchmark, data seed ``seed``), the default model, trained
to convergence as ``iflow demo`` does, with the training options given (none: the defaults).
"""

from __future__ import annotations

from iflow.config import ModelConfig, TrainConfig
from iflow.data.dataset import make_dataset
from iflow.data.synthetic import SyntheticConfig, generate
from iflow.runs import plan_run
from iflow.workflow import train_and_evaluate

TARGET_MCC = 0.95


def demo_training(seed: int = 1, **options: object) -> dict:
    """Wall seconds of training ``s``, ``epochs``, the final ``mcc``, and the history's seconds (and
    epoch) at the first epoch with MCC >= 0.95, ``to_target`` (None when never reached)."""
    synthetic = generate(SyntheticConfig(seed=seed))
    data = make_dataset(synthetic.x, synthetic.u, synthetic.s, synthetic.log_likelihood, name=f"demo seed {seed}")
    outcome = train_and_evaluate(plan_run(data, ModelConfig(), TrainConfig(**options)), progress=False)
    history = outcome.result.history
    reached = next((h for h in history if h["mcc"] >= TARGET_MCC), None)
    return {"s": outcome.seconds, "epochs": len(history), "mcc": outcome.metrics["mcc"],
            "to_target": reached and reached["seconds"], "target_epoch": reached and reached["epoch"]}  # fmt: skip
