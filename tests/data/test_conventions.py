"""Every real layout maps to the same internal dataset; every malformed one raises a DataError."""

from __future__ import annotations

import dask.array
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from atmorep.data.conventions import check_latitude, longitude_order, to_internal
from atmorep.errors import DataError
from tests.data.conftest import LAYOUTS, LONGITUDES, number_layout


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layouts_map_to_the_reference(layout, reference):
    mapped = to_internal(LAYOUTS[layout](reference), origin=layout)
    xr.testing.assert_identical(mapped, reference)


def test_mapping_is_idempotent(reference):
    once = to_internal(LAYOUTS["cds"](reference))
    xr.testing.assert_identical(to_internal(once), once)


def test_dimension_order_and_coordinate_types(reference):
    mapped = to_internal(LAYOUTS["cfgrib"](reference))
    assert mapped.t.dims == ("time", "level", "latitude", "longitude")
    assert mapped.tp.dims == ("time", "latitude", "longitude")
    assert mapped.time.dtype == np.dtype("datetime64[ns]")
    for name in ("level", "latitude", "longitude"):
        assert mapped[name].dtype == np.float64
    assert set(mapped.coords) == {"time", "level", "latitude", "longitude"}


def test_ensemble_number_selected_and_kept(reference, reference_members):
    raw = number_layout(reference_members)
    xr.testing.assert_identical(to_internal(raw, member=0), reference)
    xr.testing.assert_identical(to_internal(raw, member="all"), reference_members)
    xr.testing.assert_identical(to_internal(raw), reference_members)  # size > 1: kept by default
    np.testing.assert_array_equal(to_internal(raw, member=2).t.values, reference.t.values + 2)
    assert to_internal(raw, member="all").t.dims == ("member", "time", "level", "latitude", "longitude")


def test_ensemble_of_one_is_squeezed_and_all_gives_a_member_dim(reference, reference_members):
    raw = number_layout(reference_members).isel(number=[1])
    xr.testing.assert_identical(to_internal(raw), reference + 1)
    assert to_internal(reference, member="all").sizes["member"] == 1
    with pytest.raises(DataError, match=r"origin-x: member 7 not found \(members: \[0, 1, 2\]\)"):
        to_internal(number_layout(reference_members), origin="origin-x", member=7)
    with pytest.raises(DataError, match="no ensemble dimension"):
        to_internal(reference, member=1)


def test_forecast_steps_become_valid_times(reference):
    raw = LAYOUTS["cfgrib"](reference)
    assert raw.sizes["time"] == 2 and raw.sizes["step"] == 2
    np.testing.assert_array_equal(to_internal(raw).time.values, reference.time.values)


def test_scalar_time_and_level_are_expanded(reference):
    one = reference.isel(time=1).sel(level=850.0)  # scalar time and level coordinates
    mapped = to_internal(one)
    xr.testing.assert_identical(mapped, reference.isel(time=[1]).sel(level=[850.0]))


@pytest.mark.parametrize("name,values,kind,expected", [
    ("hybrid", [137, 96, 114], "model", [96.0, 114.0, 137.0]),
    ("model_level", [50, 60], "model", [50.0, 60.0]),
    ("lev", [10, 20], "model", [10.0, 20.0]),
    ("lev", [0.95, 0.5], "sigma", [0.5, 0.95]),
    ("sigma", [0.025, 0.95, 0.51], "sigma", [0.025, 0.51, 0.95]),
    ("plev", [100000.0, 50000.0], "pressure", [500.0, 1000.0]),
])
def test_level_kinds(reference, name, values, kind, expected):
    raw = reference.isel(level=slice(0, len(values))).rename(level=name)
    raw = raw.assign_coords({name: np.asarray(values)})
    mapped = to_internal(raw)
    assert mapped.level.attrs == {"level_kind": kind, "units": "hPa" if kind == "pressure" else "1"}
    np.testing.assert_array_equal(mapped.level.values, expected)
    order = np.argsort(values)
    np.testing.assert_array_equal(mapped.t.values, raw.t.values[:, order])


def test_gaussian_latitudes_accepted(reference):
    gaussian = np.rad2deg(np.arcsin(np.polynomial.legendre.leggauss(19)[0]))
    raw = reference.assign_coords(latitude=gaussian[::-1]).isel(latitude=slice(None, None, -1))
    np.testing.assert_allclose(to_internal(raw).latitude.values, gaussian)


def test_unknown_variables_dropped_unless_kept(reference):
    raw = reference.assign(cloudiness=reference.tp * 0 + 1.0)
    assert "cloudiness" not in to_internal(raw)
    assert "cloudiness" in to_internal(raw, keep={"cloudiness"})


def _with_time(reference, times):
    return reference.assign_coords(time=np.asarray(times, dtype="datetime64[ns]"))


