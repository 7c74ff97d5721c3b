"""Tiling a domain with overlapping boxes: placement, coverage, partition of unity, seamless blending."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from atmorep.batch import BatchMetadata
from atmorep.errors import DataError
from atmorep.infer.tiling import TilePlan, blend, extract, run_tiled

LATITUDES = np.linspace(-90.0, 90.0, 19)  # 10 degree grid, both poles included
LONGITUDES = np.arange(0.0, 360.0, 10.0)  # 36 columns, global


def identity(tiles: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return tiles


def _global_plan(box=(6, 8), overlap=2) -> TilePlan:
    return TilePlan.from_grid(LATITUDES, LONGITUDES, box, overlap)


def _regional_plan() -> TilePlan:
    return TilePlan.from_grid(LATITUDES[11:18], LONGITUDES[10:23], (4, 5), (1, 2))  # 7 x 13 points


def _weight_sum(plan: TilePlan) -> np.ndarray:
    """Sum over tiles of the blending weights at every grid point ``[nlat, nlon]``."""
    rows, cols = (index.numpy() for index in plan.tile_index())
    total = np.zeros(plan.grid_shape)
    np.add.at(total, (rows[:, :, None], cols[:, None, :]), plan.weights().numpy())
    return total


def _coverage(plan: TilePlan) -> np.ndarray:
    """How many tiles cover each grid point ``[nlat, nlon]``."""
    rows, cols = (index.numpy() for index in plan.tile_index())
    total = np.zeros(plan.grid_shape, dtype=np.int64)
    np.add.at(total, (rows[:, :, None], cols[:, None, :]), 1)
    return total


def _weight_maps(plan: TilePlan) -> np.ndarray:
    """Every tile's weight on the whole grid ``[K, nlat, nlon]``, zero outside the tile."""
    rows, cols = (index.numpy() for index in plan.tile_index())
    maps = np.zeros((plan.count, *plan.grid_shape))
    tile = np.arange(plan.count)[:, None, None]
    maps[tile, rows[:, :, None], cols[:, None, :]] = plan.weights().numpy()
    return maps


def _largest_jumps(values: np.ndarray, periodic: bool) -> tuple[float, float]:
    """Largest difference between neighbours ``[..., nlat, nlon]`` along latitude and longitude."""
    along_lon = np.diff(values, axis=-1, append=values[..., :1]) if periodic else np.diff(values, axis=-1)
    return float(np.abs(np.diff(values, axis=-2)).max(initial=0)), float(np.abs(along_lon).max(initial=0))


def _taper_bound(overlap: int) -> float:
    """The largest step of a raised-cosine ramp over ``overlap`` points."""
    return math.pi / (2 * (overlap + 1)) + 1e-12


def test_global_plan_wraps_longitude_and_keeps_latitude_inside_the_poles():
    plan = _global_plan()
    assert plan.periodic and plan.grid_shape == (19, 36)
    assert plan.latitude_origins == (0, 3, 7, 10, 13)  # ceil((19 - 6) / 4) + 1 tiles, the last at the pole
    assert plan.longitude_origins == (0, 6, 12, 18, 24, 30)  # ceil(36 / 6) tiles, even spacing
    rows, cols = plan.tile_index()
    assert cols.tolist()[5] == [30, 31, 32, 33, 34, 35, 0, 1]  # the last tile crosses the 0/360 meridian
    assert rows.max() == 18 and rows.min() == 0


def test_polar_rows_are_covered_only_by_the_edge_of_the_outermost_tiles():
    plan = _global_plan()
    coverage = _coverage(plan)
    weights = plan.weights()
    n_lon = plan.tiles_shape[1]
    assert np.all(coverage[0] == coverage[1]) and np.all(coverage[-1] == coverage[-2])
    southern, northern = weights[:n_lon], weights[-n_lon:]  # [n_lon, H, W]
    assert torch.equal(southern[:, 0], southern[:, 1])  # no taper at the edge of the domain
    assert torch.equal(northern[:, -1], northern[:, -2])


