"""Tiling a global or regional grid with overlapping boxes, and blending the tiles back without seams.

The model sees local boxes of ``H x W`` grid points. To predict a whole domain, a :class:`TilePlan`
places overlapping boxes (tiles) over the grid, :func:`extract` cuts them out, the model runs on
batches of tiles and :func:`blend` puts its outputs back together with smooth weights, so that no
seam shows where tiles meet. :func:`run_tiled` does all three.

Placement, per axis, for a domain of ``n`` points, boxes of ``b`` points and a minimum overlap of
``o`` points (so a stride of at most ``s = b - o``):

* open axis (latitude; the longitude of a regional grid): ``1 + ceil((n - b) / s)`` tiles, the
  first flush with index 0, the last flush with index ``n - 1``, the others evenly spaced between.
  Tiles never leave the domain, so in latitude they never cross a pole. **Poles**: the polar rows
  are covered by the outer rows of the southernmost and northernmost tiles (as in training, where
  the polar caps are seen only near the edges of boxes, see ``atmorep.data.sampler``); no other
  tile reaches them, and the weights do not taper at the edge of the domain, so these tiles carry
  the full weight there.
* periodic axis (the longitude of a global grid): ``ceil(n / s)`` tiles evenly spaced around the
  globe; a tile that runs past the last column continues at column 0 (across the 0/360 meridian).

Origins are rounded from even spacing, so every gap is at most ``s`` and every overlap at least ``o``.

Weights: along each axis a tile's window is 1 in its interior and tapers across every overlap of
``m`` points it shares with its neighbour: the later tile rises as ``r_j = sin^2(pi (j + 1) / (2 (m + 1)))``,
``j = 0 .. m - 1``, the earlier one falls as ``1 - r_j``, so the two sum to 1, every covered point
has a strictly positive weight and neighbouring values differ by at most ``pi / (2 (m + 1))``.
Windows are divided by their sum over tiles (which matters only where more than two tiles overlap),
so the weights of each axis form a partition of unity; a tile's weight is the product of its
latitude and longitude weights, hence the weights of all tiles sum to 1 at every grid point.
With a requested overlap ``o`` of at most half the box, neighbouring weights differ by at most
``pi / (2 (o + 1))``; heavier overlaps stay smooth, but where three or more tiles share a point the
normalisation can steepen the ramps by a small factor (a waste of compute anyway: every point is
then predicted three times or more).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from atmorep.errors import DataError
from atmorep.numerics.longitude import is_global_longitude

logger = logging.getLogger(__name__)

Overlap = int | float | tuple[int | float, int | float]
TileFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of a domain lie. Tile ``k`` is latitude tile ``k // nlon_tiles``, longitude tile
    ``k % nlon_tiles``.

    Attributes:
        grid_shape: ``(nlat, nlon)`` of the domain.
        box: ``(H, W)`` of a tile in grid points.
        overlap: the minimum overlap ``(latitude, longitude)`` in grid points between neighbouring tiles.
        periodic: whether longitude is periodic (a global grid); tiles then wrap past the last column.
        latitude_origins: southernmost row of each latitude tile, ascending.
        longitude_origins: westernmost column of each longitude tile, ascending, in ``[0, nlon)``.
    """

    grid_shape: tuple[int, int]
    box: tuple[int, int]
    overlap: tuple[int, int]
    periodic: bool
    latitude_origins: tuple[int, ...]
    longitude_origins: tuple[int, ...]

    def __post_init__(self) -> None:
        for axis, size, length, origins, periodic in self._axes():
            if not origins or length > size or any(o < 0 or o >= size or (not periodic and o + length > size)
                                                   for o in origins):
                raise DataError(f"tile plan: {axis} origins {origins} do not fit boxes of {length} points "
                                f"in a domain of {size} points")
            if np.any(np.bincount(_axis_index(origins, size, length).ravel(), minlength=size) == 0):
                raise DataError(f"tile plan: {axis} origins {origins} leave points of the domain uncovered")

    @classmethod
    def from_grid(cls, latitude: np.ndarray | torch.Tensor, longitude: np.ndarray | torch.Tensor,
                  box: tuple[int, int], overlap: Overlap) -> TilePlan:
        """The plan for a grid given by its coordinates; longitude is periodic if the grid is global.

        Args:
            latitude: ``[nlat]`` degrees north, ascending.
            longitude: ``[nlon]`` degrees east in [0, 360), ascending, equally spaced; global when
                ``nlon * spacing == 360``, otherwise a regional subset.
            box: ``(H, W)`` tile size in grid points.
            overlap: minimum overlap in grid points (int) or as a fraction of the box (float in
                [0, 1)), for both axes or per axis ``(latitude, longitude)``.
        """
        lat = np.asarray(latitude, dtype=np.float64)
        lon = np.asarray(longitude, dtype=np.float64)
        if lat.ndim != 1 or lat.size == 0 or np.any(np.diff(lat) <= 0):
            raise DataError("tile plan: latitude must be 1-D and ascending (south to north)")
        return cls.for_shape((lat.size, lon.size), box, overlap, periodic=is_global_longitude(lon))

    @classmethod
    def for_shape(cls, grid_shape: tuple[int, int], box: tuple[int, int], overlap: Overlap, *,
                  periodic: bool, align: int = 1) -> TilePlan:
        """The plan for a grid of ``grid_shape = (nlat, nlon)`` points (see :meth:`from_grid`).

        ``align > 1`` puts the tile origins on multiples of ``align`` (the blocks of a coarse input
        coarsened from index 0 then fall on the same points of every tile as in training); a tile
        flush with the end of an open axis stays flush, aligned only where the domain allows it.
        """
        (nlat, nlon), (h, w) = _positive_pair(grid_shape, "grid shape"), _positive_pair(box, "box")
        oh, ow = _overlap_points(overlap, (h, w))
        if align > min(h, w):
            raise DataError(f"tile plan: blocks of {align} points do not fit a box of {h} x {w} points; "
                            "choose a coarsening factor no larger than the box")
        lat_origins = _axis_origins(nlat, h, oh, align, False, "latitude")
        lon_origins = _axis_origins(nlon, w, ow, align, periodic, "longitude")
        plan = cls((nlat, nlon), (h, w), (oh, ow), bool(periodic), lat_origins, lon_origins)
        logger.debug("tile plan: %d x %d tiles of %s on a %s grid", len(lat_origins), len(lon_origins),
                     plan.box, plan.grid_shape)
        return plan

    def _axes(self):
        yield "latitude", self.grid_shape[0], self.box[0], self.latitude_origins, False
        yield "longitude", self.grid_shape[1], self.box[1], self.longitude_origins, self.periodic

    @property
    def tiles_shape(self) -> tuple[int, int]:
        """Number of tiles along latitude and longitude."""
        return len(self.latitude_origins), len(self.longitude_origins)

    @property
    def count(self) -> int:
        """``K``, the number of tiles."""
        return len(self.latitude_origins) * len(self.longitude_origins)

    @property
    def origins(self) -> tuple[tuple[int, int], ...]:
        """``(row, column)`` of the south-west corner of every tile, in tile order."""
        return tuple((r, c) for r in self.latitude_origins for c in self.longitude_origins)

    @cached_property
    def _index(self) -> tuple[np.ndarray, np.ndarray]:
        rows = _axis_index(self.latitude_origins, self.grid_shape[0], self.box[0])  # [K_lat, H]
        cols = _axis_index(self.longitude_origins, self.grid_shape[1], self.box[1])  # [K_lon, W]
        n_lon = len(self.longitude_origins)
        return np.repeat(rows, n_lon, axis=0), np.tile(cols, (len(self.latitude_origins), 1))

    @cached_property
    def _weights(self) -> np.ndarray:
        lat = _axis_weights(self.latitude_origins, self.grid_shape[0], self.box[0], False)  # [K_lat, H]
        lon = _axis_weights(self.longitude_origins, self.grid_shape[1], self.box[1], self.periodic)
        return (lat[:, None, :, None] * lon[None, :, None, :]).reshape(self.count, *self.box)  # [K, H, W]

    def tile_index(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Grid indices of every tile: rows ``[K, H]`` and columns ``[K, W]`` (wrapped modulo nlon)."""
        rows, cols = self._index
        return torch.tensor(rows, device=device), torch.tensor(cols, device=device)  # copies

    def weights(self, dtype: torch.dtype = torch.float64,
                device: torch.device | str | None = None) -> torch.Tensor:
        """Blending weights ``[K, H, W]``: smooth, positive, summing to 1 over tiles at every grid point."""
        return torch.tensor(self._weights, dtype=dtype, device=device)  # a copy: the plan stays intact

    def tile_coordinates(self, latitude: np.ndarray | torch.Tensor,
                         longitude: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Coordinates of every tile, ready for ``BatchMetadata``: latitude ``[K, H]`` and longitude
        ``[K, W]`` float64 (longitudes of wrapped tiles stay in [0, 360), increasing modulo 360)."""
        lat = torch.as_tensor(np.asarray(latitude, dtype=np.float64))
        lon = torch.as_tensor(np.asarray(longitude, dtype=np.float64))
        if (lat.numel(), lon.numel()) != self.grid_shape:
            raise DataError(f"tile plan: coordinates of {lat.numel()} x {lon.numel()} points, "
                            f"expected the plan's grid {self.grid_shape}")
        rows, cols = self.tile_index()
        return lat[rows], lon[cols]


def extract(field: torch.Tensor, plan: TilePlan) -> torch.Tensor:
    """Cut the tiles of a plan out of a field, wrapping longitude on global grids.

    Args:
        field: ``[..., nlat, nlon]`` on the plan's grid.
        plan: where the tiles lie.

    Returns:
        ``[K, ..., H, W]``, tile ``k`` first.
    """
    _check_trailing(field, plan.grid_shape, "field", "the plan's grid")
    rows, cols = plan.tile_index(field.device)
    return _cut(field, rows, cols)


def _cut(field: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The tiles ``[k, ..., H, W]`` of ``field [..., nlat, nlon]`` at grid rows ``[k, H]`` and columns
    ``[k, W]``."""
    tiles = field[..., rows[:, :, None], cols[:, None, :]]  # [..., k, H, W]
    return tiles.movedim(-3, 0).contiguous()  # [k, ..., H, W]


def blend(tiles: torch.Tensor, plan: TilePlan) -> torch.Tensor:
    """Put tiles back on the grid: the weighted sum of the tiles covering each point divided by the
    sum of their weights (scatter-add with wrapped longitude indices).

    Args:
        tiles: ``[K, ..., H, W]`` floating point, one per tile of the plan, in tile order.
        plan: where the tiles lie.

    Returns:
        ``[..., nlat, nlon]``.
    """
    if tiles.ndim < 3 or tiles.shape[0] != plan.count:
        raise DataError(f"blend: tiles of shape {tuple(tiles.shape)}, expected [K={plan.count}, ..., H, W]")
    blender = _Blender(plan)
    blender.add(tiles, torch.arange(plan.count, device=tiles.device))
    return blender.result()


def run_tiled(fn: TileFn, field: torch.Tensor, plan: TilePlan, batch_size: int | None = None) -> torch.Tensor:
    """Apply a box-local function to a whole field: extract the tiles, run ``fn`` on batches of tiles,
    blend. The result does not depend on ``batch_size`` (bit for bit on CPU, where the scatter-add runs
    in tile order; on GPU up to the rounding of atomic additions). Wrap the call in ``torch.no_grad()``
    for inference.

    Args:
        fn: called as ``fn(tiles, index)`` with ``tiles [b, ..., H, W]`` and ``index [b]`` int64, the
            tile numbers (rows of ``plan.origins`` and of ``plan.tile_coordinates``); returns
            ``[b, ..., H, W]`` (its middle dimensions may differ from those of ``tiles``, e.g. members).
        field: ``[..., nlat, nlon]``.
        plan: where the tiles lie.
        batch_size: tiles per call of ``fn``; all at once when None.

    Returns:
        ``[..., nlat, nlon]`` with the middle dimensions of ``fn``'s output.
    """
    size = plan.count if batch_size is None else int(batch_size)
    if size < 1:
        raise DataError(f"run_tiled: batch_size must be at least 1, got {batch_size}")
    _check_trailing(field, plan.grid_shape, "field", "the plan's grid")
    rows, cols = plan.tile_index(field.device)  # [K, H], [K, W]
    blender = _Blender(plan)
    for start in range(0, plan.count, size):
        stop = min(start + size, plan.count)
        index = torch.arange(start, stop, device=field.device)
        output = fn(_cut(field, rows[start:stop], cols[start:stop]), index)
        if output.ndim < 3 or output.shape[0] != index.numel():
            raise DataError(f"run_tiled: fn returned shape {tuple(output.shape)} for {index.numel()} "
                            "tiles, expected [b, ..., H, W]")
        blender.add(output, index)
    return blender.result()


class _Blender:
    """Accumulates weighted tiles into ``[M, nlat * nlon]``, tile by tile in increasing order.

    The weights ``[K, H, W]`` and the flat grid index ``[K, H * W]`` of every tile are built once, with
    the dtype and device of the first tiles added; each batch selects its rows.
    """

    def __init__(self, plan: TilePlan):
        self.plan = plan
        self.total: torch.Tensor | None = None
        self.lead: tuple[int, ...] = ()
        self.weights: torch.Tensor | None = None  # [K, H, W]
        self.flat_index: torch.Tensor | None = None  # [K, H * W]

    def _start(self, tiles: torch.Tensor) -> None:
        """Allocate the sum and build weights and flat index for tiles like ``tiles [b, ..., H, W]``."""
        plan = self.plan
        self.lead = tuple(tiles.shape[1:-2])
        rows = int(np.prod(self.lead, dtype=np.int64))
        self.total = tiles.new_zeros(rows, plan.grid_shape[0] * plan.grid_shape[1])  # [M, nlat * nlon]
        self.weights = plan.weights(tiles.dtype, tiles.device)  # [K, H, W]
        grid_rows, grid_cols = plan.tile_index(tiles.device)  # [K, H], [K, W]
        flat = grid_rows[:, :, None] * plan.grid_shape[1] + grid_cols[:, None, :]  # [K, H, W]
        self.flat_index = flat.reshape(plan.count, -1)  # [K, H * W]

    def add(self, tiles: torch.Tensor, index: torch.Tensor) -> None:
        """Add ``tiles [b, ..., H, W]`` of tile numbers ``index [b]``."""
        plan, (h, w) = self.plan, self.plan.box
        _check_trailing(tiles, plan.box, "tiles", "the plan's box")
        if not tiles.is_floating_point():
            raise DataError(f"blend: tiles must be floating point, got {tiles.dtype}")
        if self.total is None:
            self._start(tiles)
        elif tuple(tiles.shape[1:-2]) != self.lead:
            raise DataError(f"blend: tiles of shape {tuple(tiles.shape)}, expected middle dimensions "
                            f"{self.lead} like the first tiles")
        assert self.total is not None and self.weights is not None and self.flat_index is not None
        index = index.to(self.total.device)
        weights = self.weights[index]  # [b, H, W]
        weighted = tiles * weights.reshape(-1, *([1] * len(self.lead)), h, w)  # [b, ..., H, W]
        source = weighted.movedim(0, -3).reshape(self.total.shape[0], -1)  # [M, b * H * W]
        self.total.index_add_(1, self.flat_index[index].reshape(-1), source)

    def result(self) -> torch.Tensor:
        """``[..., nlat, nlon]``: the accumulated sum divided by the summed weights."""
        assert self.total is not None and self.weights is not None and self.flat_index is not None, \
            "no tiles were added"
        norm = self.total.new_zeros(self.total.shape[1])  # [nlat * nlon]
        norm.index_add_(0, self.flat_index.reshape(-1), self.weights.reshape(-1))  # over K * H * W
        return (self.total / norm).reshape(*self.lead, *self.plan.grid_shape)  # [..., nlat, nlon]


def _positive_pair(values: tuple[int, int], name: str) -> tuple[int, int]:
    pair = tuple(values)
    if len(pair) != 2 or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0
                                 for v in pair):
        raise DataError(f"tile plan: {name} must be two positive integers (latitude, longitude), "
                        f"got {values}")
    return int(pair[0]), int(pair[1])


def _overlap_points(overlap: Overlap, box: tuple[int, int]) -> tuple[int, int]:
    """Overlap in grid points per axis from points (int) or box fractions (float in [0, 1))."""
    pair = overlap if isinstance(overlap, tuple | list) else (overlap, overlap)
    if len(pair) != 2:
        raise DataError(f"tile plan: overlap must be one value or (latitude, longitude), got {overlap}")
    points = []
    for axis, value, length in zip(("latitude", "longitude"), pair, box):
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            raise DataError(f"tile plan: {axis} overlap must be a number, got {value!r}")
        if isinstance(value, float | np.floating) and not 0 <= value < 1:
            raise DataError(f"tile plan: {axis} overlap fraction must lie in [0, 1), got {value}")
        count = int(np.floor(value * length + 0.5)) if isinstance(value, float | np.floating) else int(value)
        if not 0 <= count < length:
            raise DataError(f"tile plan: {axis} overlap of {count} points must lie in [0, box {length})")
        points.append(count)
    return points[0], points[1]


def _open_origins(size: int, length: int, overlap: int, axis: str) -> tuple[int, ...]:
    """Origins on a non-periodic axis: first and last tile flush with the domain edges, even spacing."""
    if length > size:
        raise DataError(f"tile plan: the {axis} domain of {size} points is smaller than the box of "
                        f"{length} points; expected a box no larger than the domain")
    if length == size:
        return (0,)
    gaps = -(-(size - length) // (length - overlap))  # ceil((n - b) / s)
    return tuple((i * (size - length) + gaps // 2) // gaps for i in range(gaps + 1))


def _periodic_origins(size: int, length: int, overlap: int, axis: str) -> tuple[int, ...]:
    """Origins on a periodic axis: ``ceil(n / s)`` tiles evenly spaced around the circle."""
    if length > size:
        raise DataError(f"tile plan: the periodic {axis} domain of {size} points is smaller than the box "
                        f"of {length} points; expected a box no larger than the domain")
    count = -(-size // (length - overlap))  # ceil(n / s)
    return tuple((i * size + count // 2) // count for i in range(count))


def _axis_origins(size: int, length: int, overlap: int, align: int, periodic: bool,
                  axis: str) -> tuple[int, ...]:
    """The origins along one axis: evenly spaced with at least ``overlap`` shared points, moved to
    multiples of ``align``; the spacing narrows only where moving them would share fewer points."""
    place = _periodic_origins if periodic else _open_origins
    for spacing in range(overlap, length):
        origins = _aligned(place(size, length, spacing, axis), size, length, align, periodic)
        if align <= 1 or _overlaps(origins, size, length, periodic) >= overlap:
            return origins
    logger.warning("tile plan: tiles on multiples of %d along %s share %d points, fewer than the %d asked "
                   "for", align, axis, _overlaps(origins, size, length, periodic), overlap)
    return origins


def _overlaps(origins: tuple[int, ...], size: int, length: int, periodic: bool) -> int:
    """The fewest points neighbouring tiles share (``length`` for a single tile)."""
    following = list(origins[1:]) + ([origins[0] + size] if periodic else [])
    return min((length - (b - a) for a, b in zip(origins, following)), default=length)


def _aligned(origins: tuple[int, ...], size: int, length: int, align: int, periodic: bool) -> tuple[int, ...]:
    """``origins`` moved to the nearest multiple of ``align`` (an open axis' last tile kept in the domain)."""
    if align <= 1:
        return origins
    if periodic:
        return tuple(sorted({int(round(o / align)) * align % size for o in origins}))
    last = size - length  # the last tile stays flush with the domain's end
    return tuple(sorted({min(int(round(o / align)) * align, last) for o in origins[:-1]} | {origins[-1]}))


def _axis_index(origins: tuple[int, ...], size: int, length: int) -> np.ndarray:
    """Grid indices ``[n_tiles, length]`` of the tiles along one axis, wrapped modulo ``size``."""
    return (np.asarray(origins, dtype=np.int64)[:, None] + np.arange(length)) % size


def _axis_weights(origins: tuple[int, ...], size: int, length: int, periodic: bool) -> np.ndarray:
    """Normalised windows ``[n_tiles, length]`` along one axis (see the module docstring)."""
    windows = np.ones((len(origins), length))
    pairs = len(origins) if periodic else len(origins) - 1
    for i in range(pairs):
        j = (i + 1) % len(origins)
        following = origins[j] + (size if j == 0 else 0)
        shared = origins[i] + length - following
        if shared > 0:
            rise = np.sin(0.5 * np.pi * np.arange(1, shared + 1) / (shared + 1)) ** 2
            windows[i, length - shared:] *= 1.0 - rise
            windows[j, :shared] *= rise
    index = _axis_index(origins, size, length)
    total = np.zeros(size)
    np.add.at(total, index, windows)
    return windows / total[index]


def _check_trailing(tensor: torch.Tensor, shape: tuple[int, int], name: str, what: str) -> None:
    if tensor.ndim < 2 or tuple(tensor.shape[-2:]) != tuple(shape):
        raise DataError(f"{name} of shape {tuple(tensor.shape)} must end with {what} {tuple(shape)}")
