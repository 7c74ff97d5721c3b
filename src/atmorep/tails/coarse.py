"""A period of the backbone's (coarse) store held in memory, cut into boxes for the backbone.

:class:`CoarsePeriod` reads the backbone's fields at its levels, and the coarse products a tail's first
guess interpolates (``t2m`` for a 2 m temperature tail, ``t@0.835`` for a model-level one), for the
times in ``[start, end)``. Boxes are ``(t0, i0, k0)`` grid indices of their first step, southernmost
row and westernmost column; a box wraps past the last column of a global grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from atmorep.batch import EPOCH, BatchMetadata
from atmorep.data.store import Store
from atmorep.errors import DataError
from atmorep.numerics.longitude import is_global_longitude
from atmorep.tails.backbone import Backbone
from atmorep.tails.config import Target


@dataclass(frozen=True)
class BoxAt:
    """A box's first time index, southernmost row and westernmost column in the coarse period."""

    t0: int
    i0: int
    k0: int


def period_indices(times: np.ndarray, start: np.datetime64, end: np.datetime64, where: str) -> np.ndarray:
    """Indices of ``times`` in ``[start, end)``; DataError when there are none."""
    times = times.astype("datetime64[s]")
    index = np.flatnonzero((times >= start) & (times < end))
    if index.size == 0:
        raise DataError(f"{where}: no time in [{start}, {end}) (it covers {times[0]} to {times[-1]})")
    return index


def time_indices(times: np.ndarray, wanted: np.ndarray, where: str) -> np.ndarray:
    """Indices of the ``wanted`` times in the ascending ``times``; DataError naming the first absent."""
    times, wanted = times.astype("datetime64[s]"), wanted.astype("datetime64[s]")
    index = np.searchsorted(times, wanted)
    found = (index < times.size) & (times[np.minimum(index, times.size - 1)] == wanted)
    if not found.all():
        raise DataError(f"{where} has no time {wanted[~found][0]} of the period")
    return index


def read_target(store: Store, target: Target, times: np.ndarray) -> np.ndarray:
    """``[T, H, W]`` float32 physical values of one target at the time indices ``times``."""
    store.require_field(target.field)
    array = store.arrays[target.field]
    if store.is_surface(target.field):
        if target.level is not None:
            raise DataError(f"store '{store.path}': field '{target.field}' has no levels, "
                            f"but the tail asks for it at level {target.level:g}")
        return np.asarray(array.get_orthogonal_selection((times, slice(None), slice(None))), np.float32)
    if target.level is None:
        raise DataError(f"store '{store.path}': field '{target.field}' has levels "
                        f"{list(store.field_levels(target.field))}; name one as {target.field}@LEVEL")
    level = store.level_indices(target.field, [target.level])
    values = array.get_orthogonal_selection((times, level, slice(None), slice(None)))
    return np.asarray(values[:, 0], np.float32)


