"""Coarse-graining onto a coarser grid: area-weighted block means, Gaussian grids, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from atmorep.cli import app
from atmorep.data.regrid import coarse_grain, gaussian_grid, target_grid
from atmorep.errors import DataError

FINE_LAT, FINE_LON = np.arange(-89.5, 90, 1.0), np.arange(0.5, 360, 1.0)  # 1-degree cells
COARSE = xr.Dataset(coords={"latitude": np.arange(-89.0, 90, 2.0), "longitude": np.arange(1.0, 360, 2.0)})


def _fine(values: np.ndarray) -> xr.Dataset:
    times = np.array(["2000-01-01T00", "2000-01-01T01"], "datetime64[ns]")
    return xr.Dataset({"t": (("time", "latitude", "longitude"), values.astype(np.float32), {"units": "K"})},
                      coords={"time": times, "latitude": FINE_LAT, "longitude": FINE_LON})


def test_each_coarse_cell_is_the_area_weighted_mean_of_the_fine_cells_in_it():
    values = np.random.default_rng(0).normal(280.0, 10.0, (2, 180, 360))
    coarse = coarse_grain(_fine(values), COARSE)
    area = np.diff(np.sin(np.deg2rad(np.arange(-90.0, 90.1, 1.0)))).reshape(90, 2)  # [coarse row, 2]
    blocks = values.reshape(2, 90, 2, 180, 2)
    expected = (blocks * area[None, :, :, None, None]).sum((2, 4)) / (2 * area.sum(1))[None, :, None]
    interior = slice(1, -1)  # the polar rows are weighted by the cells' centres, not their edges
    np.testing.assert_allclose(coarse["t"].values[:, interior], expected[:, interior], atol=2e-4)
    assert coarse["t"].dims == ("time", "latitude", "longitude") and coarse["t"].dtype == np.float32
    assert coarse["t"].attrs["units"] == "K"
    weights = np.cos(np.deg2rad(COARSE["latitude"].values))[:, None]
    fine_weights = np.cos(np.deg2rad(FINE_LAT))[:, None]
    coarse_mean = (coarse["t"].values * weights).sum((1, 2)) / (weights.sum() * 180)
    fine_mean = (values * fine_weights).sum((1, 2)) / (fine_weights.sum() * 360)
    np.testing.assert_allclose(coarse_mean, fine_mean, atol=2e-3)  # area means are kept


def test_a_constant_stays_constant_on_a_gaussian_grid():
    coarse = coarse_grain(_fine(np.full((2, 180, 360), 250.0)), gaussian_grid("T31"))
    assert coarse.sizes == {"time": 2, "latitude": 48, "longitude": 96}
    np.testing.assert_allclose(coarse["t"].values, 250.0, rtol=1e-6)


def test_gaussian_grids_have_gauss_legendre_latitudes():
    grid = gaussian_grid("T63")
    latitude = grid["latitude"].values
    assert grid.sizes == {"latitude": 96, "longitude": 192} and grid["longitude"].values[1] == 1.875
    np.testing.assert_allclose(latitude, -latitude[::-1], atol=1e-12)  # symmetric, ascending
    assert np.all(np.diff(latitude) > 0)
    # a Gauss-Legendre rule of n nodes integrates sin(lat)^(2n-1) exactly; the nodes are its roots' arcsines
    nodes, weights = np.polynomial.legendre.leggauss(96)
    np.testing.assert_allclose(np.sin(np.deg2rad(latitude)), nodes, atol=1e-12)


def test_a_store_names_its_grid(tmp_path):
    _fine(np.zeros((2, 180, 360))).to_zarr(tmp_path / "fine.zarr")
    grid = target_grid(tmp_path / "fine.zarr")
    np.testing.assert_array_equal(grid["latitude"].values, FINE_LAT)


@pytest.mark.parametrize("target, message", [
    (xr.Dataset(coords={"latitude": np.arange(-89.75, 90, 0.5), "longitude": FINE_LON}),
     "the target grid's latitude spacing 0.5 deg is finer than the source's 1 deg"),
    (xr.Dataset(coords={"latitude": [-89.0, 0.0, 89.0], "longitude": [10.0, 200.0]}), None),
])
def test_a_finer_target_is_refused(target, message):
    if message is None:
        assert coarse_grain(_fine(np.zeros((2, 180, 360))), target).sizes["latitude"] == 3
        return
    with pytest.raises(DataError, match=message):
        coarse_grain(_fine(np.zeros((2, 180, 360))), target)


def test_a_regional_source_does_not_cover_a_global_grid():
    regional = _fine(np.zeros((2, 180, 360))).isel(latitude=slice(100, 140), longitude=slice(0, 60))
    with pytest.raises(DataError, match=r"-85.76..85.76 reach beyond the source.s 10.50..49.50"):
        coarse_grain(regional, gaussian_grid("T21"))


def test_unknown_grid_name_is_one_line(tmp_path):
    with pytest.raises(DataError, match="grid 'T99': neither a grid name"):
        target_grid("T99")


def test_prepare_coarse_grains_first(tmp_path):
    values = np.random.default_rng(1).normal(280.0, 5.0, (2, 180, 360))
    _fine(values).to_zarr(tmp_path / "fine.zarr")
    fine, out = str(tmp_path / "fine.zarr"), str(tmp_path / "out.zarr")
    result = CliRunner().invoke(app, ["data", "prepare", fine, out, "--grid", "T21", "--box", "2,16,32"])
    assert result.exit_code == 0, result.output
    prepared = xr.open_zarr(tmp_path / "out.zarr")
    assert prepared.sizes["latitude"] == 32 and prepared.sizes["longitude"] == 64
    expected = coarse_grain(_fine(values), gaussian_grid("T21"))["t"].values
    np.testing.assert_allclose(prepared["t"].values, expected, rtol=1e-6)
    bad = CliRunner().invoke(app, ["data", "prepare", str(tmp_path / "fine.zarr"), str(tmp_path / "bad.zarr"),
                                   "--grid", "T99"])
    assert bad.exit_code != 0 and "grid 'T99'" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "bad.zarr").exists()


def test_level_fields_keep_their_order_of_dimensions(tmp_path):
    """A field with levels comes out (time, level, latitude, longitude), as the store reader expects."""
    values = np.random.default_rng(2).normal(280.0, 5.0, (2, 3, 180, 360)).astype(np.float32)
    fine = xr.Dataset({"t": (("time", "level", "latitude", "longitude"), values, {"units": "K"}),
                       "sp": (("time", "latitude", "longitude"), values[:, 0] * 300.0)},
                      coords={"time": np.array(["2000-01-01T00", "2000-01-01T01"], "datetime64[ns]"),
                              "level": [0.2, 0.5, 0.9], "latitude": FINE_LAT, "longitude": FINE_LON})
    coarse = coarse_grain(fine, COARSE)
    assert coarse["t"].dims == ("time", "level", "latitude", "longitude")
    assert coarse["sp"].dims == ("time", "latitude", "longitude")
    one_level = coarse_grain(fine[["t"]].isel(level=[1]), COARSE)["t"].values
    np.testing.assert_allclose(coarse["t"].values[:, 1:2], one_level, rtol=1e-6)
