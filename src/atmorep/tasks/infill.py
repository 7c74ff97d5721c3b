"""Infilling: latitude-longitude rectangles hidden at every time and level, and predicted.

At inference the reference time is the window start and the region to fill (``infill_region``) is
hidden at every step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from atmorep.config import FieldConfig
from atmorep.errors import DataError
from atmorep.numerics.first_guess import SPATIAL
from atmorep.tasks.base import CaseLayout, MaskingError, Shape5, Task
from atmorep.tasks.draws import integer_below

Region = tuple[float, float, float, float]  # (lat_min, lat_max, lon_min, lon_max) in degrees


@dataclass(frozen=True)
class InfillTask(Task):
    """Rectangles in (latitude, longitude) token space are targets at every time and level.

    Per sample, ``regions`` rectangles are drawn, each with height and width uniform in
    ``[1, max(1, round(max_fraction * n))]`` tokens and a uniform position inside the grid; each
    field draws its own. A given ``mask`` (bool, broadcastable to ``[B, L, nT, nH, nW]``, e.g.
    ``[nH, nW]``, or a mapping from field name to such a mask) replaces the draw.
    """

    regions: int = 1
    max_fraction: float = 0.5
    mask: Tensor | Mapping[str, Tensor] | None = None
    name = "infill"
    guess_kind = SPATIAL
    baselines = ("spatial", "climatology")
    options = ("infill_region",)
    required_options = ("infill_region",)
    output_attrs = ("infill_region",)
    with_mask = True

    def __post_init__(self) -> None:
        if self.regions < 1 or not 0.0 < self.max_fraction <= 1.0:
            raise MaskingError(f"task 'infill': need regions >= 1 and max_fraction in (0, 1], got "
                               f"{self.regions} and {self.max_fraction}")

    def select(self, shape: Shape5, generator: torch.Generator, field: FieldConfig) -> Tensor:
        if self.mask is not None:
            return self._given(shape, field).to(generator.device)
        b, levels, nt, nh, nw = shape
        rows = self._intervals(b, nh, generator)  # [B, R, nH]
        cols = self._intervals(b, nw, generator)  # [B, R, nW]
        area = (rows[:, :, :, None] & cols[:, :, None, :]).any(dim=1)  # [B, nH, nW]
        return area[:, None, None].expand(shape).clone()

    def _intervals(self, batch: int, n: int, generator: torch.Generator) -> Tensor:
        """``[B, R, n]`` bool, one random contiguous interval per sample and region."""
        longest = max(1, round(self.max_fraction * n))
        size = 1 + integer_below(torch.full((batch, self.regions), longest, device=generator.device),
                                 generator)  # [B, R]
        start = integer_below(n - size + 1, generator)  # [B, R]
        position = torch.arange(n, device=generator.device)
        return (position >= start[..., None]) & (position < (start + size)[..., None])

    def _given(self, shape: Shape5, field: FieldConfig) -> Tensor:
        mask = self.mask[field.name] if isinstance(self.mask, Mapping) else self.mask
        try:
            return torch.broadcast_to(torch.as_tensor(mask, dtype=torch.bool), shape).clone()
        except RuntimeError:
            raise MaskingError(f"task 'infill', field '{field.name}': mask of shape {tuple(mask.shape)} "
                               f"does not broadcast to the token grid {shape}") from None

    def target_points(self, layout: CaseLayout, grid: tuple[int, int], *, region: np.ndarray | None = None,
                      ratio: float = 0.5, token_size: tuple[int, int, int] = (1, 1, 1),
                      generator: torch.Generator | None = None) -> Tensor:
        if region is None or not region.any():
            raise DataError("infill: the region to fill holds no grid point of the domain")
        return torch.as_tensor(region)[None].expand(layout.window, *grid).clone()


def region_points(latitude: np.ndarray, longitude: np.ndarray, region: Region) -> np.ndarray:
    """``[H, W]`` bool: the points inside a latitude-longitude rectangle.

    ``lon_min > lon_max`` (after reduction to [0, 360)) means a rectangle across the 0/360 meridian.
    """
    lat_min, lat_max, lon_min, lon_max = (float(v) for v in region)
    if lat_min > lat_max:
        raise DataError(f"region {region}: lat_min must not exceed lat_max")
    lat = (latitude >= lat_min) & (latitude <= lat_max)
    lon = longitude % 360.0
    west, east = lon_min % 360.0, lon_max % 360.0
    if lon_max - lon_min >= 360.0:
        inside = np.ones_like(lon, dtype=bool)
    elif west <= east:
        inside = (lon >= west) & (lon <= east)
    else:
        inside = (lon >= west) | (lon <= east)
    return lat[:, None] & inside[None, :]
