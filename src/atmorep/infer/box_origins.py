"""Where boxes of a store start: from times and places to grid indices, checked before any work.

A box of ``(T, H, W)`` grid points starts at a time index of the store (its first step; later steps
follow every ``time_step`` steps), at its southernmost row and its westernmost column. On a global
grid a box may run past the last column and continue at column 0; in latitude it never leaves the
grid. A *place* ``(latitude, longitude)`` gives the box centred on the grid point nearest to it, moved
north or south (and, on a regional grid, east or west) as far as needed to stay inside the grid, so
the box always contains that point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from atmorep.data.store import Store
from atmorep.errors import DataError
from atmorep.infer.tiling import TilePlan
from atmorep.numerics.longitude import is_global_longitude


@dataclass(frozen=True)
class BoxOrigins:
    """B boxes of one store as grid indices.

    Attributes:
        time: ``[B]`` int64 index of the first step.
        latitude: ``[B]`` int64 southernmost row.
        longitude: ``[B]`` int64 westernmost column.
    """

    time: np.ndarray
    latitude: np.ndarray
    longitude: np.ndarray

    def __post_init__(self) -> None:
        shapes = {np.shape(self.time), np.shape(self.latitude), np.shape(self.longitude)}
        if len(shapes) != 1 or len(shapes.pop()) != 1:
            raise DataError("box origins: time, latitude and longitude must be 1-D arrays of one length")

    def __len__(self) -> int:
        return int(np.size(self.time))

    def take(self, index: np.ndarray | slice) -> BoxOrigins:
        return BoxOrigins(self.time[index], self.latitude[index], self.longitude[index])


def check_origins(store: Store, origins: BoxOrigins, box: tuple[int, int, int], time_step: int = 1) -> None:
    """DataError unless every box of ``box = (T, H, W)`` points at ``origins`` lies inside the store
    (columns wrap)."""
    if not len(origins):
        return
    span = (box[0] - 1) * time_step
    inside = ((origins.time >= 0) & (origins.time + span < store.time.size) & (origins.latitude >= 0)
              & (origins.latitude + box[1] <= store.latitude.size) & (origins.longitude >= 0))
    if not inside.all():
        bad = int(np.flatnonzero(~inside)[0])
        raise DataError(f"store '{store.path}': the box of {box} points at time index {origins.time[bad]}, "
                        f"row {origins.latitude[bad]}, column {origins.longitude[bad]} does not lie inside "
                        f"its {store.time.size} times and {store.latitude.size} latitudes")


def time_indices(store: Store, times: Sequence[np.datetime64], steps: int, time_step: int = 1) -> np.ndarray:
    """``[I]`` store indices of the first steps of boxes of ``steps`` steps starting at ``times``.

    Raises:
        DataError: no time, a time that is not a step of the store, a box that runs past the store's end
            or over an irregular stretch of its time axis.
    """
    if len(times) == 0:
        raise DataError("no time given: name the boxes' first times (e.g. --time 2002-01-05T00)")
    axis, path = store.time, store.path
    wanted = np.asarray([np.datetime64(t, "s") for t in times])
    index = np.searchsorted(axis, wanted)
    span = (steps - 1) * time_step  # store steps from a box's first step to its last
    for t, i in zip(wanted, index):
        if i >= axis.size or axis[i] != t:
            raise DataError(f"time {t} is not a time step of store '{path}' (which covers {axis[0]} .. "
                            f"{axis[-1]})")
        if i + span >= axis.size:
            raise DataError(f"time {t}: a box of {steps} steps from it runs past the end of store '{path}' "
                            f"({axis[-1]}); the last first time is {axis[max(axis.size - 1 - span, 0)]}")
        spacing = np.diff(axis[i:i + span + 1])
        if spacing.size and np.any(spacing != axis[1] - axis[0]):
            raise DataError(f"store '{path}': irregular time steps in the box from {t}")
    return index.astype(np.int64)


def place_origin(store: Store, latitude: float, longitude: float, box: tuple[int, int]) -> tuple[int, int]:
    """``(row, column)`` of the box of ``box = (H, W)`` points centred on the grid point nearest to the
    place (moved to stay inside the grid, see the module docstring).

    Raises:
        DataError: a place that is not a finite latitude in [-90, 90] or lies outside the store's grid.
    """
    lat, lon = store.latitude, store.longitude
    h, w = box
    if lat.size < h or lon.size < w:
        raise DataError(f"store '{store.path}' has {lat.size} x {lon.size} grid points, fewer than the "
                        f"model's box of {h} x {w}")
    if not (np.isfinite(latitude) and np.isfinite(longitude) and -90.0 <= latitude <= 90.0):
        raise DataError(f"place ({latitude:g}, {longitude:g}): expected a latitude in [-90, 90] and a "
                        "finite longitude, degrees")
    half = 0.5 * store.resolution
    if not lat[0] - half <= latitude <= lat[-1] + half:
        raise DataError(f"place ({latitude:g}, {longitude:g}) lies outside store '{store.path}', which "
                        f"covers latitudes {lat[0]:g} .. {lat[-1]:g}")
    row = int(np.clip(np.argmin(np.abs(lat - latitude)) - h // 2, 0, lat.size - h))
    east = (lon - longitude + 180.0) % 360.0 - 180.0  # signed distance east of the place, degrees
    nearest = int(np.argmin(np.abs(east)))
    if is_global_longitude(lon):
        return row, (nearest - w // 2) % lon.size
    if abs(east[nearest]) > half:
        raise DataError(f"place ({latitude:g}, {longitude:g}) lies outside store '{store.path}', which "
                        f"covers longitudes {lon[0]:g} .. {lon[-1]:g}")
    return row, int(np.clip(nearest - w // 2, 0, lon.size - w))


def tile_origins(store: Store, box: tuple[int, int]) -> list[tuple[int, int]]:
    """``(row, column)`` of the tiles that cover the store's grid with the least overlap
    (:class:`~atmorep.infer.tiling.TilePlan` with no required overlap): none where the grid divides
    into boxes, as the T31 grid's 48 x 96 points into 3 x 3 boxes of 16 x 32."""
    lat, lon = store.latitude, store.longitude
    if lat.size < box[0] or lon.size < box[1]:
        raise DataError(f"store '{store.path}' has {lat.size} x {lon.size} grid points, fewer than the "
                        f"model's box of {box[0]} x {box[1]}")
    plan = TilePlan.for_shape((lat.size, lon.size), box, 0, periodic=is_global_longitude(lon))
    return list(plan.origins)


