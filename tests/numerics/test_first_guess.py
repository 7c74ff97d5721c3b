"""The first guess of hidden tokens: exact on the cases each rule is built for, and honest (no peeking)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atmorep.numerics.first_guess import (
    COARSE,
    KIND_VISIBLE,
    NOISE,
    SPATIAL,
    coarse_guess,
    first_guess,
    spatial_fill,
    time_differences,
)
from atmorep.numerics.modes import COARSENED, MASKED, NOISED, VISIBLE
from atmorep.numerics.temporal_fit import BETWEEN, TREND, temporal_weights
from atmorep.numerics.tokens import tokenise

TOKEN = (3, 2, 2)
SHAPE = (2, 2, 12, 4, 6)  # [B, L, T, H, W]: 4 time tokens of 3 steps, 2 x 3 tokens in space


def _in_time(profile) -> torch.Tensor:
    """Tokens of boxes whose every point follows ``profile(t)``, scaled per point."""
    t = torch.arange(SHAPE[2], dtype=torch.float64)
    weights = torch.linspace(0.5, 2.0, SHAPE[3] * SHAPE[4], dtype=torch.float64).reshape(SHAPE[3:])
    values = profile(t)[None, None, :, None, None] * weights + 3.0  # [B, L, T, H, W]
    return tokenise(values.expand(SHAPE).contiguous(), TOKEN)


def _modes(hidden_times, dtype=torch.int8) -> torch.Tensor:
    modes = torch.zeros(SHAPE[:2] + (4, 2, 3), dtype=dtype)
    modes[:, :, list(hidden_times)] = MASKED
    return modes


@pytest.mark.parametrize("hidden", [[1], [1, 2], [2]])
def test_interpolation_guess_reproduces_a_cubic_in_time(hidden) -> None:
    tokens = _in_time(lambda t: 0.3 - 0.2 * t + 0.05 * t**2 - 0.004 * t**3)
    modes = _modes(hidden)
    guess, kinds = first_guess(torch.where((modes == MASKED)[..., None], 0.0, tokens), modes, TOKEN, 2)
    torch.testing.assert_close(guess, tokens, rtol=0, atol=1e-10)
    assert (kinds[:, :, hidden] == BETWEEN).all() and (kinds[modes == VISIBLE] == KIND_VISIBLE).all()


@pytest.mark.parametrize("profile", [lambda t: 0.0 * t, lambda t: 0.25 * t - 1.0])
def test_undamped_forecast_guess_reproduces_constants_and_linear_trends(profile) -> None:
    tokens = _in_time(profile)
    modes = _modes([3])
    guess, kinds = first_guess(tokens, modes, TOKEN, 2, damping=1.0)
    torch.testing.assert_close(guess, tokens, rtol=0, atol=1e-10)
    assert (kinds[:, :, 3] == TREND).all()


def test_damped_trend_lies_between_persistence_and_the_trend() -> None:
    tokens = _in_time(lambda t: 0.25 * t)
    modes = _modes([3])
    damped, _ = first_guess(tokens, modes, TOKEN, 2, damping=0.9)
    persistence = tokens[:, :, 2].reshape(*tokens.shape[:2], 2, 3, 3, 4)[..., 2, :]  # last step of token 2
    last = damped[:, :, 3].reshape(*tokens.shape[:2], 2, 3, 3, 4)
    truth = tokens[:, :, 3].reshape(*tokens.shape[:2], 2, 3, 3, 4)
    for step in range(3):
        assert (last[..., step, :] > persistence).all() and (last[..., step, :] < truth[..., step, :]).all()


def test_temporal_weights_sum_to_one_so_the_guess_commutes_with_normalisation() -> None:
    pattern = (True, True, True, False, False, True, True, True, False, False, False, True)
    weights, kinds = temporal_weights(pattern)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    assert list(kinds) == [0, 0, 0, BETWEEN, BETWEEN, 0, 0, 0, BETWEEN, BETWEEN, BETWEEN, 0]
    assert (weights[:, ~np.asarray(pattern)] == 0).all()  # hidden steps are never read
    _, one_sided = temporal_weights((False, False, True, True))
    assert list(one_sided) == [TREND, TREND, 0, 0]


def test_the_guess_never_reads_hidden_values() -> None:
    tokens = _in_time(lambda t: torch.sin(t / 3))
    modes = _modes([1, 3])
    modes[0, 0, 0, 1, 1] = MASKED  # a token with its whole column hidden at token 0 and 1 and 3
    poisoned = torch.where((modes == MASKED)[..., None], torch.nan, tokens)
    guess, _ = first_guess(poisoned, modes, TOKEN, 2)
    assert torch.isfinite(guess).all()


def test_whole_hidden_columns_get_a_smooth_spatial_fill() -> None:
    h, w = 4, 6
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                          indexing="ij")
    plane = 0.5 * x - 0.25 * y + 1.0
    values = plane.expand(2, 2, 12, h, w).contiguous()
    modes = torch.zeros(2, 2, 4, 2, 3, dtype=torch.int8)
    modes[:, :, :, 0, 1] = MASKED  # every time token of one column of tokens
    guess, kinds = first_guess(tokenise(values, TOKEN), modes, TOKEN, 2)
    assert (kinds[:, :, :, 0, 1] == SPATIAL).all()
    hidden = guess[:, :, :, 0, 1]  # [B, L, nT, D]
    low, high = float(plane[0:2, 2:4].min()), float(plane[0:2, 2:4].max())
    assert hidden.min() >= plane.min() and hidden.max() <= plane.max()  # a convex fill: no overshoot
    assert abs(float(hidden.mean()) - float(plane[0:2, 2:4].mean())) < 0.5 * (high - low)


def test_spatial_fill_keeps_known_points_and_is_zero_without_any() -> None:
    values = torch.randn(3, 5, 7, dtype=torch.float64)
    known = torch.rand(3, 5, 7) < 0.4
    known[2] = False
    filled = spatial_fill(values, known)
    assert torch.equal(filled[known], values[known])
    assert torch.equal(filled[2], torch.zeros(5, 7, dtype=torch.float64))
    constant = spatial_fill(torch.full((1, 5, 7), 2.5, dtype=torch.float64), known[:1])
    torch.testing.assert_close(constant, torch.full((1, 5, 7), 2.5, dtype=torch.float64))


def test_coarsened_tokens_start_from_bilinear_upsampling_and_noised_from_their_values() -> None:
    values = torch.randn(1, 1, 12, 4, 6, dtype=torch.float64)
    tokens = tokenise(values, TOKEN)
    modes = torch.zeros(1, 1, 4, 2, 3, dtype=torch.int8)
    modes[:] = COARSENED
    modes[0, 0, 0, 0, 0] = NOISED
    guess, kinds = first_guess(tokens, modes, TOKEN, 2)
    assert kinds[0, 0, 0, 0, 0] == NOISE and (kinds[modes == COARSENED] == COARSE).all()
    torch.testing.assert_close(guess[0, 0, 0, 0, 0], tokens[0, 0, 0, 0, 0])
    expected = tokenise(coarse_guess(values.reshape(-1, 4, 6), 2).reshape(values.shape), TOKEN)
    torch.testing.assert_close(guess[modes == COARSENED], expected[modes == COARSENED])
    smooth = torch.ones(3, 4, 6, dtype=torch.float64)
    torch.testing.assert_close(coarse_guess(smooth, 2), smooth)


def test_time_differences_of_a_linear_trend_are_its_slope() -> None:
    tokens = _in_time(lambda t: 0.25 * t)
    differences = time_differences(tokens, TOKEN)  # [..., 2 * 4]
    assert differences.shape[-1] == 2 * 2 * 2
    weights = torch.linspace(0.5, 2.0, 24, dtype=torch.float64).reshape(4, 6)
    np.testing.assert_allclose(differences.abs().min(), 0.25 * float(weights.min()), rtol=1e-12)


def test_tokens_given_by_another_model_start_from_its_values() -> None:
    from atmorep.numerics.first_guess import GUESS_KINDS, MODEL
    from atmorep.numerics.modes import GIVEN

    tokens = tokenise(torch.randn(1, 1, 12, 4, 6, dtype=torch.float64), TOKEN)
    modes = torch.full((1, 1, 4, 2, 3), GIVEN, dtype=torch.int8)
    modes[0, 0, 0] = VISIBLE
    guess, kinds = first_guess(tokens, modes, TOKEN, 2)
    assert GUESS_KINDS[MODEL] == "model"
    assert (kinds[modes == GIVEN] == MODEL).all() and (kinds[modes == VISIBLE] == KIND_VISIBLE).all()
    torch.testing.assert_close(guess, tokens, rtol=0, atol=0)
