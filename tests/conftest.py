import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models are fastest, and tests most reproducible, on one thread."""
    torch.set_num_threads(1)
    yield


def _autograd_logabsdet(fn, x):
    out = []
    for row in x:
        jac = torch.autograd.functional.jacobian(lambda r: fn(r.unsqueeze(0))[0].squeeze(0), row)
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


@pytest.fixture
def autograd_logabsdet():
    """``f(fn, x)``: log|det J| of ``fn`` (returning ``(y, ...)``) at each row of ``x``, by autograd."""
    return _autograd_logabsdet
