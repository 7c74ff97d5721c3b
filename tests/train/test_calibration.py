"""Spread calibration: analytic factors, the tail's eval-mode scaling, a fit that makes spread/skill one."""

from __future__ import annotations

import math

import pytest
import torch

from atmorep.checkpoint import load_model
from atmorep.data.dataset import BoxDataset
from atmorep.model.multiformer import build_model
from atmorep.model.tail import EnsembleTail
from atmorep.numerics.first_guess import GUESS_KINDS, KIND_VISIBLE
from atmorep.numerics.temporal_fit import BETWEEN, TREND
from atmorep.runtime import make_runtime, seed_everything
from atmorep.train.calibration import FACTOR_RANGE, SpreadSums, calibration_tasks, fit_spread, measure_spread
from atmorep.train.checks import with_levels
from atmorep.train.loop import train
from atmorep.train.residual_scales import initialise_scales
from tests.train.conftest import make_config


def test_factors_make_the_finite_ensemble_spread_skill_ratio_one():
    sums = SpreadSums({"t": 2}, members=2)
    # two members at target + error -/+ d: ensemble-mean error `error`, unbiased variance 2 d^2
    error, d = 0.6, 0.2
    members = torch.tensor([[[error - d], [error + d]]] * 3)  # [M=3, E=2, D=1]
    target = torch.zeros(3, 1)
    level, kind = torch.tensor([0, 0, 1]), torch.tensor([BETWEEN, BETWEEN, TREND])
    sums.add("t", members, target, level, kind, None)
    factors = sums.factors()["t"]
    expected = math.sqrt(error**2 / (1.5 * 2 * d**2))
    assert factors.shape == (2, len(GUESS_KINDS))
    assert factors[0, BETWEEN] == pytest.approx(expected) and factors[1, TREND] == pytest.approx(expected)
    assert factors[1, BETWEEN] == 1.0 and factors[0, KIND_VISIBLE] == 1.0  # nothing counted


def test_factors_are_weighted_and_clipped():
    sums = SpreadSums({"t": 1}, members=2)
    members = torch.tensor([[[1.0], [1.0 + 1e-6]], [[0.0], [2.0]]])  # a collapsed and a wide ensemble
    target = torch.tensor([[0.0], [1.0]])  # errors 1 and 0
    weights = torch.tensor([1.0, 0.0])  # only the collapsed one counts
    sums.add("t", members, target, torch.tensor([0, 0]), torch.tensor([BETWEEN, BETWEEN]), weights)
    assert sums.factors()["t"][0, BETWEEN] == FACTOR_RANGE[1]


def test_the_tail_scales_deviations_from_the_mean_in_eval_mode_only():
    torch.manual_seed(0)
    tail = EnsembleTail(dim=8, values=3, members=5, scales=(2, len(GUESS_KINDS)))
    tail.spread[1, TREND] = 2.0
    states, guess = torch.randn(4, 8), torch.randn(4, 3)
    level, kind = torch.tensor([1, 1, 0, 1]), torch.tensor([TREND, BETWEEN, TREND, TREND])
    raw, _, _ = tail.members(states, guess, level, kind)
    tail.eval()
    calibrated, _, _ = tail.members(states, guess, level, kind)
    assert torch.allclose(calibrated.mean(dim=1), raw.mean(dim=1), atol=1e-6)  # the mean does not move
    deviation = (calibrated - calibrated.mean(dim=1, keepdim=True)) / (raw - raw.mean(dim=1, keepdim=True))
    assert torch.allclose(deviation[[0, 3]], torch.tensor(2.0)) and torch.allclose(deviation[[1, 2]],
                                                                                    torch.tensor(1.0))


def _validation(stores, tmp_path):
    config = make_config(stores, tmp_path / "run")
    dataset = BoxDataset(config.data.validation, config.fields, config.data, seed=config.train.seed)
    resolved = with_levels(config, dataset.levels)
    seed_everything(0)
    model = build_model(resolved)
    initialise_scales(model, resolved, dataset.statistics)
    return model, resolved, [dataset.make_batch(0, index) for index in range(2)]


def test_a_fitted_model_has_spread_skill_one_on_its_calibration_data(stores, tmp_path):
    model, config, batches = _validation(stores, tmp_path)
    runtime = make_runtime("cpu", "float32")
    tasks = calibration_tasks(config)
    assert tasks == ("forecast", "interpolate", "infill", "downscale")
    factors = fit_spread(model, model, batches, config, runtime, tasks)
    assert model.training  # its mode is restored
    fitted = factors["t"][:, 1:]  # an untrained model's spread is far from its error
    assert (fitted != 1.0).any()
    again = fit_spread(model, model, batches, config, runtime, tasks)  # refits from the raw ensemble
    assert all(torch.equal(again[name], factors[name]) for name in factors)
    # with the factors applied the same data gives factors of one wherever the fit was not clipped
    refit = measure_spread(model, model, batches, config, runtime, tasks).factors()
    for name, factor in factors.items():
        inside = (factor > FACTOR_RANGE[0]) & (factor < FACTOR_RANGE[1]) & (factor != 1.0)
        assert inside.any()
        assert torch.allclose(refit[name][inside], torch.ones(()), atol=1e-4), name


def test_a_finished_run_saves_fitted_factors_unless_turned_off(stores, tmp_path):
    train(make_config(stores, tmp_path / "on", max_steps=2))
    model, _, _ = load_model(tmp_path / "on" / "checkpoint")
    assert (model.tails["t"].spread != 1.0).any()
    train(make_config(stores, tmp_path / "off", max_steps=2, calibrate_spread=False))
    model, _, _ = load_model(tmp_path / "off" / "checkpoint")
    assert (model.tails["t"].spread == 1.0).all()
