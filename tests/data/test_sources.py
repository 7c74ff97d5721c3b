"""Sources: one round-trip suite every source passes, GRIB written with eccodes, and bad input."""

from __future__ import annotations

import importlib.util
import uuid

import dask.array
import fsspec
import numpy as np
import pytest
import xarray as xr

from atmorep.data import sources
from atmorep.data.sources import (
    SOURCES,
    detect_source,
    open_dataset,
    register_memory_dataset,
    register_source,
    unregister_memory_dataset,
)
from atmorep.errors import DataError
from tests.data.conftest import LAYOUTS, corrupt_zarr, truncate_file, write_grib, write_netcdf, write_zarr


def _memory(ds, tmp_path):
    name = f"test-{uuid.uuid4().hex}"
    register_memory_dataset(name, ds)
    return f"mem://{name}"


def _fsspec_memory_zarr(ds, tmp_path):
    return write_zarr(ds, f"memory://{uuid.uuid4().hex}.zarr")


def _fsspec_memory_netcdf(ds, tmp_path):
    local = write_netcdf(ds, tmp_path / "remote.nc")
    url = f"memory://{uuid.uuid4().hex}.nc"
    with fsspec.open(url, "wb") as handle, open(local, "rb") as source:
        handle.write(source.read())
    return url


WRITERS = {
    "netcdf4": lambda ds, tmp: write_netcdf(ds, tmp / "data.nc"),
    "h5netcdf": lambda ds, tmp: write_netcdf(ds, tmp / "data.nc4", engine="h5netcdf"),
    "netcdf3": lambda ds, tmp: write_netcdf(ds, tmp / "data.cdf", fmt="NETCDF3_64BIT"),
    "zarr": lambda ds, tmp: write_zarr(ds, tmp / "data.zarr"),
    "zarr_fsspec": _fsspec_memory_zarr,
    "netcdf_fsspec": _fsspec_memory_netcdf,
    "memory": _memory,
}


@pytest.mark.filterwarnings("ignore:The data type")  # zarr v3: string coordinate 'expver' of the CDS layout
@pytest.mark.parametrize("layout", ["internal", "wb2", "cds", "cfgrib", "cfgrib_netcdf", "lon180"])
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_round_trip(writer, layout, reference, tmp_path):
    path = WRITERS[writer](LAYOUTS[layout](reference), tmp_path)
    opened = open_dataset(path)
    if writer != "memory":
        assert isinstance(opened.t.data, dask.array.Array)  # lazy: nothing loaded
    xr.testing.assert_identical(opened, reference)
    if path.startswith("mem://"):
        unregister_memory_dataset(path[len("mem://"):])


def test_detect_source(tmp_path, reference):
    path = write_netcdf(reference, tmp_path / "no_extension.dat")
    assert detect_source(path).name == "netcdf"  # by magic bytes
    store = write_zarr(reference, tmp_path / "store_without_suffix")
    assert detect_source(store).name == "zarr"  # by directory content
    assert detect_source("gs://bucket/era5.zarr").name == "zarr"
    assert detect_source("s3://bucket/era5.nc").name == "netcdf"
    assert detect_source("mem://anything").name == "memory"
    (tmp_path / "x.grib2").write_bytes(b"GRIB")
    assert detect_source(tmp_path / "x.grib2").name == "grib"


def test_select_fields_levels_and_aliases(reference, tmp_path):
    path = write_netcdf(LAYOUTS["wb2"](reference), tmp_path / "wb2.nc")
    opened = open_dataset(path, fields=["temperature", "tp"], levels=[1000, 500.0])
    xr.testing.assert_identical(opened, reference[["t", "tp"]].sel(level=[500.0, 1000.0]))


def test_unknown_variable_kept_when_requested(reference, tmp_path):
    path = write_netcdf(reference.assign(cloudiness=reference.tp * 2), tmp_path / "extra.nc")
    assert "cloudiness" not in open_dataset(path)
    np.testing.assert_array_equal(open_dataset(path, fields=["cloudiness"]).cloudiness, reference.tp * 2)


def test_member_through_open_dataset(reference, reference_members, tmp_path):
    raw = reference_members.rename(member="number")
    path = write_netcdf(raw, tmp_path / "ens.nc")
    xr.testing.assert_identical(open_dataset(path, member=1), reference + 1)
    xr.testing.assert_identical(open_dataset(path, member="all"), reference_members)


def test_many_files_concatenated_in_time_order(reference, tmp_path):
    first = write_netcdf(LAYOUTS["cds"](reference.isel(time=[0, 1])), tmp_path / "2020-01a.nc")
    second = write_zarr(reference.isel(time=[2, 3]), tmp_path / "2020-01b.zarr")
    opened = open_dataset([second, first])
    assert isinstance(opened.t.data, dask.array.Array)
    xr.testing.assert_identical(opened, reference)


