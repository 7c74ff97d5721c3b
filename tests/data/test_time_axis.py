"""The time axis: every encoding real archives use maps to the same valid times; others fail clearly."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from atmorep.data.conventions import to_internal
from atmorep.data.sources import open_dataset
from atmorep.data.time_axis import check_regular, step_as_timedelta, time_options
from atmorep.errors import DataError
from tests.data.conftest import TIMES, cfgrib_netcdf_layout, time_index_layout, write_netcdf, write_zarr


@pytest.mark.parametrize("units", ["hours", "minutes", "seconds", "days", None])
def test_numeric_step_in_any_units_gives_the_valid_times(reference, units, tmp_path):
    """cfgrib's layout converted to netCDF keeps ``step`` as numbers: time + step must still add up."""
    path = write_netcdf(cfgrib_netcdf_layout(reference, units), tmp_path / "cfgrib.nc")
    assert xr.open_dataset(path)["step"].dtype.kind == "f"  # the file really holds numbers
    xr.testing.assert_identical(open_dataset(path), reference)


@pytest.mark.parametrize(("values", "units", "expected_hours"), [
    ([0, 6, 12], "hours", [0, 6, 12]), ([0.0, 90.0], "minutes", [0, 1.5]), ([3600], "s", [1]),
    ([1, 2], "days", [24, 48]), ([0, 3], None, [0, 3])])
def test_step_units(values, units, expected_hours):
    step = xr.DataArray(np.asarray(values), dims="step", attrs={"units": units} if units else {})
    hours = step_as_timedelta(step, "f") / np.timedelta64(1, "h")
    assert np.allclose(hours, expected_hours)


@pytest.mark.parametrize(("attrs", "pattern"), [({"units": "fortnights"}, "units 'fortnights'"),
                                                 ({"units": "hours"}, "missing values")])
def test_bad_step_is_an_error(attrs, pattern):
    step = xr.DataArray([0.0, np.nan], dims="step", attrs=attrs)
    with pytest.raises(DataError, match=f"f: forecast step has {pattern}"):
        step_as_timedelta(step, "f")


def test_integer_time_dimension_with_units_from_the_command_line(reference, tmp_path):
    path = write_zarr(time_index_layout(reference), tmp_path / "sample.zarr")
    opened = open_dataset(path, time_dim="time_index", time_units="hours since 1940-01-01")
    xr.testing.assert_identical(opened, reference)
    renamed = open_dataset(path, rename={"time_index": "time"}, time_units="hours since 1940-01-01")
    xr.testing.assert_identical(renamed, reference)


def test_integer_time_dimension_without_options_names_them(reference, tmp_path):
    path = write_zarr(time_index_layout(reference), tmp_path / "sample.zarr")
    names = (r"sample\.zarr: variable .t. has dimensions \(time_index, .*name the time dimension with "
             r"--time-dim time_index --time-units 'hours since 1940-01-01' .*--rename ")
    with pytest.raises(DataError, match=names):
        open_dataset(path)
    units = (r"time 'time' holds numbers \(int64\) without CF units \(its attributes mention 'hours since "
             r"1940-01-01'\); give their units with --time-units")
    with pytest.raises(DataError, match=units):
        open_dataset(path, time_dim="time_index")


def test_time_dimension_without_values_counts_from_the_epoch(reference):
    ds = time_index_layout(reference).drop_vars("time_index")
    mapped = to_internal(ds, time_dim="time_index", time_units="hours since 2020-01-01")
    assert np.array_equal(mapped.time.values, TIMES[0] + np.arange(4) * np.timedelta64(1, "h"))


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"time_dim": "when"}, r"time dimension 'when' \(--time-dim\) not found; dimensions: time_index"),
    ({"time_dim": "time_index", "time_units": "hours after lunch"},
     r"time units 'hours after lunch' \(--time-units\) cannot be read"),
    ({"rename": {"clock": "time"}}, r"cannot rename 'clock' \(--rename\): no such variable or dimension"),
    ({"rename": {"t": "u"}}, r"cannot rename to 'u' \(--rename\): the file already has it"),
])
def test_bad_time_options(reference, kwargs, pattern):
    with pytest.raises(DataError, match=f"src: {pattern}"):
        to_internal(time_index_layout(reference), origin="src", **kwargs)


def test_time_dim_clashing_with_a_time_axis(reference):
    with pytest.raises(DataError, match=r"cannot use 'level' as the time dimension: the file already has"):
        to_internal(reference, origin="src", time_dim="level")


def test_valid_time_only_layout(reference):
    """The CDS netCDF layout: ``valid_time`` is the time dimension, ``number`` and ``expver`` ride along."""
    ds = reference.rename(time="valid_time", level="pressure_level").assign_coords(
        number=0, expver=("valid_time", ["0001"] * 4))
    xr.testing.assert_identical(to_internal(ds), reference)


def test_regular_times():
    hourly = np.datetime64("2020-01-01T00") + np.arange(5) * np.timedelta64(1, "h")
    check_regular(hourly, "f")
    check_regular(hourly[:1], "f")
    expected = (r"f: irregular time steps at index 3 \(2020-01-01T02:00:00 is followed by "
                r"2020-01-01T04:00:00, the typical step is 1 h\)")
    with pytest.raises(DataError, match=expected):
        check_regular(np.delete(hourly, 3), "f")


def test_time_options_name_the_files_own_candidate():
    dated = xr.Dataset(coords={"when": ("when", np.array(["2020-01-01", "2020-01-02"], "datetime64[ns]")),
                               "x": ("x", [0.0, 1.0])})
    assert time_options(dated, ["when", "x"]) == "--time-dim when (time_dim='when' in Python)"
    numbered = xr.Dataset(coords={"hour_index": ("hour_index", [0, 1], {"note": "days since 2001-1-1"})})
    assert time_options(numbered, ["hour_index"]).startswith(
        "--time-dim hour_index --time-units 'days since 2001-1-1'")
    bare = xr.Dataset({"t": (("t_", "y"), np.zeros((2, 3)))})
    assert time_options(bare, ["t_"]).startswith("--time-dim t_ --time-units 'UNITS since DATE'")
    assert time_options(bare, ["t_", "y"]) == "--time-dim and one of t_, y (time_dim= in Python)"
    assert "NAME" in time_options(bare, [])