@pytest.mark.parametrize("make,pattern", [
    (lambda r: _with_time(r, r.time.values[[0, 2, 1, 3]]), r"src\.nc: times not sorted at index 2"),
    (lambda r: _with_time(r, r.time.values[[0, 1, 1, 3]]), r"src\.nc: duplicated time 2020-01-01T06:00:00"),
    (lambda r: r.assign_coords(longitude=np.r_[0.0, 15.0, LONGITUDES[2:]]),
     r"src\.nc: irregular longitude spacing at index 1"),
    (lambda r: r.assign_coords(longitude=np.linspace(0, 360, 36)), r"src\.nc: longitudes span more than 360"),
    (lambda r: r.assign_coords(latitude=np.r_[r.latitude.values[:5], r.latitude.values[5:][::-1]]),
     r"src\.nc: latitude not strictly monotonic at index 6"),
    (lambda r: r.assign_coords(latitude=np.linspace(-95, 95, 19)), r"src\.nc: latitude outside \[-90, 90\]"),
    (lambda r: r.rename(time="t_", latitude="y", longitude="x"),
     r"src\.nc: variable 't' has dimensions \(t_, level, y, x\); expected \(time, \[level,\] latitude"),
    (lambda r: r.assign_coords(level=[500.0, 500.0, 850.0]), r"src\.nc: duplicated levels"),
    (lambda r: r.rename(t="foo", u="bar", tp="baz").drop_attrs(), r"src\.nc: no known field among"),
    (lambda r: r.assign(temperature=r.t), r"src\.nc: variables 't' and 'temperature' both map to field 't'"),
    (lambda r: r.assign_coords(time=np.arange(4.0)),
     r"src\.nc: time 'time' holds numbers \(float64\) without CF units; give their units with --time-units"),
])
def test_bad_layouts_raise_data_error(reference, make, pattern):
    with pytest.raises(DataError, match=pattern) as info:
        to_internal(make(reference), origin="src.nc")
    assert "\n" not in str(info.value)


def test_regional_grid_across_greenwich_is_rejected():
    with pytest.raises(DataError, match="cross the 0 meridian"):
        longitude_order(np.arange(-20.0, 30.0, 10.0), "box.nc")
    order, values = longitude_order(np.arange(10.0, 50.0, 10.0), "box.nc")  # regional, no crossing
    np.testing.assert_array_equal(values, [10.0, 20.0, 30.0, 40.0])
    np.testing.assert_array_equal(order, np.arange(4))


def test_longitude_descending_and_shifted():
    order, values = longitude_order(np.arange(170.0, -190.0, -10.0), "x")
    np.testing.assert_array_equal(values, LONGITUDES)
    np.testing.assert_array_equal(np.arange(170.0, -190.0, -10.0)[order] % 360, LONGITUDES)
    assert check_latitude(np.array([90.0, 0.0, -90.0]), "x") is True


def test_cftime_standard_calendar_is_converted(reference):
    cftime = pytest.importorskip("cftime")
    times = [cftime.DatetimeGregorian(*pd.Timestamp(t).timetuple()[:4]) for t in reference.time.values]
    xr.testing.assert_identical(to_internal(reference.assign_coords(time=times)), reference)


def test_units_spelling_is_not_a_mismatch(reference, caplog):
    raw = reference.copy()
    raw["z"] = raw.t.assign_attrs(units="m**2 s**-2", standard_name="geopotential", long_name="geopotential")
    raw["tp"] = raw.tp.assign_attrs(units="mm")
    with caplog.at_level("WARNING", logger="atmorep.data.conventions"):
        mapped = to_internal(raw)
    assert mapped.z.attrs["units"] == "m**2 s**-2"
    assert [r.getMessage() for r in caplog.records] == [
        "field 'tp' has units 'mm'; atmorep expects 'm' (values are not converted)"]


@pytest.mark.parametrize("make,pattern", [
    (lambda r: r.expand_dims(expver=[1, 5]), r"e\.nc: variable 't' has dimensions \(expver, .*ERA5T mixed"),
    (lambda r: r.assign_coords(level=("level", r.level.values, {"level_kind": "surface"})),
     r"e\.nc: level_kind 'surface' of 'level' is not one of pressure, model, sigma"),
    (lambda r: r.assign_coords(level=[0.5, 1.5, 2.0]).rename(level="lev"), r"e\.nc: cannot tell the kind"),
    (lambda r: r.isel(time=slice(0, 0)), r"e\.nc: variable 't' has an empty dimension 'time'"),
    (lambda r: r.expand_dims(realization=["a", "b"]), r"e\.nc: ensemble labels of 'realization' have dtype"),
])
def test_more_bad_layouts(reference, make, pattern):
    with pytest.raises(DataError, match=pattern):
        to_internal(make(reference), origin="e.nc")


def _refuse_to_compute(block):
    raise AssertionError("data was computed")


@pytest.mark.parametrize("layout", ["wb2", "lon180", "cds", "plev_pa"])
def test_mapping_never_computes_data(reference, layout):
    lazy = reference.copy()
    for name, var in reference.data_vars.items():
        zeros = dask.array.zeros(var.shape, dtype=var.dtype, chunks=-1)
        data = zeros.map_blocks(_refuse_to_compute, dtype=var.dtype)
        lazy[name] = var.copy(data=data)
    mapped = to_internal(LAYOUTS[layout](lazy))
    assert all(isinstance(var.data, dask.array.Array) for var in mapped.data_vars.values())
    with pytest.raises(AssertionError, match="data was computed"):
        mapped.t.compute()
