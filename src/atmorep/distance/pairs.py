"""Pairs of patches at t and t + lag from prepared stores: random ones for training, enumerated ones for
scoring, and control pairs whose second patch comes from another run over the same calendar times.

A pair is four grid indices: the first time, the lag class k (the lag is ``k * step_hours``), the
southernmost row and the westernmost column of the patch (longitude wraps). Both patches lie at the
same place. Both times lie in one *segment* of the store: a run of equally spaced steps (a gap in the
time axis ends one) inside one of the configured periods ``[start, end)`` (the whole store when none).
The chosen channels of the latitude band ``|lat| <= max_latitude`` are read into memory once
(``T x C x band x W`` float32: 53 MB for 90 hourly days, two channels, 32 x 96 points).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atmorep.data.store import Store
from atmorep.distance.config import EvaluationSpec, PairSpec, Source
from atmorep.errors import DataError

HOUR = np.timedelta64(1, "h")


@dataclass(frozen=True)
class Pairs:
    """N pairs as grid indices of their store.

    Attributes:
        time: ``[N]`` index of the first time.
        lag: ``[N]`` lag class k in 1..K.
        latitude: ``[N]`` store row of the southernmost patch row.
        longitude: ``[N]`` store column of the westernmost patch column.
    """

    time: np.ndarray
    lag: np.ndarray
    latitude: np.ndarray
    longitude: np.ndarray

    def __len__(self) -> int:
        return int(self.time.size)

    def take(self, index: np.ndarray | slice) -> Pairs:
        return Pairs(self.time[index], self.lag[index], self.latitude[index], self.longitude[index])


class PatchSource:
    """The channels of one store that pairs are cut from, held in memory.

    Args:
        source: the store and its periods.
        spec: channels, lags and patch size.

    Raises:
        DataError: a channel the store lacks, a lag that is no multiple of its time step or fits in no
            segment, a patch larger than the latitude band or the globe, a non-finite value in the band.
    """

    def __init__(self, source: Source, spec: PairSpec):
        self.spec, self.path = spec, source.path
        store = Store(source.path)
        self.store = store
        self.time = store.time
        self.lag_steps = self._lag_steps(store, spec)  # [K + 1], index 0 unused
        self.rows = self._band(store, spec)
        self.segments = _segments(self.time, source.bounds(), self.path)
        self._first = [np.zeros(0, np.int64)] + [self._valid_first(k) for k in range(1, spec.lags + 1)]
        if self._first[spec.lags].size == 0:
            longest = max((stop - start for start, stop in self.segments), default=0)
            raise DataError(f"store '{self.path}': the longest lag {spec.lags * spec.step_hours:g} h "
                            f"({self.lag_steps[-1]} steps) fits in no contiguous period of its times (the "
                            f"longest has {longest} steps); shorten pairs.lags or pairs.step_hours")
        self.values = self._read(store, spec)  # [T, C, band, W]

    @staticmethod
    def _lag_steps(store: Store, spec: PairSpec) -> np.ndarray:
        if store.time.size < 2:
            raise DataError(f"store '{store.path}' has {store.time.size} time step(s); pairs need two or "
                            "more")
        steps, counts = np.unique(np.diff(store.time), return_counts=True)
        spacing = float(steps[np.argmax(counts)] / HOUR)  # the usual step, hours
        ratio = spec.step_hours / spacing
        if not np.isclose(ratio, round(ratio)) or round(ratio) < 1:
            raise DataError(f"store '{store.path}' steps by {spacing:g} h; pairs.step_hours="
                            f"{spec.step_hours:g} must be a positive multiple of it")
        return np.arange(spec.lags + 1) * int(round(ratio))

    @staticmethod
    def _band(store: Store, spec: PairSpec) -> np.ndarray:
        rows = np.flatnonzero(np.abs(store.latitude) <= spec.max_latitude)
        height, width = spec.patch
        if rows.size < height:
            raise DataError(f"store '{store.path}': a patch of {height} rows does not fit in the "
                            f"{rows.size} rows within |latitude| <= {spec.max_latitude:g} (pairs.patch, "
                            "pairs.max_latitude)")
        if width > store.longitude.size:
            raise DataError(f"store '{store.path}': a patch of {width} columns is wider than its "
                            f"{store.longitude.size} longitudes (pairs.patch)")
        return rows

    def _read(self, store: Store, spec: PairSpec) -> np.ndarray:
        if store.members > 1:
            raise DataError(f"store '{store.path}' holds {store.members} ensemble members; pairs need a "
                            "store of one run (prepare one member with --member)")
        band = slice(int(self.rows[0]), int(self.rows[-1]) + 1)
        channels = []
        for channel in spec.channels:
            store.require_field(channel.field)
            array = store.arrays[channel.field]
            if store.is_surface(channel.field):
                if channel.level != 0:
                    raise DataError(f"store '{store.path}': field '{channel.field}' has no levels; write it "
                                    f"as '{channel.field}' (not '{channel.label}')")
                channels.append(array[:, band, :])  # [T, band, W]
            else:
                level = store.level_indices(channel.field, [channel.level])[0]
                channels.append(array[:, level, band, :])
        values = np.stack(channels, axis=1).astype(np.float32, copy=False)  # [T, C, band, W]
        used = np.zeros(values.shape[0], bool)  # the times pairs can reach: those in the periods
        for start, stop in self.segments:
            used[start:stop] = True
        bad = ~np.isfinite(values) & used[:, None, None, None]
        if bad.any():
            t, c = np.argwhere(bad)[0][:2]
            raise DataError(f"store '{store.path}': {int(bad.sum())} non-finite value(s) of "
                            f"'{spec.channels[c].label}' within |latitude| <= {spec.max_latitude:g}, the "
                            f"first at {self.time[t]}; pairs need complete fields: leave those times out "
                            "of the store's periods (data.train.periods, data.validation.periods)")
        return values

    def _valid_first(self, lag: int) -> np.ndarray:
        steps = self.lag_steps[lag]
        return np.concatenate([np.arange(start, stop - steps, dtype=np.int64)
                               for start, stop in self.segments] or [np.zeros(0, np.int64)])

    def first_times(self, lag: int) -> np.ndarray:
        """``[M]`` indices of the first times from which lag class ``lag`` stays inside a segment."""
        return self._first[lag]

    @property
    def latitude_starts(self) -> np.ndarray:
        """Store rows where a patch may start (all its rows inside the band)."""
        return self.rows[: self.rows.size - self.spec.patch[0] + 1]

    def second_time(self, pairs: Pairs) -> np.ndarray:
        """``[N]`` index of the second time of each pair."""
        return pairs.time + self.lag_steps[pairs.lag]

    def hours(self, index: np.ndarray) -> np.ndarray:
        """UTC hour of day ``[N]`` (0..23) of time indices."""
        return ((self.time[index] - self.time[index].astype("datetime64[D]")) // HOUR).astype(np.int64)

    def days(self, index: np.ndarray) -> np.ndarray:
        """Day number ``[N]`` (days since 1970-01-01) of time indices."""
        return self.time[index].astype("datetime64[D]").astype(np.int64)

    def patches(self, pairs: Pairs, second: PatchSource | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The two patches of each pair, ``[N, C, H, W]`` each, physical units.

        Args:
            pairs: indices into this source.
            second: where the second patches come from (a control run over the same times and grid);
                this source when None.
        """
        other = self if second is None else second
        if other is not self:
            other.store.check_pairs_with(self.store, "control pairs")
        return self._cut(pairs.time, pairs), other._cut(self.second_time(pairs), pairs)

    def _cut(self, time: np.ndarray, pairs: Pairs) -> np.ndarray:
        height, width = self.spec.patch
        rows = (pairs.latitude - self.rows[0])[:, None, None] + np.arange(height)[None, :, None]  # [N, H, 1]
        cols = (pairs.longitude[:, None, None] + np.arange(width)[None, None, :]) % self.values.shape[-1]
        patches = self.values[time[:, None, None], :, rows, cols]  # [N, H, W, C]
        return np.ascontiguousarray(patches.transpose(0, 3, 1, 2))  # [N, C, H, W]


