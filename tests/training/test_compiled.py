"""``TrainConfig.compile``: the training steps go through torch.compile of the loss, with the
eager run's result; ``--compile`` of ``iflow train`` and ``iflow demo`` reaches the config."""

from __future__ import annotations

from dataclasses import replace

import torch

import iflow.workflow
from iflow.cli import build_parser, configs_from
from iflow.config import TrainConfig
from iflow.training import compiled
from iflow.training.trainer import fit
from tests import helpers


def test_compiled_training_matches_eager_training(monkeypatch) -> None:
    data = helpers.tiny_data(128, 3)
    eager, fast = helpers.tiny_flow(3), helpers.tiny_flow(3)
    config = TrainConfig(epochs=2, batch_size=32, lr=1e-2, prior_fit="none")
    calls = []
    real_compile = torch.compile

    def recording_compile(fn, **options):
        calls.append(fn)
        return real_compile(fn, **options)

    monkeypatch.setattr(compiled.torch, "compile", recording_compile)
    fit(eager, data, config, progress=False)
    assert calls == []
    fit(fast, data, replace(config, compile=True), progress=False)
    assert len(calls) == 1 and calls[0].model is fast  # one compiled module: the training loss
    for (name, a), b in zip(fast.state_dict().items(), eager.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)  # the same training, within rounding
    start = helpers.tiny_flow(3).state_dict().values()
    assert any(not torch.equal(a, b) for a, b in zip(fast.state_dict().values(), start, strict=True))  # it trained


def test_compile_flag_reaches_the_train_config() -> None:
    parser = build_parser()
    for argv, expected in ((["train", "--data", "d.npz", "--out", "r"], False),
                           (["train", "--data", "d.npz", "--out", "r", "--compile"], True)):  # fmt: skip
        assert configs_from(parser.parse_args(argv))[1].compile is expected


def test_demo_compile_flag_reaches_the_train_config(tmp_path, monkeypatch) -> None:
    class Captured(Exception):
        pass

    def capture(data, directory, model_config, train_config):
        raise Captured(train_config)

    monkeypatch.setattr(iflow.workflow, "train_and_save", capture)
    for argv, expected in ((["demo", "--out", str(tmp_path / "a")], False),
                           (["demo", "--out", str(tmp_path / "b"), "--compile"], True)):  # fmt: skip
        args = build_parser().parse_args(argv)
        try:
            args.handler(args)
        except Captured as captured:
            assert captured.args[0].compile is expected
        else:
            raise AssertionError("the demo did not train")
