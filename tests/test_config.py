"""iflow/config.py: defaults in one place, validation speaking of parameters, config.json round trips."""

from dataclasses import asdict, fields

import pytest

from iflow.config import ModelConfig, TrainConfig, model_config_from_dict, to_dict, train_config_from_dict
from iflow.data.dataset import AuxSpec
from iflow.errors import UserError


def test_train_config_round_trips_through_its_dict() -> None:
    config = TrainConfig(epochs=3, lr=1e-3, seed=7, linear_fit="none")
    assert train_config_from_dict(asdict(config)) == config


def test_model_config_round_trips_and_drops_fields_that_do_not_apply() -> None:
    config = ModelConfig(model="ivae", latent_dim=2, aux=AuxSpec("labels", n_labels=3), image_shape=(1, 2, 2))
    assert model_config_from_dict(asdict(config)) == config
    recorded = {**asdict(config), "bins": 3, "flow": "glow"}  # what an older iflow wrote for a VAE
    read = model_config_from_dict(recorded, applicable={f.name for f in fields(ModelConfig)} - {"bins", "flow"})
    assert read.bins is None and read.flow == ModelConfig().flow and read.latent_dim == 2


def test_unknown_keys_in_a_config_file_are_ignored() -> None:
    assert train_config_from_dict({**asdict(TrainConfig()), "from_the_future": 1}) == TrainConfig()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"val_fraction": 1.0}, "val_fraction must be in"),
        ({"schedule": "step"}, "unknown schedule"),
        ({"linear_fit": "epoch", "prior_fit": "none"}, "linear_fit epoch profiles the prior out, so it needs prior_fit epoch"),
    ],
)
def test_validation_names_parameters_not_flags(changes: dict, message: str) -> None:
    with pytest.raises(UserError) as caught:
        TrainConfig(**changes).validate()
    assert message in str(caught.value) and "--" not in str(caught.value)
    assert "--" + next(iter(changes)).replace("_", "-") in caught.value.for_command_line()


def test_config_json_holds_the_format_version_and_both_configs() -> None:
    record = to_dict({"model": "iflow"}, TrainConfig(), {"standardizer": {}})
    assert record["format_version"] >= 1 and record["model"] == {"model": "iflow"}
    assert record["train"]["epochs"] == TrainConfig().epochs
