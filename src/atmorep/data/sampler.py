"""Hierarchical Monte Carlo sampling of space-time boxes.

For every batch a time window is drawn first (a store, chosen with probability proportional to
its number of admissible windows, an ensemble member, then a start time), then
``boxes_per_window`` boxes inside that window, ``windows_per_batch`` times.

Latitude is drawn **area-preserving**: box centres are uniform in ``sin(latitude)`` over the band
of latitudes where a whole box fits on the grid, then snapped to the nearest admissible grid row.
Boxes never cross a pole: the caps of half a box height at each pole are covered only by the
edges of boxes, never by their centres. Longitude is uniform over grid columns and periodic (a
box may wrap past 360 degrees).

Streams: the draws of batch ``k`` of epoch ``e`` on rank ``r`` come from their own generator,
seeded with ``SeedSequence(seed, spawn_key=(r, e, k))``. So the stream depends only on
``(seed, rank, epoch, batch index)``: no two ranks share a stream, data-loader workers take
disjoint batch indices, the same stream results whatever the number of workers, and a resumed run
continues the identical stream from a saved ``(epoch, next_batch)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from atmorep.data.store import BoxIndex, Store
from atmorep.errors import DataError


@dataclass(frozen=True)
class SampledBox:
    """One box: which store and where."""

    store: int
    index: BoxIndex


class BoxSampler:
    """Draws box positions; knows nothing about values (see ``atmorep.data.dataset``)."""

    def __init__(
        self,
        stores: Sequence[Store],
        box: tuple[int, int, int],
        *,
        boxes_per_window: int,
        windows_per_batch: int = 1,
        time_step: int = 1,
        seed: int = 0,
        rank: int = 0,
    ):
        if not stores:
            raise DataError("no stores to sample from")
        self.stores = list(stores)
        self.box = tuple(box)
        self.boxes_per_window = boxes_per_window
        self.windows_per_batch = windows_per_batch
        self.time_step = time_step
        self.seed = seed
        self.rank = rank
        t, h, w = self.box
        self._windows = []
        for store in self.stores:
            span = (t - 1) * time_step + 1
            if span > store.time.size or h > store.latitude.size or w > store.longitude.size:
                raise DataError(
                    f"store '{store.path}': box (time {span}, latitude {h}, longitude {w}) does not "
                    f"fit the grid (time {store.time.size}, latitude {store.latitude.size}, "
                    f"longitude {store.longitude.size})"
                )
            self._windows.append(store.time.size - span + 1)
        self._store_probability = np.asarray(self._windows, dtype=np.float64) / sum(self._windows)
        self._centres = [_row_centres(s.latitude, h) for s in self.stores]

    def generator(self, epoch: int, batch: int) -> np.random.Generator:
        """The generator of one batch: independent per (seed, rank, epoch, batch)."""
        sequence = np.random.SeedSequence(self.seed, spawn_key=(self.rank, epoch, batch))
        return np.random.default_rng(sequence)

    def draw_window(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """``(store index, member, first time index)`` of one time window."""
        store = int(rng.choice(len(self.stores), p=self._store_probability))
        member = int(rng.integers(self.stores[store].members))
        start = int(rng.integers(self._windows[store]))
        return store, member, start

    def draw_box(self, rng: np.random.Generator, store: int, member: int, start: int) -> SampledBox:
        """A box inside a window: area-preserving latitude, periodic longitude."""
        centres = self._centres[store]
        sin_low, sin_high = np.sin(np.deg2rad(centres[0])), np.sin(np.deg2rad(centres[-1]))
        phi = np.rad2deg(np.arcsin(rng.uniform(sin_low, sin_high)))
        row = int(np.argmin(np.abs(centres - phi)))
        column = int(rng.integers(self.stores[store].longitude.size))
        return SampledBox(store, BoxIndex(time=start, latitude=row, longitude=column, member=member))

    def iter_batch(self, rng: np.random.Generator):
        """Yield boxes window by window; callers may draw replacements from the same ``rng``."""
        for _ in range(self.windows_per_batch):
            window = self.draw_window(rng)
            for _ in range(self.boxes_per_window):
                yield self.draw_box(rng, *window)


def _row_centres(latitude: np.ndarray, height: int) -> np.ndarray:
    """Centre latitude of a box of ``height`` rows starting at each admissible row (ascending)."""
    first = latitude[: latitude.size - height + 1]
    last = latitude[height - 1 :]
    return 0.5 * (first + last)
