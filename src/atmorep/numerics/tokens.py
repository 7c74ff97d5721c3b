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

import torch

from atmorep.batch import Batch, BatchMetadata
from atmorep.errors import AtmorepError

if TYPE_CHECKING:
    from atmorep.config import FieldConfig

ALPHA_NAMES = ("year", "day_of_year", "hour", "level", "latitude", "longitude", "resolution")


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


def _day_of_year_and_hour(seconds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Year, day of year (0-based, fractional days excluded) and hour (fractional) from Unix seconds."""
    days = torch.div(seconds, 86400, rounding_mode="floor")
    hour = (seconds - days * 86400).to(torch.float64) / 3600.0
    # civil-from-days (Howard Hinnant's algorithm), vectorised in int64
    z = days + 719468
    era = torch.div(z, 146097, rounding_mode="floor")
    doe = z - era * 146097
    yoe = torch.div(doe - doe // 1460 + doe // 36524 - doe // 146096, 365, rounding_mode="floor")
    year = yoe + era * 400
    doy_march = doe - (365 * yoe + yoe // 4 - yoe // 100)  # day of year counted from March 1st
    month_index = (5 * doy_march + 2) // 153  # 0 = March
    year = year + (month_index >= 10).to(torch.int64)  # Jan and Feb belong to the next civil year
    jan1 = _days_from_civil(year)
    return year, days - jan1, hour


def _days_from_civil(year: torch.Tensor) -> torch.Tensor:
    """Days since 1970-01-01 of January 1st of ``year`` (proleptic Gregorian)."""
    y = year - 1  # January belongs to the previous March-based year
    era = torch.div(y, 400, rounding_mode="floor")
    yoe = y - era * 400
    doe = 365 * yoe + yoe // 4 - yoe // 100 + 306  # March 1st of y + 306 days = January 1st of year
    return era * 146097 + doe - 719468


def token_alpha(metadata: BatchMetadata, field: str, token_size: tuple[int, int, int]) -> torch.Tensor:
    """The auxiliary values alpha of every token of a field.

    Each token gets the time of its first step (year, day of year, hour), its level value, the
    latitude and longitude of its centre, and the grid resolution in degrees.

    Returns:
        ``[B, L, nT, nH, nW, 7]`` float32, columns in the order of :data:`ALPHA_NAMES`.
    """
    tt, th, tw = token_size
    time = metadata.time[:, ::tt]  # [B, nT]
    year, doy, hour = _day_of_year_and_hour(time)
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
    return torch.stack(columns, dim=-1).to(torch.float32)


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
