"""Embedding: positional code on non-square grids, alpha features, mask embedding, sub-token transformer."""

from __future__ import annotations

import math

import pytest
import torch

from atmorep.model.embedding import (
    POSITION_MAX_PERIOD,
    AlphaEmbedding,
    FieldEmbedding,
    SubTokenEmbedding,
    alpha_features,
    positional_encoding,
    sub_token_positions,
)
from atmorep.numerics.modes import MASKED, VISIBLE

GRID = (2, 3, 4, 6)  # (L, nT, nH, nW): every axis a different length


@pytest.mark.parametrize("dim", [8, 12, 64])
def test_positional_codes_distinct_on_non_square_grid(dim: int) -> None:
    code = positional_encoding(GRID, dim, torch.float64).reshape(-1, dim)  # [N, D]
    distance = torch.cdist(code, code)  # [N, N]
    off_diagonal = distance + torch.eye(len(code), dtype=torch.float64) * 1e9
    assert code.shape == (math.prod(GRID), dim)
    assert float(off_diagonal.min()) > 1e-3


def test_positional_code_of_each_axis_depends_on_its_index_only() -> None:
    dim, frequencies = 64, 8
    code = positional_encoding(GRID, dim, torch.float64)  # [L, nT, nH, nW, D]
    omega = POSITION_MAX_PERIOD ** (-torch.arange(frequencies, dtype=torch.float64) / frequencies)
    for axis, size in enumerate(GRID):
        part = code[..., 2 * frequencies * axis: 2 * frequencies * (axis + 1)]  # [L, nT, nH, nW, 2F]
        for i in range(size):
            index = [slice(None)] * 4
            index[axis] = i
            expected = torch.cat([torch.sin(i * omega), torch.cos(i * omega)])  # [2F]
            torch.testing.assert_close(part[tuple(index)], expected.expand_as(part[tuple(index)]))


def test_positional_code_padding_is_zero() -> None:
    code = positional_encoding(GRID, 13)
    assert torch.equal(code[..., 8:], torch.zeros_like(code[..., 8:]))
    with pytest.raises(ValueError, match="at least 8"):
        positional_encoding(GRID, 7)


def _alpha(longitude: float, hour: float = 6.0, latitude: float = 45.0) -> torch.Tensor:
    return torch.tensor([2010.0, 100.0, hour, 850.0, latitude, longitude, 0.25], dtype=torch.float64)


def test_alpha_features_wrap_longitude_and_hour() -> None:
    torch.testing.assert_close(alpha_features(_alpha(0.0)), alpha_features(_alpha(360.0)))
    midnight, next_midnight = _alpha(10.0, hour=0.0), _alpha(10.0, hour=24.0)
    torch.testing.assert_close(alpha_features(midnight), alpha_features(next_midnight))
    near = (alpha_features(_alpha(359.9)) - alpha_features(_alpha(0.0))).abs().max()
    far = (alpha_features(_alpha(180.0)) - alpha_features(_alpha(0.0))).abs().max()
    assert float(near) < 1e-2 < float(far)
    south, north = _alpha(0.0, latitude=-60), _alpha(0.0, latitude=60)
    assert not torch.allclose(alpha_features(south), alpha_features(north))


def test_alpha_embedding_same_for_longitude_0_and_360() -> None:
    torch.manual_seed(0)
    embedding = AlphaEmbedding(32).double()
    torch.testing.assert_close(embedding(_alpha(0.0)), embedding(_alpha(360.0)))


def _field_inputs(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    tokens = torch.randn(2, 1, 2, 2, 3, 8, generator=generator, dtype=dtype)  # [B, L, nT, nH, nW, D_f]
    modes = torch.randint(0, 4, tokens.shape[:5], generator=generator).to(torch.int8)
    modes[0, 0, 0, 0, 0] = MASKED
    alpha = _alpha(20.0).expand(*tokens.shape[:5], 7).clone()
    return tokens, modes, alpha


@pytest.mark.parametrize("kind", ["linear", "transformer"])
def test_masked_tokens_get_the_mask_embedding(kind: str) -> None:
    torch.manual_seed(0)
    embedding = FieldEmbedding((2, 2, 2), 16, kind).double()
    tokens, modes, alpha = _field_inputs()
    x = embedding(tokens, modes, alpha)  # [B, N, D]
    assert x.shape == (2, 12, 16)
    code = positional_encoding((1, 2, 2, 3), 16, torch.float64).reshape(12, 16)
    expected = embedding.mask_token + embedding.alpha(alpha[0, 0, 0, 0, 0]) + code[0]
    torch.testing.assert_close(x[0, 0], expected)
    poisoned = tokens.masked_fill((modes == MASKED)[..., None], float("nan"))
    y = embedding(poisoned.requires_grad_(), modes, alpha)
    torch.testing.assert_close(y, x, rtol=0, atol=0)
    y.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in embedding.parameters() if p.grad is not None)


def test_visible_values_reach_the_embedding() -> None:
    torch.manual_seed(0)
    embedding = FieldEmbedding((2, 2, 2), 16).double()
    tokens, modes, alpha = _field_inputs()
    modes[0, 0, 0, 0, 1] = VISIBLE
    moved = tokens.clone()
    moved[0, 0, 0, 0, 1] += 1.0
    with torch.no_grad():
        change = (embedding(moved, modes, alpha) - embedding(tokens, modes, alpha)).abs().sum(-1)  # [B, N]
    assert change[0, 1] > 0 and float(change.sum() - change[0, 1]) == 0.0


def test_sub_token_embedding_takes_any_token_size() -> None:
    torch.manual_seed(0)
    embedding = SubTokenEmbedding((2, 2, 2), dim=24, width=16)
    assert embedding(torch.randn(3, 5, 8)).shape == (3, 5, 24)
    assert embedding(torch.randn(3, 32), token_size=(2, 4, 4)).shape == (3, 24)
    with pytest.raises(ValueError, match="token size"):
        embedding(torch.randn(3, 9))
    positions = sub_token_positions((2, 3, 4), torch.float64)  # [24, 24]
    assert torch.unique(positions, dim=0).shape[0] == 24  # every point has its own features
