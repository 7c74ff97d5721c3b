"""BoxSampler: area-preserving latitudes, periodic longitudes, streams, windows across stores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from scipy import stats

from atmorep.data.prepare import prepare_dataset
from atmorep.data.sampler import BoxSampler
from atmorep.data.store import BoxIndex, Store
from atmorep.errors import DataError
from tests.data.conftest import STORE_BOX, draw_batch, make_reference

SIGNIFICANCE = 1e-3  # fixed seeds: a failure means the distribution is wrong, not bad luck


@dataclass
class Grid:
    """The part of a Store the sampler uses: coordinates and members, no values."""

    times: int
    latitude: np.ndarray
    nlon: int
    members: int = 1
    path: str = "grid"

    @property
    def time(self) -> np.ndarray:
        return np.arange(self.times)

    @property
    def longitude(self) -> np.ndarray:
        return np.arange(self.nlon) * 360.0 / self.nlon


def _draw_boxes(sampler: BoxSampler, count: int, seed_batch: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Latitude rows and longitude columns of ``count`` boxes from one stream."""
    rng = sampler.generator(0, seed_batch)
    boxes = [sampler.draw_box(rng, 0, 0, 0).index for _ in range(count)]
    return np.array([b.latitude for b in boxes]), np.array([b.longitude for b in boxes])


def _key(box) -> tuple[int, ...]:
    return (box.store, box.index.member, box.index.time, box.index.latitude, box.index.longitude)


# ------------------------------------------------------------------------------- latitude, longitude


def test_latitude_centres_follow_cos_latitude():
    latitude = np.linspace(-90.0, 90.0, 181)  # 1 degree, both poles on the grid
    height, count = 9, 40_000
    sampler = BoxSampler([Grid(40, latitude, 360)], (4, height, 20), boxes_per_window=1, seed=11)
    rows, _ = _draw_boxes(sampler, count)
    assert rows.min() >= 0 and rows.max() <= latitude.size - height  # the whole box lies on the grid
    # centre of a box starting at each row; a drawn centre snaps to the nearest row, so row i covers
    # the band between the midpoints to its neighbours, of probability d(sin(latitude)) over the band
    centres = 0.5 * (latitude[: latitude.size - height + 1] + latitude[height - 1:])
    edges = np.concatenate([centres[:1], 0.5 * (centres[1:] + centres[:-1]), centres[-1:]])
    probability = np.diff(np.sin(np.deg2rad(edges)))
    probability /= probability.sum()
    counts = np.bincount(rows, minlength=centres.size)
    assert stats.chisquare(counts, count * probability).pvalue > SIGNIFICANCE
    # the test has power: uniform rows (the over-sampling of the poles) are rejected
    assert stats.chisquare(counts).pvalue < 1e-12
    # and the polar caps get what their area gives them: above 60 degrees about 1 - sin(60) of the band
    polar = np.abs(centres[rows]) > 60.0
    expected = (np.sin(np.deg2rad(centres[-1])) - np.sin(np.deg2rad(60.0))) / np.sin(np.deg2rad(centres[-1]))
    assert polar.mean() == pytest.approx(expected, abs=4 * np.sqrt(expected / count))


