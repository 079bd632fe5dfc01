"""Test options: ``--device`` (default: every device present, cpu and cuda when CUDA is
available; ``--device cuda`` runs the device-aware tests on the GPU only) and ``--dtype``
(float64 default for the numerical checks that take it)."""

import pytest
import torch

from tests.helpers import autograd_logabsdet as _autograd_logabsdet

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default=None, help="torch device for device-aware tests (cpu, cuda, cuda:N); "
                     "default: cpu, and cuda too when CUDA is available")
    parser.addoption("--dtype", default="float64", choices=sorted(DTYPES), help="dtype of the numerical checks")


def available_devices() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests taking ``device`` run once per device: the ``--device`` given, or every one present."""
    if "device" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--device")
        metafunc.parametrize("device", [chosen] if chosen else available_devices(), indirect=True)


@pytest.fixture
def device(request: pytest.FixtureRequest) -> torch.device:
    """This test's device; skipped when CUDA is asked for and absent."""
    device = torch.device(request.param)
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda, but CUDA is not available")
    return device


@pytest.fixture(scope="session")
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return DTYPES[request.config.getoption("--dtype")]


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models are fastest, and tests most reproducible, on one thread."""
    torch.set_num_threads(1)
    yield


@pytest.fixture
def autograd_logabsdet():
    """``f(fn, x)``: log|det J| of ``fn`` (returning ``(y, ...)``) at each row of ``x``, by autograd."""
    return _autograd_logabsdet


@pytest.fixture
def float64_default():
    """Run the test with float64 as torch's default dtype (closed forms and integrals), then restore it."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