@pytest.mark.parametrize("lead", [(), (3,), (2, 3, 4)])
def test_identity_reproduces_a_global_field_across_the_date_line(lead):
    plan = _global_plan()
    assert any(c + plan.box[1] > plan.grid_shape[1] for c in plan.longitude_origins)
    field = torch.randn(*lead, *plan.grid_shape, dtype=torch.float64)
    result = run_tiled(identity, field, plan)
    assert result.shape == field.shape
    torch.testing.assert_close(result, field, rtol=0, atol=1e-12)


def test_identity_reproduces_a_regional_field():
    plan = _regional_plan()
    assert not plan.periodic and plan.grid_shape == (7, 13)
    assert plan.longitude_origins[-1] + plan.box[1] == 13  # the last tile is flush with the eastern edge
    field = torch.randn(2, *plan.grid_shape, dtype=torch.float64)
    torch.testing.assert_close(run_tiled(identity, field, plan, batch_size=2), field, rtol=0, atol=1e-12)


def test_extract_cuts_each_tile_with_wrapped_longitudes():
    plan = _global_plan()
    field = torch.arange(2 * 19 * 36, dtype=torch.float64).reshape(2, 19, 36)
    tiles = extract(field, plan)
    assert tiles.shape == (plan.count, 2, *plan.box)
    for k, (row, col) in enumerate(plan.origins):
        columns = [(col + j) % 36 for j in range(plan.box[1])]
        assert torch.equal(tiles[k], field[:, row:row + plan.box[0]][:, :, columns])


@pytest.mark.parametrize("plan", [_global_plan(), _global_plan((5, 7), (1, 3)), _regional_plan()])
def test_weights_are_positive_and_sum_to_one_everywhere(plan):
    assert bool((plan.weights() > 0).all())
    assert bool((_coverage(plan) >= 1).all())
    np.testing.assert_allclose(_weight_sum(plan), 1.0, rtol=0, atol=1e-14)


def test_weights_taper_smoothly_across_tile_edges():
    plan = TilePlan.for_shape((18, 36), (6, 9), (2, 3), periodic=True)
    assert plan.latitude_origins == (0, 4, 8, 12) and plan.longitude_origins == (0, 6, 12, 18, 24, 30)
    lat_jump, lon_jump = _largest_jumps(_weight_maps(plan), periodic=True)
    assert lat_jump <= _taper_bound(2) and lon_jump <= _taper_bound(3)
    hard = TilePlan.for_shape((18, 36), (6, 9), 0, periodic=True)  # tiles that only touch
    assert _largest_jumps(_weight_maps(hard), periodic=True) == (1.0, 1.0)