def box_origins(store: Store, times: Sequence[np.datetime64], box: tuple[int, int, int], time_step: int = 1,
                places: Sequence[tuple[float, float]] | None = None, all_tiles: bool = False) -> BoxOrigins:
    """Boxes of ``box = (T, H, W)`` points at every time and place, time-major (all places of the first
    time first).

    Args:
        store: the store the boxes are read from.
        times: their first times, steps of the store.
        box: ``(T, H, W)``.
        time_step: store steps between box steps.
        places: ``(latitude, longitude)`` degrees: one box centred on each (see :func:`place_origin`).
        all_tiles: instead of places, every tile of :func:`tile_origins`.

    Raises:
        DataError: neither or both of places and tiles, or a time or place as in :func:`time_indices` and
            :func:`place_origin`.
    """
    if bool(places) == bool(all_tiles):
        raise DataError("choose where the boxes lie: one or more places (--latitude with --longitude) or "
                        "every tile of the grid (--all-tiles), not both")
    first = time_indices(store, times, box[0], time_step)
    corners = tile_origins(store, box[1:]) if all_tiles else [
        place_origin(store, float(lat), float(lon), box[1:]) for lat, lon in places]
    rows, columns = (np.asarray(v, dtype=np.int64) for v in zip(*corners))
    return BoxOrigins(np.repeat(first, rows.size), np.tile(rows, first.size), np.tile(columns, first.size))
