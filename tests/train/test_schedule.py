"""The learning-rate schedule: linear warm-up, then cosine, linear or constant decay to min_lr_ratio."""

from __future__ import annotations

import math

import pytest
import torch

from atmorep.config import OptimConfig
from atmorep.train.schedule import build_scheduler, lr_factor


@pytest.mark.parametrize("decay", ["cosine", "linear", "constant"])
def test_warmup_rises_linearly_to_one(decay):
    optim = OptimConfig(warmup_steps=4, decay=decay, min_lr_ratio=0.1)
    assert [lr_factor(s, optim, 20) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_cosine_decays_to_min_ratio_through_the_midpoint():
    optim = OptimConfig(warmup_steps=10, decay="cosine", min_lr_ratio=0.2)
    assert lr_factor(10, optim, 110) == 1.0
    assert lr_factor(60, optim, 110) == pytest.approx(0.2 + 0.8 * 0.5)  # half way: cos(pi/2) = 0
    assert lr_factor(35, optim, 110) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(110, optim, 110) == pytest.approx(0.2)
    assert lr_factor(500, optim, 110) == pytest.approx(0.2)  # extended training stays at the floor


def test_linear_and_constant_decay():
    linear = OptimConfig(warmup_steps=0, decay="linear", min_lr_ratio=0.0)
    assert [lr_factor(s, linear, 4) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    constant = OptimConfig(warmup_steps=2, decay="constant", min_lr_ratio=0.0)
    assert lr_factor(1000, constant, 10) == 1.0


def test_scheduler_sets_the_optimiser_rate_each_step():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=2e-3)
    optim = OptimConfig(lr=2e-3, warmup_steps=2, decay="linear", min_lr_ratio=0.5)
    scheduler = build_scheduler(optimizer, optim, max_steps=6)
    rates = []
    for _ in range(7):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [2e-3 * lr_factor(s, optim, 6) for s in range(7)]
    assert rates == pytest.approx(expected)
    assert rates[:3] == pytest.approx([1e-3, 2e-3, 2e-3]) and rates[-1] == pytest.approx(1e-3)
