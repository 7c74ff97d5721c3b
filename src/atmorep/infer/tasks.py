"""The inference tasks as patterns over a box window: where the window lies, what is predicted.

Every case has a *reference time* (the ``time`` coordinate of the output, see ``docs/inference.md``):

* ``forecast``: the initialisation, the last given step. The window ends ``k * tt`` steps after it
  (``k = train.forecast_tokens`` time tokens of ``tt`` steps are predicted); longer leads roll out.
* ``interpolate``: the last given step before the gap. The first and the last time token of the
  window are given, the ``T - 2 tt`` steps between them are predicted.
* ``infill``: the window start; a region (latitude-longitude rectangle) is hidden at every step.
* ``reconstruct``: the window start; a fraction of token-sized blocks, drawn on the domain's grid, is
  hidden (plain masked reconstruction).
* ``downscale``: the window start; every step is given only as block means of ``factor x factor``
  points (a coarse field) and predicted at full resolution.

Targets are given as a point mask ``[T, H, W]`` on the whole domain, so that overlapping tiles agree
on what is hidden; in a tile, a token is a target when any of its points is
(:func:`atmorep.infer.predictor.token_modes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from atmorep.config import RunConfig
from atmorep.errors import DataError
from atmorep.numerics.modes import COARSENED, MASKED

TASKS = ("forecast", "interpolate", "infill", "reconstruct", "downscale")
Region = tuple[float, float, float, float]  # (lat_min, lat_max, lon_min, lon_max) in degrees


@dataclass(frozen=True)
class CaseLayout:
    """How a task places its box window around a reference time.

    Attributes:
        task: the task name.
        window: ``T``, box steps.
        reference: the window step of the reference time.
        predicted: the window steps written out (their offsets from ``reference`` are the output's
            ``prediction_timedelta`` in box steps).
        mode: the token mode of targets (``MASKED``, or ``COARSENED`` for downscaling).
    """

    task: str
    window: int
    reference: int
    predicted: tuple[int, ...]
    mode: int = MASKED

    @property
    def offsets(self) -> np.ndarray:
        """``[P]`` int64: offsets of the predicted steps from the reference, in box steps."""
        return np.asarray(self.predicted, dtype=np.int64) - self.reference

    @property
    def block(self) -> int:
        """Steps predicted per rollout step (forecast)."""
        return len(self.predicted)

    @property
    def read_steps(self) -> int:
        """Window steps read from the store: up to the reference for a forecast (it never sees its
        targets), the whole window otherwise."""
        return self.reference + 1 if self.task == "forecast" else self.window

    @property
    def with_mask(self) -> bool:
        """Whether the task hides points of given steps (infill, reconstruct), so that its output comes
        with the point mask of what was predicted."""
        return self.task in ("infill", "reconstruct")

    def time_targets(self) -> np.ndarray:
        """``[T]`` bool: the steps whose points are all targets (forecast, interpolate, downscale)."""
        steps = np.zeros(self.window, dtype=bool)
        steps[list(self.predicted)] = True
        return steps


def time_token_size(config: RunConfig) -> int:
    """The time token length ``tt`` shared by all fields (DataError if they differ)."""
    sizes = {f.token_size[0] for f in config.fields}
    if len(sizes) != 1:
        raise DataError(f"inference needs one time token length for all fields, the checkpoint's fields have "
                        f"{ {f.name: f.token_size[0] for f in config.fields} }")
    return sizes.pop()


def case_layout(task: str, config: RunConfig) -> CaseLayout:
    """The window layout of ``task`` for the model of ``config``."""
    if task not in TASKS:
        raise DataError(f"unknown inference task '{task}'; expected one of {list(TASKS)}")
    window, tt = config.data.box.shape[0], time_token_size(config)
    tokens = window // tt
    if task == "forecast":
        k = config.train.forecast_tokens
        if not 1 <= k < tokens:
            raise DataError(f"train.forecast_tokens={k} leaves no input in a window of {tokens} time tokens")
        return CaseLayout(task, window, window - k * tt - 1, tuple(range(window - k * tt, window)))
    if task == "interpolate":
        if tokens < 3:
            raise DataError(f"interpolation needs at least 3 time tokens per window, the model has {tokens}")
        return CaseLayout(task, window, tt - 1, tuple(range(tt, window - tt)))
    mode = COARSENED if task == "downscale" else MASKED
    return CaseLayout(task, window, 0, tuple(range(window)), mode)


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


def target_points(layout: CaseLayout, grid: tuple[int, int], *, region: np.ndarray | None = None,
                  ratio: float = 0.5, block: tuple[int, int, int] = (1, 1, 1),
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The point mask ``[T, H, W]`` bool of one case on a domain of ``grid = (H, W)`` points.

    Args:
        layout: the task's window layout.
        grid: the domain's shape.
        region: ``[H, W]`` bool, the hidden region (infill).
        ratio: the hidden fraction of blocks (reconstruct).
        block: ``(tt, th, tw)``, the block size of reconstruct (a token).
        generator: the random stream of reconstruct.
    """
    h, w = grid
    if layout.task == "infill":
        if region is None or not region.any():
            raise DataError("infill: the region to fill holds no grid point of the domain")
        return torch.as_tensor(region)[None].expand(layout.window, h, w).clone()
    if layout.task == "reconstruct":
        return _random_blocks(layout.window, grid, ratio, block, generator)
    steps = torch.as_tensor(layout.time_targets())
    return steps[:, None, None].expand(layout.window, h, w).clone()


def _random_blocks(window: int, grid: tuple[int, int], ratio: float, block: tuple[int, int, int],
                   generator: torch.Generator | None) -> torch.Tensor:
    """``round(ratio * N)`` of the ``N`` blocks of a block grid aligned at index 0, as points."""
    if not 0.0 < ratio <= 1.0:
        raise DataError(f"reconstruct: the hidden fraction must lie in (0, 1], got {ratio}")
    counts = [-(-size // b) for size, b in zip((window, *grid), block)]  # blocks per axis, ceil
    total = int(np.prod(counts))
    chosen = torch.zeros(total, dtype=torch.bool)
    chosen[torch.randperm(total, generator=generator)[:max(1, round(ratio * total))]] = True
    blocks = chosen.reshape(counts)  # [nT, nH, nW]
    for axis, b in enumerate(block):
        blocks = blocks.repeat_interleave(b, dim=axis)
    return blocks[:window, :grid[0], :grid[1]].contiguous()  # [T, H, W]


def case_times(store: str | Path, task: str, config: RunConfig, every_hours: float,
               lead_hours: float | None = None) -> tuple[np.datetime64, ...]:
    """Reference times every ``every_hours`` from the first one whose window and verifying truth lie
    inside ``store`` (a forecast's truth reaches ``lead_hours`` after its reference)."""
    from atmorep.data.store import Store

    axis = Store(store).time
    layout = case_layout(task, config)
    spacing = (axis[1] - axis[0]) * config.data.time_step
    after = lead_hours if task == "forecast" and lead_hours is not None else (
        (layout.window - 1 - layout.reference) * (spacing / np.timedelta64(1, "h")))
    first = axis[0] + layout.reference * spacing
    last = axis[-1] - np.timedelta64(int(after * 3600), "s")
    every = np.timedelta64(int(every_hours * 3600), "s")
    times = np.arange(first, last + np.timedelta64(1, "s"), every)
    return tuple(times[np.isin(times, axis)])
