"""Grids: anything but a regular latitude-longitude (or Gaussian) grid is named in a one-line error."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from atmorep.data.grids import check_grid
from atmorep.data.sources import open_dataset
from atmorep.errors import DataError
from tests.data.conftest import write_netcdf

LAMBERT = {"gridDefinitionTemplateNumber": 30, "Nx": 20, "Ny": 15, "latitudeOfFirstGridPointInDegrees": 30.0,
           "longitudeOfFirstGridPointInDegrees": 350.0, "LaDInDegrees": 45.0, "LoVInDegrees": 10.0,
           "DxInMetres": 50000, "DyInMetres": 50000, "Latin1InDegrees": 45.0, "Latin2InDegrees": 45.0}
GRIB_GRIDS = {  # name -> (eccodes sample, keys to set, the words of the message)
    "lambert": ("GRIB2", LAMBERT, "Lambert conformal"),
    "rotated_ll": ("rotated_ll_pl_grib2", {}, "rotated-pole latitude-longitude"),
    "reduced_gg": ("reduced_gg_pl_32_grib2", {}, "reduced Gaussian"),
    "polar_stereographic": ("polar_stereographic_pl_grib2", {}, "polar stereographic"),
}


def write_grib_on(path, sample: str, keys: dict, level_types=("isobaricInhPa",)) -> str:
    """Two steps of t at 500 (each level type) on the grid of an eccodes sample."""
    eccodes = pytest.importorskip("eccodes")
    pytest.importorskip("cfgrib")
    with open(path, "wb") as handle:
        for level_type in level_types:
            for step in (0, 6):
                gid = eccodes.codes_grib_new_from_samples(sample)
                for key, value in {**keys, "shortName": "t", "typeOfLevel": level_type, "level": 500,
                                   "stepRange": str(step)}.items():
                    eccodes.codes_set(gid, key, value)
                size = (eccodes.codes_get(gid, "Nx") * eccodes.codes_get(gid, "Ny") if keys else
                        eccodes.codes_get(gid, "numberOfValues"))
                eccodes.codes_set_values(gid, np.linspace(250.0, 260.0, size))
                eccodes.codes_write(gid, handle)
                eccodes.codes_release(gid)
    return str(path)


@pytest.mark.parametrize("grid", sorted(GRIB_GRIDS))
def test_grib_grids_that_are_not_regular_are_named(grid, tmp_path):
    sample, keys, words = GRIB_GRIDS[grid]
    path = write_grib_on(tmp_path / f"{grid}.grib2", sample, keys)
    expected = (rf"{grid}\.grib2: variable 't' is on a GRIB grid of type '{grid}' \({words}\), not a regular "
                r"latitude-longitude grid; regrid .*xesmf")
    with pytest.raises(DataError, match=expected):
        open_dataset(path)


def test_grid_is_named_before_mixed_level_types(tmp_path):
    """A Lambert file mixing level types: the grid, not the level types, is the problem to name."""
    path = write_grib_on(tmp_path / "lam.grib2", "GRIB2", LAMBERT, ("isobaricInhPa", "hybrid"))
    with pytest.raises(DataError, match=r"lam\.grib2: variable 't' is on a GRIB grid of type 'lambert'"):
        open_dataset(path)


def _lambert_netcdf() -> xr.Dataset:
    y, x = np.arange(4.0), np.arange(5.0)
    lat = 40.0 + y[:, None] + 0.1 * x[None, :]
    lon = 10.0 + x[None, :] + 0.1 * y[:, None]
    t = np.full((2, 4, 5), 280.0, dtype=np.float32)
    return xr.Dataset({"t2m": (("time", "y", "x"), t, {"grid_mapping": "crs"}),
                       "crs": ((), 0, {"grid_mapping_name": "lambert_conformal_conic"})},
                      coords={"time": np.array(["2020-01-01", "2020-01-02"], dtype="datetime64[ns]"),
                              "latitude": (("y", "x"), lat), "longitude": (("y", "x"), lon)})


@pytest.mark.parametrize(("make", "pattern"), [
    (_lambert_netcdf, r"variable 't2m' is on a grid of grid_mapping_name 'lambert_conformal_conic' \(Lambert "
                      r"conformal\), not a regular"),
    (lambda: _lambert_netcdf().drop_vars("crs").assign(t2m=lambda d: d.t2m.drop_attrs()),
     r"latitude and longitude are 2-D along \('y', 'x'\) \(a curvilinear grid\), not a regular"),
    (lambda: xr.Dataset({"t": (("time", "cell"), np.zeros((1, 12)))},
                        coords={"time": [np.datetime64("2020-01-01", "ns")], "lat": ("cell", np.zeros(12)),
                                "lon": ("cell", np.arange(12.0))}),
     r"latitude and longitude both lie along 'cell' \(an unstructured grid: reduced Gaussian, HEALPix"),
    (lambda: xr.Dataset({"t": (("time", "values"), np.zeros((1, 12)))},
                        coords={"time": [np.datetime64("2020-01-01", "ns")]}),
     r"the data lie along 'values' without latitude and longitude axes"),
])
def test_other_grids_in_netcdf_are_named(make, pattern, tmp_path):
    ds = make()
    with pytest.raises(DataError, match=f"g: {pattern}"):
        check_grid(ds, "g")
    path = write_netcdf(ds, tmp_path / "grid.nc")
    with pytest.raises(DataError, match=r"grid\.nc: .*regrid it to a regular latitude-longitude grid first"):
        open_dataset(path)


def test_regular_and_gaussian_grids_pass(reference):
    check_grid(reference, "g")
    latitude = np.sin(np.linspace(-1.4, 1.4, reference.sizes["latitude"])) * 90  # not equally spaced
    gaussian = reference.assign_coords(latitude=latitude)
    check_grid(gaussian.assign(t=gaussian.t.assign_attrs(GRIB_gridType="regular_gg")), "g")
