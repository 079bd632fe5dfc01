import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from iflow.config import ModelConfig, TrainConfig
from iflow.data.dataset import AuxSpec, Standardizer, make_dataset
from iflow.data.dequantization import dequantize, dequantized
from iflow.metrics import bits_per_dim
from iflow.runs import Run, evaluate


class UniformOnUnitCube(nn.Module):
    """log p(y) = 0 on [0, 1)^d: the model a bits/dim convention can be checked against."""

    likelihood = "exact"

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def log_prob(self, x, u):
        inside = ((x >= 0) & (x < 1)).all(-1)
        return torch.where(inside, x.new_zeros(x.shape[0]), x.new_full((x.shape[0],), -math.inf))


def discrete_data(levels=17, n=500, d=6, seed=0):
    x = np.random.default_rng(seed).integers(0, levels, (n, d)).astype(np.float64)
    return replace(make_dataset(x, np.zeros(n, dtype=np.int64)), dequantize=1.0, bounds=(0.0, float(levels)))


def test_uniform_model_scores_log2_levels_bits_per_dim():
    # p(x) = 1 / 17^d on [0, 17)^d, so exactly log2(17) bits/dim once the 1/17 scaling is counted
    data = discrete_data()
    config = ModelConfig(dim=data.dim, aux=AuxSpec("labels", n_labels=1))
    run = Run(UniformOnUnitCube(), config, TrainConfig(), Standardizer.unit_range(0, 17, data.dim))
    metrics = evaluate(run, data)
    assert metrics["bits_per_dim"] == pytest.approx(math.log2(17), abs=1e-6)
    assert metrics["log_likelihood"] == pytest.approx(-data.dim * math.log(17), abs=1e-5)


def test_bits_per_dim_formula():
    assert bits_per_dim(-64 * math.log(2), 64) == pytest.approx(1.0)
    assert bits_per_dim(-10 * math.log(17), 10) == pytest.approx(math.log2(17))


def test_dequantized_adds_seeded_noise_inside_the_bins():
    data = discrete_data()
    once, again = dequantized(data), dequantized(data)
    noise = once.x - data.x
    assert np.array_equal(once.x, again.x)
    assert noise.min() >= 0 and noise.max() < 1 and abs(noise.mean() - 0.5) < 0.02
    assert once.dequantize == 0.0 and dequantized(once) is once


def test_dequantize_tensor_width_per_dimension():
    x = torch.zeros(1000, 2)
    y = dequantize(x, torch.tensor([1.0, 0.1]), torch.Generator().manual_seed(0))
    assert 0.9 < y[:, 0].max() < 1 and 0.09 < y[:, 1].max() < 0.1 and y.min() >= 0


def test_dequantize_draws_on_the_device_of_x_from_its_generator(device):
    x = torch.arange(1500.0, device=device).reshape(500, 3)
    width = torch.tensor([1.0, 2.0, 0.0], device=device)
    out = dequantize(x, width, torch.Generator(device).manual_seed(4))
    noise = torch.rand(x.shape, generator=torch.Generator(device).manual_seed(4), device=device)  # on the CPU: as before
    assert out.device == x.device and torch.equal(out, x + width * noise)
    assert torch.equal(out[:, 2], x[:, 2]) and (out - x)[:, 1].max() > 1.5
