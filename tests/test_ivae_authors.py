"""benchmarks/ivae_authors.py, the authors'-code comparison, on a fake checkout: its rows, its blow-up and
failure paths, the shims undone afterwards, and the error for a folder that is not their code."""

import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ivae_authors  # noqa: E402

# Their runner's contract: data written as an npz into args.data_path, then (perfs, loss histories, perf
# histories). This one also uses both shims, so it fails unless they are in place.
FAKE_RUNNER = '''
import numpy as np
import torch

def runner(args, config):
    assert np.int is int
    torch.optim.lr_scheduler.ReduceLROnPlateau(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0),
                                               verbose=True)
    rng = np.random.default_rng(config.s)
    labels = np.repeat(np.arange(4), 30)
    s = rng.normal(size=(labels.size, 2)) * (1 + labels[:, None])
    np.savez_compressed(args.data_path + "data.npz", x=np.tanh(s @ rng.normal(size=(2, 2))), u=np.eye(4)[labels], s=s)
    print("Executing script on: cpu")
    for epoch, loss in enumerate(config.losses, 1):
        print(f"==> Epoch {epoch}/{len(config.losses)}:\ttrain loss: {loss:.6f}")
    print("total runtime: 1.0")
    if config.fail:
        raise ValueError("array must not contain infs or NaNs")
    return [0.5], [np.array(config.losses)], None
'''


@pytest.fixture
def fake_code(tmp_path, monkeypatch):
    """A folder laid out as their checkout, with the config the test asks for instead of their YAML."""
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "__init__.py").write_text("")
    (tmp_path / "runners" / "ivae.py").write_text(FAKE_RUNNER)
    settings = {"losses": [-5.0, -6.0, -7.0], "fail": False}

    def shipped_config(code: Path, seed: int, noise: float) -> Namespace:
        return Namespace(s=seed, noisy=noise, **settings)

    monkeypatch.setattr(ivae_authors, "shipped_config", shipped_config)
    return tmp_path, settings


def test_row_and_arrays(fake_code):
    code, _ = fake_code
    row, arrays = ivae_authors.run_authors(code, seed=3, noise=0.1)
    assert row["mcc_sample"] == 0.5 and not row["blew_up"]
    assert (row["first_loss"], row["final_loss"]) == (-5.0, -7.0)
    assert arrays["x"].shape == (120, 2) and arrays["u"].shape == (120, 4)
    _, other = ivae_authors.run_authors(code, seed=4, noise=0.1)
    assert not np.array_equal(arrays["s"], other["s"])  # the data seed reaches their config


def test_blow_up_is_a_loss_above_the_first_epoch(fake_code):
    code, settings = fake_code
    settings["losses"] = [-5.0, 40.0, -4.0]
    row, _ = ivae_authors.run_authors(code, seed=1, noise=0.0)
    assert row["blew_up"] and row["mcc_sample"] == 0.5


def test_their_failure_becomes_a_failed_row(fake_code):
    code, settings = fake_code
    settings["fail"] = True
    row, arrays = ivae_authors.run_authors(code, seed=1, noise=0.0)
    assert row["mcc_sample"] is None and row["blew_up"]
    assert "NaN" in row["failed"] and row["last_epoch"] == "==> Epoch 3/3:\ttrain loss: -7.000000"
    assert arrays["s"].shape == (120, 2)


def test_shims_and_imports_undone(fake_code):
    code, _ = fake_code
    plateau, path = torch.optim.lr_scheduler.ReduceLROnPlateau, list(sys.path)
    ivae_authors.run_authors(code, seed=1, noise=0.0)
    assert not hasattr(np, "int")
    assert torch.optim.lr_scheduler.ReduceLROnPlateau is plateau
    assert sys.path == path
    assert "runners.ivae" not in sys.modules and "runners" not in sys.modules


def test_not_a_checkout(tmp_path):
    with pytest.raises(SystemExit, match="is not a checkout of github.com/ilkhem/iVAE"):
        ivae_authors.run_authors(tmp_path, seed=1, noise=0.0)


def test_markdown_means_over_finished_runs():
    cache = {
        "0.0/1/authors": {"mcc_sample": 0.9, "blew_up": False, "cpu_seconds": 10.0},
        "0.0/2/authors": {"mcc_sample": None, "blew_up": True, "failed": "NaN", "cpu_seconds": 20.0},
        "0.0/1/iflow": {"mcc": 0.8, "mcc_sample": 0.79, "cpu_seconds": 5.0},
        "0.0/2/iflow": {"mcc": 0.6, "mcc_sample": 0.59, "cpu_seconds": 7.0},
    }
    table = ivae_authors.markdown(cache, [0.0], [1, 2])
    assert "| 0 | authors' (a posterior draw) | 0.900, failed | 0.900 (1 of 2 finished) | 1 | 15 |" in table
    assert "| 0 | iflow, paper's settings (q's mean) | 0.800, 0.600 | 0.700 | - | 6 |" in table
    assert "within 0.010 of q's mean's" in table
    only_failed = ivae_authors.markdown(cache, [0.0], [2])
    assert "| 0 | authors' (a posterior draw) | failed | - (0 of 1 finished) | 1 | 20 |" in only_failed


def test_iflow_row_on_their_arrays(fake_code):
    code, _ = fake_code
    _, arrays = ivae_authors.run_authors(code, seed=1, noise=0.0)
    row = ivae_authors.run_iflow(arrays, seed=1)
    assert 0.0 <= row["mcc"] <= 1.0 and 0.0 <= row["mcc_sample"] <= 1.0
    assert 1 <= row["best_epoch"] <= ivae_authors.PAPER_TRAIN.epochs