class PairSampler:
    """Random pairs: a lag class uniform in 1..K, a first time uniform among those where it fits, a row
    uniform among the band's patch starts, a column uniform over the globe. Deterministic given ``seed``.
    """

    def __init__(self, source: PatchSource, seed: int):
        self.source = source
        self.rng = np.random.default_rng(seed)

    def draw(self, count: int, lag: int | None = None) -> Pairs:
        """``count`` pairs; all of lag class ``lag`` when given."""
        rng, source = self.rng, self.source
        lag = rng.integers(1, source.spec.lags + 1, count) if lag is None else np.full(count, lag)
        time = np.empty(count, np.int64)
        for k in np.unique(lag):
            where = lag == k
            time[where] = rng.choice(source.first_times(int(k)), int(where.sum()))
        latitude = rng.choice(source.latitude_starts, count)
        longitude = rng.integers(0, source.values.shape[-1], count)
        return Pairs(time, lag.astype(np.int64), latitude.astype(np.int64), longitude.astype(np.int64))


def evaluation_pairs(source: PatchSource, spec: EvaluationSpec) -> Pairs:
    """The enumerated pairs of :class:`EvaluationSpec`, time-major: every class at every first time and
    place, so the classes are balanced (chance is 1/K) and the set is the same on every call."""
    first = source.first_times(source.spec.lags)
    hours = source.time[first].astype("datetime64[h]").astype(np.int64)  # since 1970-01-01 00 UTC
    first = first[hours % spec.time_stride_hours == 0]
    if first.size == 0:
        raise DataError(f"store '{source.path}': no first time on the stride of {spec.time_stride_hours} h "
                        "leaves room for the longest lag")
    starts = source.latitude_starts
    rows = np.unique(starts[np.round(np.linspace(0, starts.size - 1, spec.latitude_places)).astype(int)])
    cols = np.arange(0, source.values.shape[-1], spec.longitude_stride)
    lags = np.arange(1, source.spec.lags + 1)
    grid = np.meshgrid(first, lags, rows, cols, indexing="ij")  # [times, K, rows, cols] each
    time, lag, latitude, longitude = (g.ravel().astype(np.int64) for g in grid)
    return Pairs(time, lag, latitude, longitude)


def _segments(time: np.ndarray, periods: list[tuple[np.datetime64, np.datetime64]], path: str
              ) -> list[tuple[int, int]]:
    """Half-open index ranges of equally spaced steps (the usual step), cut to the periods."""
    steps, counts = np.unique(np.diff(time), return_counts=True)
    usual = steps[np.argmax(counts)]
    breaks = np.flatnonzero(np.diff(time) != usual) + 1
    runs = list(zip(np.r_[0, breaks], np.r_[breaks, time.size]))
    if not periods:
        return [(int(a), int(b)) for a, b in runs]
    segments = []
    for start, end in periods:
        inside = np.flatnonzero((time >= start) & (time < end))
        if inside.size == 0:
            raise DataError(f"store '{path}' has no time in the period [{start}, {end}) (it covers "
                            f"{time[0]} .. {time[-1]})")
        for a, b in runs:
            lo, hi = max(int(a), int(inside[0])), min(int(b), int(inside[-1]) + 1)
            if lo < hi:
                segments.append((lo, hi))
    return segments
