"""iflow/models/build.py: the registry names every model, and options reach the model or are refused."""

import pytest
import torch

from iflow.config import ModelConfig
from iflow.data.dataset import AuxSpec
from iflow.errors import UserError
from iflow.flows.build import build_flow
from iflow.models.build import MODELS, applicable_fields, build_model
from iflow.protocols import trains_on_a_bound

AUX = AuxSpec("labels", n_labels=3)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", sorted(name for name, entry in MODELS.items() if entry.trained))
def test_every_registered_model_builds_with_its_defaults(name: str) -> None:
    model = build_model(ModelConfig(model=name, dim=3, aux=AUX))
    x, u = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    assert model.log_prob(x, u).shape == (4,) and torch.isfinite(model.loss(x, u))


def test_the_mlp_flow_gets_its_own_default_bins() -> None:
    """Before: ModelConfig passed bins=8 to every flow, so --flow mlp and build_flow("mlp") differed."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(flow="mlp", dim=4, aux=AUX))
    assert parameter_count(model.flow) == parameter_count(build_flow("mlp", 4))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"flow": "realnvp", "bins": 5}, "flow 'realnvp' takes no option bins"),
        ({"flow": "glow", "tail_bound": 2.0}, "takes no option tail_bound"),
        ({"flow": "mlp", "hidden": 16}, "flow 'mlp' takes no option hidden"),
        ({"model": "flow", "prior": "laplace"}, "prior laplace is for models iflow, ivae"),
        ({"model": "ivae", "flow": "glow"}, "flow glow is for models iflow, flow"),
        ({"model": "vae", "bins": 3}, "bins is for models iflow, flow"),
    ],
)
def test_options_that_would_be_dropped_are_refused(changes: dict, message: str) -> None:
    """Before: flow builders took **_ and silently ignored what they did not use."""
    with pytest.raises(UserError, match=message):
        build_model(ModelConfig(dim=3, aux=AUX, **changes))


def test_config_json_fields_are_those_the_model_reads() -> None:
    flow_fields = applicable_fields(ModelConfig(model="iflow"))
    vae_fields = applicable_fields(ModelConfig(model="vae"))
    assert {"flow", "bins", "prior"} <= flow_fields and not {"obs", "beta", "latent_dim"} & flow_fields
    assert {"obs", "beta", "latent_dim"} <= vae_fields and not {"flow", "bins", "prior"} & vae_fields
    assert {"dim", "aux", "model"} <= flow_fields & vae_fields


@pytest.mark.parametrize("name", sorted(name for name, entry in MODELS.items() if entry.trained))
def test_a_built_model_says_what_its_registry_entry_says_it_trains_on(name: str) -> None:
    model = build_model(ModelConfig(model=name, dim=3, aux=AUX))
    assert trains_on_a_bound(model) == MODELS[name].variational