def test_latitude_band_of_a_regional_grid():
    latitude = np.linspace(20.0, 70.0, 101)  # a regional, descending-free half-degree grid
    height, count = 21, 20_000
    sampler = BoxSampler([Grid(40, latitude, 100)], (4, height, 20), boxes_per_window=1, seed=3)
    rows, _ = _draw_boxes(sampler, count)
    centres = latitude[rows + height // 2]  # odd height: the centre is a grid row
    assert centres.min() >= 25.0 and centres.max() <= 65.0
    sin = np.sin(np.deg2rad(centres))
    low, high = np.sin(np.deg2rad(25.0)), np.sin(np.deg2rad(65.0))
    # uniform in sin(latitude) up to the snapping to rows (0.5 degree): compare with KS on a coarse scale
    assert stats.kstest(sin, stats.uniform(low, high - low).cdf).statistic < 0.02


def test_longitudes_are_uniform_over_columns():
    count = 36_000
    sampler = BoxSampler([Grid(40, np.linspace(-90.0, 90.0, 181), 360)], (4, 9, 20), boxes_per_window=1,
                         seed=5)
    _, columns = _draw_boxes(sampler, count)
    assert columns.min() >= 0 and columns.max() < 360
    assert stats.chisquare(np.bincount(columns, minlength=360)).pvalue > SIGNIFICANCE
    assert np.mean(columns > 360 - 20) > 0.04  # boxes starting in the last 20 columns wrap past 360


# ------------------------------------------------------------------------------- reading boxes


def _expected_box(source, field: str, box: BoxIndex, shape, time_step: int = 1) -> np.ndarray:
    """``[L, T, H, W]`` cut from the source with numpy, longitude indices wrapped modulo the grid."""
    t, h, w = shape
    values = source[field].values
    if values.ndim == 3:
        values = values[:, None]  # [T, 1, H, W]
    times = box.time + time_step * np.arange(t)
    columns = (box.longitude + np.arange(w)) % values.shape[-1]
    cut = np.take(values[times, :, box.latitude: box.latitude + h], columns, axis=-1)  # [T, L, H, W]
    return np.moveaxis(cut, 1, 0)


@pytest.mark.parametrize("field", ["t", "sp"])
def test_boxes_wrapping_past_360_read_correctly(prepared_store, store_source, field):
    store = Store(prepared_store)
    for column in (0, 19, 20, 21, 30, 35):  # 21..35 wrap: 16 columns from 21 end at 36 = column 0
        box = BoxIndex(time=7, latitude=4, longitude=column)
        values = store.read_box(field, box, STORE_BOX)
        assert values.dtype == np.float32
        assert np.array_equal(values, _expected_box(store_source, field, box, STORE_BOX))
        _, _, lon = store.box_coordinates(box, STORE_BOX)
        assert np.array_equal(lon, store_source["longitude"].values[(column + np.arange(16)) % 36])


def test_sampled_boxes_read_correctly_with_time_step_and_levels(prepared_store, store_source):
    store = Store(prepared_store)
    shape, step = (6, 8, 16), 2
    sampler = BoxSampler([store], shape, boxes_per_window=8, windows_per_batch=2, time_step=step, seed=2)
    boxes = draw_batch(sampler, 0, 0) + draw_batch(sampler, 0, 1)
    assert any(b.index.longitude + shape[2] > 36 for b in boxes)  # some wrap
    for box in boxes:
        assert box.index.time + (shape[0] - 1) * step < 48
        values = store.read_box("u", box.index, shape, time_step=step, levels=[1])
        assert np.array_equal(values, _expected_box(store_source, "u", box.index, shape, step)[1:])
        time, lat, _ = store.box_coordinates(box.index, shape, time_step=step)
        assert np.all(np.diff(time) == np.timedelta64(2, "h"))
        assert np.array_equal(lat, store_source["latitude"].values[box.index.latitude:][:8])


def test_members_are_sampled_and_read(tmp_path):
    source = make_reference(members=3)
    store = Store(prepare_dataset(source, tmp_path / "members.zarr", box=(2, 8, 16)))
    assert store.members == 3
    sampler = BoxSampler([store], (2, 8, 16), boxes_per_window=2, seed=0)
    drawn = {draw_batch(sampler, 0, k)[0].index.member for k in range(30)}
    assert drawn == {0, 1, 2}
    box = BoxIndex(time=1, latitude=3, longitude=30, member=2)
    expected = _expected_box(source.isel(member=2), "t", box, (2, 8, 16))
    assert np.array_equal(store.read_box("t", box, (2, 8, 16)), expected)


# ------------------------------------------------------------------------------------------- streams


def test_no_two_ranks_or_batches_share_a_stream():
    grid = Grid(1000, np.linspace(-90.0, 90.0, 181), 360)
    seen: dict[tuple, tuple] = {}
    for rank in range(4):
        sampler = BoxSampler([grid], (12, 9, 20), boxes_per_window=4, windows_per_batch=2, seed=7, rank=rank)
        for epoch in range(2):
            for batch in range(10):
                draws = tuple(_key(b) for b in draw_batch(sampler, epoch, batch))
                assert draws not in seen.values()
                seen[(rank, epoch, batch)] = draws
    boxes = [box for draws in seen.values() for box in draws]
    assert len(set(boxes)) > 0.99 * len(boxes)  # 640 boxes among ~2e8 positions: hardly any repeat


def test_same_seed_rank_epoch_batch_gives_the_same_draws():
    grid = Grid(1000, np.linspace(-90.0, 90.0, 181), 360)

    def draws(seed: int, rank: int, epoch: int, batch: int) -> list[tuple]:
        sampler = BoxSampler([grid], (12, 9, 20), boxes_per_window=4, windows_per_batch=2, seed=seed,
                             rank=rank)
        return [_key(b) for b in draw_batch(sampler, epoch, batch)]

    assert draws(3, 1, 2, 5) == draws(3, 1, 2, 5)
    assert draws(3, 1, 2, 5) != draws(4, 1, 2, 5)
    assert draws(3, 1, 2, 5) != draws(3, 1, 2, 6)
    assert draws(3, 1, 2, 5) != draws(3, 1, 3, 5)


def test_boxes_of_a_window_share_store_member_and_time():
    grids = [Grid(100, np.linspace(-90.0, 90.0, 181), 360, members=4),
             Grid(60, np.linspace(-80.0, 80.0, 161), 360)]
    sampler = BoxSampler(grids, (12, 9, 20), boxes_per_window=5, windows_per_batch=3, seed=1)
    boxes = draw_batch(sampler, 0, 0)
    assert len(boxes) == 15
    for start in range(0, 15, 5):
        window = {(b.store, b.index.member, b.index.time) for b in boxes[start: start + 5]}
        assert len(window) == 1


# ------------------------------------------------------------------------------------ several stores


def test_windows_are_chosen_proportionally_to_store_lengths():
    latitude = np.linspace(-90.0, 90.0, 19)
    grids = [Grid(48, latitude, 36), Grid(24, latitude, 36), Grid(12, latitude, 36)]
    sampler = BoxSampler(grids, (12, 8, 16), boxes_per_window=1, seed=9)
    windows = np.array([48 - 11, 24 - 11, 12 - 11])  # admissible first time indices per store
    rng = sampler.generator(0, 0)
    count = 20_000
    drawn = [sampler.draw_window(rng) for _ in range(count)]
    per_store = np.bincount([store for store, _, _ in drawn], minlength=3)
    assert stats.chisquare(per_store, count * windows / windows.sum()).pvalue > SIGNIFICANCE
    starts = np.array([start for store, _, start in drawn if store == 0])
    assert starts.max() == windows[0] - 1
    assert stats.chisquare(np.bincount(starts, minlength=windows[0])).pvalue > SIGNIFICANCE
    assert {start for store, _, start in drawn if store == 2} == {0}


def test_box_that_does_not_fit_a_store_is_an_error():
    grid = Grid(24, np.linspace(-90.0, 90.0, 19), 36)
    for box, step in (((25, 8, 16), 1), ((12, 8, 16), 3), ((12, 20, 16), 1), ((12, 8, 37), 1)):
        with pytest.raises(DataError, match="does not fit"):
            BoxSampler([grid], box, boxes_per_window=1, time_step=step)
    with pytest.raises(DataError, match="no stores"):
        BoxSampler([], (12, 8, 16), boxes_per_window=1)
