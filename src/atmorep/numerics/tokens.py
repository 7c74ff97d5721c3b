"""Tokenisation: boxes to space-time tokens and back, and the token-level auxiliary values (alpha).

A field tensor ``[B, L, T, H, W]`` with token size ``(tt, th, tw)`` becomes
``[B, L, nT, nH, nW, tt*th*tw]`` with ``nT = T/tt`` etc.; the values inside a token are flattened
in (time, latitude, longitude) order. The round trip is exact (a pure reshape/permute).
The token sequence of a field, where one is needed, is the flattening of ``(L, nT, nH, nW)`` in
that order: ``N = L * nT * nH * nW``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from atmorep.batch import ALPHA_NAMES, EPOCH, Batch, BatchMetadata
from atmorep.errors import AtmorepError

if TYPE_CHECKING:
    from atmorep.config import FieldConfig

__all__ = ["ALPHA_NAMES", "TokenError", "calendar", "guide_tokens", "token_alpha", "token_grid", "tokenise",
           "tokenise_batch", "tokens_per_field", "untokenise"]


class TokenError(AtmorepError, ValueError):
    """A box does not split into whole tokens."""


def token_grid(
    box_shape: tuple[int, int, int], token_size: tuple[int, int, int], field: str = "?"
) -> tuple[int, int, int]:
    """Number of tokens ``(nT, nH, nW)`` along each axis; raises TokenError if they do not fit."""
    grid = []
    for axis, size, token in zip(("time", "latitude", "longitude"), box_shape, token_size):
        if token < 1 or size % token:
            raise TokenError(
                f"field '{field}': box {axis} size {size} is not a multiple of token size {token}"
            )
        grid.append(size // token)
    return tuple(grid)  # type: ignore[return-value]


def tokenise(values: torch.Tensor, token_size: tuple[int, int, int]) -> torch.Tensor:
    """Cut boxes into tokens.

    Args:
        values: ``[B, L, T, H, W]``.
        token_size: ``(tt, th, tw)``.

    Returns:
        ``[B, L, nT, nH, nW, tt*th*tw]``.
    """
    b, levels, t, h, w = values.shape
    tt, th, tw = token_size
    nt, nh, nw = token_grid((t, h, w), token_size)
    x = values.reshape(b, levels, nt, tt, nh, th, nw, tw)  # split each axis into (tokens, inside)
    x = x.permute(0, 1, 2, 4, 6, 3, 5, 7)  # [B, L, nT, nH, nW, tt, th, tw]
    return x.reshape(b, levels, nt, nh, nw, tt * th * tw)


def untokenise(tokens: torch.Tensor, token_size: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of :func:`tokenise`: ``[..., nT, nH, nW, tt*th*tw]`` to ``[..., T, H, W]``.

    Leading dimensions (``B, L`` or ``B, E, L`` ...) are kept as they are.
    """
    *lead, nt, nh, nw, d = tokens.shape
    tt, th, tw = token_size
    if d != tt * th * tw:
        raise TokenError(f"token length {d} does not match token size {token_size}")
    x = tokens.reshape(*lead, nt, nh, nw, tt, th, tw)
    k = len(lead)
    x = x.permute(*range(k), k, k + 3, k + 1, k + 4, k + 2, k + 5)  # [..., nT, tt, nH, th, nW, tw]
    return x.reshape(*lead, nt * tt, nh * th, nw * tw)


def calendar(seconds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Year, day of year (0-based) and hour of day (fractional) of Unix seconds (numpy's calendar)."""
    times = EPOCH + seconds.detach().cpu().numpy().astype("timedelta64[s]")
    years, days = times.astype("datetime64[Y]"), times.astype("datetime64[D]")
    year = years.astype(np.int64) + 1970
    day = (days - years.astype("datetime64[D]")).astype(np.int64)
    hour = (times - days.astype("datetime64[s]")).astype(np.int64) / 3600.0
    return tuple(torch.from_numpy(np.asarray(v)).to(seconds.device) for v in (year, day, hour))


def token_alpha(metadata: BatchMetadata, field: str, token_size: tuple[int, int, int]) -> torch.Tensor:
    """The auxiliary values alpha of every token of a field.

    Each token gets the time of its first step (year, day of year, hour), its level value, the
    latitude and longitude of its centre, and the grid resolution in degrees; then the metadata's
    overrides (``metadata.alpha``) are applied by name.

    Returns:
        ``[B, L, nT, nH, nW, len(ALPHA_NAMES)]`` float32, columns in the order of :data:`ALPHA_NAMES`.
    """
    tt, th, tw = token_size
    time = metadata.time[:, ::tt]  # [B, nT]
    year, doy, hour = calendar(time)
    b, nt = time.shape
    lat = metadata.latitude.reshape(b, -1, th).mean(dim=-1)  # [B, nH]
    lon = _circular_mean_degrees(metadata.longitude.reshape(b, -1, tw))  # [B, nW]
    levels = torch.as_tensor(metadata.levels[field], dtype=torch.float64)  # [L]
    nl, nh, nw = len(levels), lat.shape[1], lon.shape[1]
    shape = (b, nl, nt, nh, nw)
    columns = [
        year.to(torch.float64)[:, None, :, None, None].expand(shape),
        doy.to(torch.float64)[:, None, :, None, None].expand(shape),
        hour[:, None, :, None, None].expand(shape),
        levels[None, :, None, None, None].expand(shape),
        lat[:, None, None, :, None].expand(shape),
        lon[:, None, None, None, :].expand(shape),
        torch.full(shape, float(metadata.resolution), dtype=torch.float64),
    ]
    for override in metadata.alpha:
        index = ALPHA_NAMES.index(override.name)
        columns[index] = override.apply(columns[index])
    return torch.stack(columns, dim=-1).to(torch.float32)


def guide_tokens(batch: Batch, fields: Sequence[FieldConfig]) -> dict[str, torch.Tensor]:
    """Tokens ``[B, L, nT, nH, nW, D_f]`` of another model's values of the fields the batch has them for."""
    guide = batch.guide()
    return {f.name: tokenise(guide[f.name], f.token_size) for f in fields if f.name in guide}


def tokenise_batch(batch: Batch,
                   fields: Sequence[FieldConfig]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Tokens ``[B, L, nT, nH, nW, D_f]`` and alpha ``[B, L, nT, nH, nW, 7]`` of every field.

    Alpha is computed from the metadata and moved to the device of the field's tokens.
    """
    tokens, alpha = {}, {}
    for f in fields:
        tokens[f.name] = tokenise(batch.fields[f.name], f.token_size)
        alpha[f.name] = token_alpha(batch.metadata, f.name, f.token_size).to(tokens[f.name].device)
    return tokens, alpha


def _circular_mean_degrees(lon: torch.Tensor) -> torch.Tensor:
    """Mean longitude in [0, 360) over the last axis, correct across the 0/360 seam."""
    rad = torch.deg2rad(lon)
    mean = torch.rad2deg(torch.atan2(torch.sin(rad).mean(-1), torch.cos(rad).mean(-1)))
    return torch.remainder(mean, 360.0)


def tokens_per_field(box_shape: tuple[int, int, int], token_size: tuple[int, int, int], levels: int) -> int:
    """``N = L * nT * nH * nW``."""
    return levels * math.prod(token_grid(box_shape, token_size))
