"""Bounded-memory evaluation: every full-data pass hands the model row blocks whose size does
not grow with the data (training, validation, the per-epoch encode and refits, evaluate,
encode, consistency, sample, the estimator's inverse transform)."""

import numpy as np
import pytest
import torch

from iflow.config import ModelConfig, TrainConfig
from iflow.consistency import consistency
from iflow.estimator import IdentifiableFlowICA
from iflow.runs import encode_dataset, evaluate, plan_run, sample, train_planned
from iflow.runtime import EVAL_BATCH, batched, denormals_flushed
from iflow.training.trainer import WARM_START_ROWS
from tests import helpers


def largest_model_calls(n: int, monkeypatch) -> dict[str, int]:
    """The most rows one call of the flow (forward) or the model's decode saw in each stage, on ``n`` rows."""
    data = helpers.tiny_data(n, 2)
    plan = plan_run(data, ModelConfig(flow="realnvp", depth=1, hidden=4), TrainConfig(epochs=1, batch_size=EVAL_BATCH // 2))
    flow, stage, largest = plan.run.model.flow, ["train"], {}

    def record(rows: int) -> None:
        name = "warm start" if not largest else stage[0]  # fit's first pass: a strided subset
        largest[name] = max(largest.get(name, 0), rows)

    flow.register_forward_pre_hook(lambda _module, args: record(args[0].shape[0]))
    model, decode = plan.run.model, plan.run.model.decode
    monkeypatch.setattr(model, "decode", lambda z: record(z.shape[0]) or decode(z))
    run, _ = train_planned(plan, progress=False)
    for stage[0], action in {
        "evaluate": lambda: evaluate(run, data),
        "encode": lambda: encode_dataset(run, data),
        "consistency": lambda: consistency([run, run], data),
        "sample": lambda: sample(run, 1, n),
    }.items():
        action()
    return largest


def test_no_full_data_pass_hands_the_model_more_rows_as_the_data_grow(monkeypatch):
    small, large = largest_model_calls(3 * EVAL_BATCH, monkeypatch), largest_model_calls(6 * EVAL_BATCH, monkeypatch)
    assert set(small) == {"warm start", "train", "evaluate", "encode", "consistency", "sample"}
    assert small["warm start"] < 2 * WARM_START_ROWS and large["warm start"] < 2 * WARM_START_ROWS
    del small["warm start"], large["warm start"]
    assert small == large, "a pass whose blocks grow with the data"
    assert max(large.values()) == EVAL_BATCH


def test_batched_gives_the_unbatched_result_in_blocks():
    x = torch.randn(1000, 3, dtype=torch.float64)
    sizes = []
    out = batched(lambda block: sizes.append(len(block)) or block.exp(), x, size=300)
    assert sizes == [300, 300, 300, 100] and torch.equal(out, x.exp())


def test_the_estimators_inverse_transform_decodes_in_blocks(monkeypatch):
    data = helpers.tiny_data(400, 2)
    ica = IdentifiableFlowICA(epochs=1, depth=1, hidden=4, batch_size=64).fit(data.x, data.u)
    z = np.repeat(ica.transform(data.x), 3 * EVAL_BATCH // 400 + 1, axis=0)
    rows = []
    model = ica.run_.model
    decode = model.decode
    monkeypatch.setattr(model, "decode", lambda z: rows.append(z.shape[0]) or decode(z))
    assert ica.inverse_transform(z).shape == z.shape and max(rows) == EVAL_BATCH


def test_denormals_flushed_only_inside_the_block():
    helpers.skip_unless_subnormals_can_be_flushed()
    with denormals_flushed():
        inside = helpers.subnormal_product()
    assert inside == 0.0 and helpers.subnormal_product() == pytest.approx(helpers.SUBNORMAL)