def test_overlapping_or_mismatched_files(reference, tmp_path):
    a = write_netcdf(reference.isel(time=[0, 1, 2]), tmp_path / "a.nc")
    b = write_netcdf(reference.isel(time=[2, 3]), tmp_path / "b.nc")
    with pytest.raises(DataError, match=r"b\.nc: times overlap with .*a\.nc"):
        open_dataset([a, b])
    c = write_netcdf(reference.isel(time=[3], latitude=slice(1, None)), tmp_path / "c.nc")
    with pytest.raises(DataError, match=r"c\.nc: latitude coordinate differs from that of .*a\.nc"):
        open_dataset([a, c])
    d = write_netcdf(reference[["t"]].isel(time=[3]), tmp_path / "d.nc")
    with pytest.raises(DataError, match=r"d\.nc: fields \['t'\] differ from those of .*a\.nc"):
        open_dataset([a, d])


def _grib_expected(reference):
    return reference[["t"]].isel(time=[0, 1]).sel(level=[500.0, 850.0])


@pytest.mark.parametrize("forecast", [False, True])
def test_grib_written_with_eccodes(reference, tmp_path, forecast):
    pytest.importorskip("cfgrib")
    expected = _grib_expected(reference)
    path = write_grib(expected, tmp_path / "t.grib2", forecast=forecast)
    opened = open_dataset(path)
    assert isinstance(opened.t.data, dask.array.Array)
    xr.testing.assert_equal(opened, expected)  # values and coordinates (GRIB attrs differ)
    assert opened.t.attrs["units"] == "K" and opened.level.attrs["level_kind"] == "pressure"
    assert not list(tmp_path.glob("*.idx"))  # no index files written next to the data


def test_grib_model_levels_and_surface_field(reference, tmp_path):
    pytest.importorskip("cfgrib")
    expected = _grib_expected(reference).assign(t2m=reference.t.isel(time=[0, 1]).sel(level=1000.0) - 2.0)
    expected = expected.assign_coords(level=("level", [96.0, 137.0], {"level_kind": "model", "units": "1"}))
    path = write_grib(expected, tmp_path / "ml.grib", level_type="hybrid")
    opened = open_dataset(path)
    xr.testing.assert_equal(opened, expected)
    assert opened.level.attrs == {"level_kind": "model", "units": "1"}
    assert opened.t2m.dims == ("time", "latitude", "longitude")


def test_grib_field_on_two_level_types(reference, tmp_path):
    pytest.importorskip("cfgrib")
    expected = _grib_expected(reference)
    path = write_grib(expected, tmp_path / "mixed.grib2")
    write_grib(expected, path, level_type="hybrid", mode="ab")
    with pytest.raises(DataError, match=r"mixed\.grib2: GRIB field 't' comes on several level types"):
        open_dataset(path)
    hybrid_only = {"backend_kwargs": {"filter_by_keys": {"typeOfLevel": "hybrid"}}}
    filtered = open_dataset(path, open_kwargs=hybrid_only)
    assert filtered.level.attrs["level_kind"] == "model"
    np.testing.assert_array_equal(filtered.t.values, expected.t.values)


def test_grib_without_cfgrib(monkeypatch, tmp_path):
    path = tmp_path / "x.grib"
    path.write_bytes(b"GRIB")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "cfgrib" else find_spec(name, *args))
    with pytest.raises(DataError, match=r"x\.grib: reading GRIB needs cfgrib .*install atmorep\[grib\]"):
        open_dataset(path)