def test_constant_per_tile_blends_without_seams():
    def checkerboard(plan):
        n_lon = plan.tiles_shape[1]
        parity = lambda index: (index // n_lon + index % n_lon) % 2  # noqa: E731
        return lambda tiles, index: tiles * 0 + parity(index).to(tiles.dtype)[:, None, None]

    field = torch.zeros(18, 36, dtype=torch.float64)
    smooth = TilePlan.for_shape((18, 36), (6, 9), (2, 3), periodic=True)
    lat_jump, lon_jump = _largest_jumps(run_tiled(checkerboard(smooth), field, smooth).numpy(), periodic=True)
    assert lat_jump <= _taper_bound(2) and lon_jump <= _taper_bound(3)
    seams = TilePlan.for_shape((18, 36), (6, 9), 0, periodic=True)
    assert _largest_jumps(run_tiled(checkerboard(seams), field, seams).numpy(), periodic=True) == (1.0, 1.0)


def test_any_batch_size_gives_the_same_result_bit_for_bit():
    plan = _global_plan((5, 7), (1, 3))
    field = torch.randn(2, 3, *plan.grid_shape, dtype=torch.float64)

    def nonlinear(tiles, index):
        return torch.tanh(tiles) * (1.0 + index.to(tiles.dtype))[:, None, None, None, None]

    reference = blend(nonlinear(extract(field, plan), torch.arange(plan.count)), plan)
    for batch_size in (1, 3, plan.count, None, 10 * plan.count):
        assert torch.equal(run_tiled(nonlinear, field, plan, batch_size=batch_size), reference)


def test_fn_may_change_the_middle_dimensions():
    plan = _global_plan()
    field = torch.randn(3, *plan.grid_shape, dtype=torch.float64)

    def members(tiles, index):
        return torch.stack([tiles, 2 * tiles], dim=1)  # [b, E=2, 3, H, W]

    result = run_tiled(members, field, plan, batch_size=5)
    torch.testing.assert_close(result, torch.stack([field, 2 * field]), rtol=0, atol=1e-12)


def test_tile_coordinates_make_valid_batch_metadata():
    plan = _global_plan()
    latitude, longitude = plan.tile_coordinates(LATITUDES, LONGITUDES)
    assert latitude.shape == (plan.count, 6) and longitude.shape == (plan.count, 8)
    assert longitude[5].tolist() == [300.0, 310.0, 320.0, 330.0, 340.0, 350.0, 0.0, 10.0]
    time = torch.zeros(plan.count, 1, dtype=torch.int64)
    metadata = BatchMetadata(time=time, latitude=latitude, longitude=longitude, levels={"t": (500.0,)})
    assert metadata.batch_size == plan.count


def test_overlap_fraction_is_converted_to_points():
    plan = TilePlan.for_shape((40, 80), (8, 16), (0.25, 0.5), periodic=False)
    assert plan.overlap == (2, 8)
    assert TilePlan.for_shape((40, 80), (8, 16), 0.25, periodic=True).overlap == (2, 4)


def test_box_larger_than_the_domain_is_rejected():
    with pytest.raises(DataError, match="longitude domain of 13 points is smaller than the box of 14"):
        TilePlan.from_grid(LATITUDES[11:18], LONGITUDES[10:23], (4, 14), 1)
    with pytest.raises(DataError, match="latitude domain of 7 points is smaller than the box of 8"):
        TilePlan.from_grid(LATITUDES[11:18], LONGITUDES, (8, 4), 1)
    with pytest.raises(DataError, match="periodic longitude domain of 36 points"):
        TilePlan.from_grid(LATITUDES, LONGITUDES, (4, 37), 1)


@pytest.mark.parametrize("overlap", [6, (1, 8), 1.0, -1, True, "2"])
def test_bad_overlap_is_rejected(overlap):
    with pytest.raises(DataError, match="overlap"):
        TilePlan.for_shape((19, 36), (6, 8), overlap, periodic=True)


def test_bad_grids_and_tiles_are_rejected():
    with pytest.raises(DataError, match="latitude must be 1-D and ascending"):
        TilePlan.from_grid(LATITUDES[::-1], LONGITUDES, (6, 8), 2)
    with pytest.raises(DataError, match="longitude must be ascending and equally spaced"):
        TilePlan.from_grid(LATITUDES, LONGITUDES[[0, 1, 3]], (6, 2), 0)
    plan = _global_plan()
    with pytest.raises(DataError, match="field of shape"):
        extract(torch.zeros(19, 35), plan)
    with pytest.raises(DataError, match="expected \\[K="):
        blend(torch.zeros(plan.count - 1, 6, 8), plan)
    with pytest.raises(DataError, match="must end with the plan's box"):
        blend(torch.zeros(plan.count, 6, 7), plan)
    with pytest.raises(DataError, match="batch_size"):
        run_tiled(identity, torch.zeros(19, 36), plan, batch_size=0)
    with pytest.raises(DataError, match="uncovered"):
        TilePlan((19, 36), (6, 8), (0, 0), True, (0, 13), (0, 8, 16, 24))


def test_regional_and_global_longitudes_are_told_apart():
    assert _global_plan().periodic
    assert not TilePlan.from_grid(LATITUDES, LONGITUDES[:-1], (6, 8), 2).periodic


@st.composite
def plans(draw):
    nlat, nlon = draw(st.integers(1, 40)), draw(st.integers(1, 60))
    box = draw(st.integers(1, nlat)), draw(st.integers(1, nlon))
    overlap = draw(st.integers(0, box[0] - 1)), draw(st.integers(0, box[1] - 1))
    return TilePlan.for_shape((nlat, nlon), box, overlap, periodic=draw(st.booleans()))


def _gaps(origins: tuple[int, ...], size: int, periodic: bool) -> list[int]:
    following = list(origins[1:]) + ([origins[0] + size] if periodic else [])
    return [b - a for a, b in zip(origins, following)]


@settings(max_examples=150, deadline=None)
@given(plan=plans())
def test_every_plan_covers_the_grid_with_a_partition_of_unity(plan):
    (nlat, nlon), (h, w) = plan.grid_shape, plan.box
    assert bool((_coverage(plan) >= 1).all())
    assert bool((plan.weights() > 0).all())
    np.testing.assert_allclose(_weight_sum(plan), 1.0, rtol=0, atol=1e-13)
    assert plan.latitude_origins[0] == 0 and plan.latitude_origins[-1] == nlat - h
    if not plan.periodic:
        assert plan.longitude_origins[0] == 0 and plan.longitude_origins[-1] == nlon - w
    for size, length, overlap, origins, periodic in ((nlat, h, plan.overlap[0], plan.latitude_origins, False),
                                                     (nlon, w, plan.overlap[1], plan.longitude_origins,
                                                      plan.periodic)):
        gaps = _gaps(origins, size, periodic)
        assert all(1 <= gap <= length - overlap for gap in gaps)  # every overlap at least the requested one
        if gaps:
            assert max(gaps) - min(gaps) <= 1  # even spacing


@settings(max_examples=60, deadline=None)
@given(plan=plans(), seed=st.integers(0, 2**31 - 1))
def test_every_plan_reproduces_the_field_it_cuts(plan, seed):
    field = torch.randn(2, *plan.grid_shape, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(run_tiled(identity, field, plan, batch_size=4), field, rtol=0, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(plan=plans().filter(lambda p: all(2 * o <= b for o, b in zip(p.overlap, p.box))))
def test_weights_of_moderate_overlaps_change_by_at_most_one_ramp_step(plan):
    lat_jump, lon_jump = _largest_jumps(_weight_maps(plan), plan.periodic)
    assert lat_jump <= _taper_bound(plan.overlap[0]) and lon_jump <= _taper_bound(plan.overlap[1])


@pytest.mark.parametrize(("grid", "periodic"), [((32, 64), True), ((30, 50), False), ((17, 40), False)])
@pytest.mark.parametrize("align", [2, 4])
def test_aligned_plans_put_origins_on_the_coarse_blocks_and_cover_the_domain(grid, periodic, align):
    plan = TilePlan.for_shape(grid, (8, 12), 0.5, periodic=periodic, align=align)
    for size, box, origins, wraps in ((grid[0], 8, plan.latitude_origins, False),
                                      (grid[1], 12, plan.longitude_origins, periodic)):
        flush = () if wraps else (size - box,)
        assert all(o % align == 0 or o in flush for o in origins)
        assert len(set(origins)) == len(origins)
        following = list(origins[1:]) + ([origins[0] + size] if wraps else [])
        assert all(box - (b - a) >= box // 2 for a, b in zip(origins, following))  # the overlap asked for
    total = torch.zeros(grid, dtype=torch.float64)  # the blending weights sum to one at every point
    rows, cols = plan.tile_index()
    for k in range(plan.count):
        total[rows[k][:, None], cols[k][None, :]] += plan.weights()[k]
    torch.testing.assert_close(total, torch.ones(grid, dtype=torch.float64))


def test_an_aligned_plan_equals_the_plain_one_when_its_origins_already_fall_on_the_blocks():
    plain = TilePlan.for_shape((48, 96), (16, 32), 0.5, periodic=True)
    assert TilePlan.for_shape((48, 96), (16, 32), 0.5, periodic=True, align=2) == plain


def test_blocks_larger_than_the_box_are_refused():
    with pytest.raises(DataError, match="blocks of 12 points do not fit a box of 8 x 12"):
        TilePlan.for_shape((32, 64), (8, 12), 0.5, periodic=True, align=12)