class CoarsePeriod:
    """The coarse store's period in memory.

    Args:
        path: the prepared store the backbone reads (its grid is the backbone's).
        backbone: the backbone (its fields, levels and box).
        targets: the products a tail's first guess needs from this store.
        start, end: the period ``[start, end)``.

    Attributes:
        time: ``[T]`` datetime64[s]; latitude ``[H]`` ascending; longitude ``[W]``.
        inputs: backbone field -> ``[T, L, H, W]`` float32 physical values.
        products: target label -> ``[T, H, W]`` float32 physical values.
    """

    def __init__(self, path: str, backbone: Backbone, targets: Sequence[Target],
                 start: np.datetime64, end: np.datetime64) -> None:
        self.store = store = Store(path)
        self.backbone = backbone
        index = period_indices(store.time, start, end, f"store '{path}'")
        self.time = store.time[index].astype("datetime64[s]")
        self.latitude = np.asarray(store.latitude, np.float64)
        self.longitude = np.asarray(store.longitude, np.float64)
        self.global_longitude = is_global_longitude(self.longitude)
        bt, bh, bw = backbone.box
        if index.size < bt or self.latitude.size < bh or self.longitude.size < bw:
            raise DataError(f"store '{path}': the period [{start}, {end}) is {index.size} steps of "
                            f"{self.latitude.size} x {self.longitude.size} points, smaller than the "
                            f"backbone's box {backbone.box}")
        if backbone.config.data.time_step != 1:
            raise DataError(f"backbone '{backbone.directory}': tails need a backbone trained on "
                            f"consecutive steps (data.time_step 1, not {backbone.config.data.time_step})")
        self.inputs = {}
        for name, levels in backbone.levels.items():
            store.require_field(name)
            where = store.level_indices(name, list(levels)) if not store.is_surface(name) else None
            array = store.arrays[name]
            if where is None:
                self.inputs[name] = np.asarray(array.get_orthogonal_selection(
                    (index, slice(None), slice(None))), np.float32)[:, None]
            else:
                self.inputs[name] = np.asarray(array.get_orthogonal_selection(
                    (index, where, slice(None), slice(None))), np.float32)
        self.products = {t.label: read_target(store, t, index) for t in targets}
        for label, values in [*self.inputs.items(), *self.products.items()]:
            if not np.isfinite(values).all():
                raise DataError(f"store '{path}': field '{label}' holds NaN in [{start}, {end}); tails "
                                "need complete coarse input")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.time.size, self.latitude.size, self.longitude.size)

    def random_boxes(self, rng: np.random.Generator, count: int) -> list[BoxAt]:
        """``count`` boxes drawn uniformly over start times, rows and (on a global grid) columns."""
        (nt, nh, nw), (bt, bh, bw) = self.shape, self.backbone.box
        columns = nw if self.global_longitude else nw - bw + 1
        return [BoxAt(int(rng.integers(nt - bt + 1)), int(rng.integers(nh - bh + 1)),
                      int(rng.integers(columns))) for _ in range(count)]

    def tiling(self) -> list[BoxAt]:
        """Boxes covering every step and point once at least (the last row, column and window of
        boxes moved back to fit where the sizes do not divide)."""
        (nt, nh, nw), (bt, bh, bw) = self.shape, self.backbone.box
        columns = _starts(nw, bw, wrap=self.global_longitude)
        return [BoxAt(t0, i0, k0) for t0 in _starts(nt, bt) for i0 in _starts(nh, bh) for k0 in columns]

    def columns(self, box: BoxAt) -> np.ndarray:
        """``[W_box]`` the coarse column indices of a box."""
        return (box.k0 + np.arange(self.backbone.box[2])) % self.longitude.size

    def backbone_input(self, boxes: Sequence[BoxAt]) -> tuple[dict[str, np.ndarray], BatchMetadata]:
        """Backbone field -> ``[B, L, T, H, W]`` physical values of the boxes, and their metadata."""
        bt, bh, _ = self.backbone.box
        values = {name: np.stack([array[b.t0:b.t0 + bt, :, b.i0:b.i0 + bh][..., self.columns(b)]
                                  .transpose(1, 0, 2, 3) for b in boxes])
                  for name, array in self.inputs.items()}  # [B, L, T, H, W]
        seconds = [(self.time[b.t0:b.t0 + bt] - EPOCH).astype(np.int64) for b in boxes]
        metadata = BatchMetadata(
            time=torch.from_numpy(np.stack(seconds)),
            latitude=torch.from_numpy(np.stack([self.latitude[b.i0:b.i0 + bh] for b in boxes])),
            longitude=torch.from_numpy(np.stack([np.mod(self.longitude[self.columns(b)], 360.0)
                                                 for b in boxes])),
            levels={name: levels if levels else (0.0,) for name, levels in self.backbone.levels.items()},
            level_kind=self.store.level_kind, resolution=self.store.resolution)
        return values, metadata


def _starts(size: int, length: int, wrap: bool = False) -> list[int]:
    """Starts of consecutive pieces of ``length`` covering ``range(size)``; without ``wrap`` the last
    piece is moved back to end at ``size``."""
    starts = list(range(0, size, length))
    if not wrap and starts[-1] + length > size:
        starts[-1] = size - length
    return sorted(set(starts))
