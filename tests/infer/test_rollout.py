"""Rollout: iterating a step on its own output equals stepping by hand and follows analytic motion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atmorep.errors import DataError
from atmorep.infer.rollout import rollout
from atmorep.infer.tiling import TilePlan, run_tiled

T, H, W = 4, 5, 12
SHIFT = 1  # columns per time step


def wave(times: torch.Tensor) -> torch.Tensor:
    """A field ``[2, len(times), H, W]`` advected eastwards by SHIFT columns per time step."""
    column = torch.arange(W, dtype=torch.float64)
    phase = 2 * torch.pi * (column[None, :] - SHIFT * times[:, None].to(torch.float64)) / W  # [T, W]
    rows = torch.linspace(1.0, 2.0, H, dtype=torch.float64)[:, None, None]  # [H, 1, 1]
    values = (rows * torch.sin(phase)).permute(1, 0, 2)  # [T, H, W]
    return torch.stack([values, -values])  # [2, T, H, W]


def advect(k: int):
    """A step that moves the last known time step on by SHIFT columns per predicted step."""
    def step(window: torch.Tensor) -> torch.Tensor:
        last = window[..., -1, :, :]  # [..., H, W]
        return torch.stack([torch.roll(last, SHIFT * (j + 1), dims=-1) for j in range(k)], dim=-3)
    return step


def persistence_plus_one(k: int):
    """A step that predicts the last ``k`` steps of the window, each plus one."""
    return lambda window: window[..., -k:, :, :] + 1.0


def manual(step_fn, initial: torch.Tensor, steps: int) -> list[torch.Tensor]:
    window, outputs = initial, []
    for _ in range(steps):
        forecast = step_fn(window)
        outputs.append(forecast)
        k = forecast.shape[-3]
        window = torch.cat([window[..., k:, :, :], forecast], dim=-3)
    return outputs


@pytest.mark.parametrize("k", [1, 2, T])
@pytest.mark.parametrize("make_step", [advect, persistence_plus_one])
def test_rollout_equals_manual_steps(make_step, k):
    initial = torch.randn(2, 3, T, H, W, dtype=torch.float64)
    step_fn = make_step(k)
    forecasts = list(rollout(step_fn, initial, 5))
    expected = manual(step_fn, initial, 5)
    assert len(forecasts) == 5
    for got, want in zip(forecasts, expected):
        assert got.shape == (2, 3, k, H, W)
        assert torch.equal(got, want)


@pytest.mark.parametrize("k", [1, 3])
def test_advection_rollout_follows_the_analytic_wave(k):
    initial = wave(torch.arange(T))
    steps = 4
    result = torch.cat(list(rollout(advect(k), initial, steps)), dim=-3)
    assert result.shape == (2, steps * k, H, W)
    torch.testing.assert_close(result, wave(torch.arange(T, T + steps * k)), rtol=0, atol=1e-12)


def test_persistence_plus_one_counts_the_steps():
    initial = torch.zeros(1, T, H, W, dtype=torch.float64)
    for step, forecast in enumerate(rollout(persistence_plus_one(2), initial, 6), start=1):
        # the window of step n ends with step n - 1's forecast, n - 1 everywhere
        assert torch.equal(forecast, torch.full_like(forecast, float(step)))


def test_rollout_is_lazy_and_stops_after_the_requested_steps():
    calls = []

    def step(window):
        calls.append(window.clone())
        return window[..., -1:, :, :] * 2

    generator = rollout(step, torch.ones(T, H, W), 3)
    assert calls == []
    first = next(generator)
    assert len(calls) == 1 and torch.equal(first, torch.full((1, H, W), 2.0))
    assert len(list(generator)) == 2 and len(calls) == 3
    assert torch.equal(calls[2][-1], torch.full((H, W), 4.0))  # step 3's window ends with step 2's output
    assert list(rollout(step, torch.ones(T, H, W), 0)) == [] and len(calls) == 3


def test_rollout_over_another_time_axis():
    initial = torch.randn(2, T, 3, H, W, dtype=torch.float64)  # [B, T, L, H, W]
    step_fn = lambda window: window[:, -1:] + window[:, :1]  # noqa: E731
    forecasts = list(rollout(step_fn, initial, 3, dim=1))
    window = initial
    for forecast in forecasts:
        assert torch.equal(forecast, window[:, -1:] + window[:, :1])
        window = torch.cat([window[:, 1:], forecast], dim=1)


def test_tiled_step_rolls_out_a_global_field():
    latitude, longitude = np.linspace(-90.0, 90.0, 19), np.arange(0.0, 360.0, 15.0)
    plan = TilePlan.from_grid(latitude, longitude, (8, 10), 0.25)
    initial = torch.randn(2, T, *plan.grid_shape, dtype=torch.float64)  # [L, T, nlat, nlon]

    def tiled_step(window):  # the box-local step: the last time step plus one, run tile by tile
        return run_tiled(lambda tiles, index: tiles[..., -1:, :, :] + 1.0, window, plan, batch_size=3)

    for step, forecast in enumerate(rollout(tiled_step, initial, 3), start=1):
        torch.testing.assert_close(forecast, initial[:, -1:] + step, rtol=0, atol=1e-12)


@pytest.mark.parametrize("steps", [-1, 1.5, True])
def test_bad_step_counts_are_rejected(steps):
    with pytest.raises(DataError, match="steps must be a non-negative integer"):
        rollout(persistence_plus_one(1), torch.zeros(T, H, W), steps)


def test_bad_time_axis_is_rejected():
    with pytest.raises(DataError, match="time axis 3 out of range"):
        rollout(persistence_plus_one(1), torch.zeros(T, H, W), 1, dim=3)


@pytest.mark.parametrize("bad", [
    lambda window: window[..., :, :-1],  # a different grid
    lambda window: torch.cat([window, window], dim=-3),  # more steps than the window holds
    lambda window: window[..., :0, :, :],  # no step
    lambda window: window[0],  # a dimension lost
])
def test_forecasts_of_the_wrong_shape_are_rejected(bad):
    with pytest.raises(DataError, match="rollout step 1: step_fn returned shape"):
        next(rollout(bad, torch.zeros(2, T, H, W), 2))


def test_forecast_length_must_not_change_between_steps():
    lengths = iter([1, 2])

    def step(window):
        return window[..., -next(lengths):, :, :]

    generator = rollout(step, torch.zeros(T, H, W), 2)
    next(generator)
    with pytest.raises(DataError, match="rollout step 2: .*k=1 as before"):
        next(generator)