def _bytes(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    return str(tmp_path / name)


def _empty_dir(reference, tmp_path):
    (tmp_path / "empty_dir").mkdir()
    return str(tmp_path / "empty_dir")


BAD_FILES = {
    "missing": (lambda ref, tmp: str(tmp / "missing.nc"), r"missing\.nc: file does not exist"),
    "garbage_nc": (lambda ref, tmp: _bytes(tmp, "garbage.nc", b"\x00junk" * 300),
                   r"garbage\.nc: cannot read as netcdf"),
    "truncated_nc4": (lambda ref, tmp: truncate_file(write_netcdf(ref, tmp / "cut.nc"), lambda n: n // 2),
                      r"cut\.nc: cannot read as netcdf"),
    "truncated_nc3": (lambda ref, tmp: truncate_file(write_netcdf(ref, tmp / "cut3.nc", fmt="NETCDF3_64BIT"),
                                                 lambda n: n // 2),
                      r"cut3\.nc: truncated or corrupted netCDF-3"),
    "corrupt_zarr": (lambda ref, tmp: corrupt_zarr(ref, tmp / "broken.zarr"),
                     r"broken\.zarr: cannot read as zarr"),
    "not_a_store": (_empty_dir, r"empty_dir: unknown data format"),
    "unknown_suffix": (lambda ref, tmp: _bytes(tmp, "notes.txt", b"hello"),
                       r"notes\.txt: unknown data format"),
    "garbage_grib": (lambda ref, tmp: _bytes(tmp, "junk.grib", b"\x01" * 500),
                     r"junk\.grib: cannot read as grib"),
    "truncated_grib": (lambda ref, tmp: truncate_file(write_grib(_grib_expected(ref), tmp / "cut.grib2"),
                                                  lambda n: n - 7), r"cut\.grib2: cannot read as grib"),
    "unregistered_memory": (lambda ref, tmp: "mem://nobody", r"mem://nobody: no in-memory dataset named"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_raise_data_error(case, reference, tmp_path):
    if "grib" in case:
        pytest.importorskip("cfgrib")
    make, pattern = BAD_FILES[case]
    with pytest.raises(DataError, match=pattern) as info:
        open_dataset(make(reference, tmp_path))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs,pattern", [
    ({"fields": ["q"]}, r"data\.nc: field\(s\) q not found \(available: t, u, tp\)"),
    ({"levels": [700]}, r"data\.nc: level\(s\) \[700\] not found \(pressure levels available: \[500\.0, 850"),
    ({"member": 3}, r"data\.nc: member 3 requested but there is no ensemble dimension"),
    ({"source": "hdf4"}, r"data\.nc: unknown source 'hdf4' \(registered: "),
])
def test_bad_requests_raise_data_error(kwargs, pattern, reference, tmp_path):
    path = write_netcdf(reference, tmp_path / "data.nc")
    with pytest.raises(DataError, match=pattern):
        open_dataset(path, **kwargs)


def test_bad_layout_in_a_file_names_the_file(reference, tmp_path):
    times = reference.time.values[[0, 1, 1, 2]]
    path = write_netcdf(reference.assign_coords(time=times), tmp_path / "dup.nc")
    with pytest.raises(DataError, match=r"dup\.nc: duplicated time 2020-01-01T06:00:00 at indices \[1, 2\]"):
        open_dataset(path)
    path = write_netcdf(reference.rename(latitude="y", longitude="x"), tmp_path / "xy.nc")
    with pytest.raises(DataError, match=r"xy\.nc: variable 't' has dimensions \(time, level, y, x\); expect"):
        open_dataset(path)


class ToySource:
    """A plugin: '.toy' files hold the name of an in-memory dataset."""

    name = "toy"

    def can_open(self, path: str) -> bool:
        return path.endswith(".toy")

    def open(self, path: str, **kwargs) -> xr.Dataset:
        return SOURCES["memory"].open("mem://" + open(path).read().strip())

    def describe(self, path: str) -> str:
        return f"toy: {path}"


def test_registered_plugin_is_detected_and_used(reference, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "SOURCES", dict(SOURCES))
    register_source(ToySource())
    register_memory_dataset("toy-data", LAYOUTS["wb2"](reference))
    try:
        path = tmp_path / "a.toy"
        path.write_text("toy-data")
        assert detect_source(path).name == "toy"
        xr.testing.assert_identical(open_dataset(path), reference)
        xr.testing.assert_identical(open_dataset(path, source="toy"), reference)
    finally:
        unregister_memory_dataset("toy-data")
    with pytest.raises(TypeError, match="is not a Source"):
        register_source(object())  # type: ignore[arg-type]


def test_describe(reference, tmp_path):
    path = write_netcdf(LAYOUTS["cds"](reference), tmp_path / "cds.nc")
    text = detect_source(path).describe(path)
    assert text.startswith(f"netcdf: {path}")
    assert "pressure_level=3" in text
    assert "t (valid_time, pressure_level, latitude, longitude) float32" in text


def test_grib_surface_fields_map_to_short_names_with_units(reference, tmp_path):
    pytest.importorskip("cfgrib")
    surface = reference.t.isel(time=[0, 1]).sel(level=1000.0, drop=True)
    expected = xr.Dataset({"t2m": surface - 2.0, "u10": surface / 50, "v10": -surface / 60,
                           "msl": surface * 340.0, "sp": surface * 330.0})
    opened = open_dataset(write_grib(expected, tmp_path / "surface.grib2"))
    assert sorted(opened.data_vars) == ["msl", "sp", "t2m", "u10", "v10"]
    units = {name: opened[name].attrs["units"].replace("**", "") for name in opened.data_vars}  # m s**-1
    assert units == {"t2m": "K", "u10": "m s-1", "v10": "m s-1", "msl": "Pa", "sp": "Pa"}
    for name in expected.data_vars:
        np.testing.assert_array_equal(opened[name].values, expected[name].values)
