"""prepare / prepare_dataset: values, coordinates, attributes, chunking, statistics, NaN report, atomicity."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
import xarray as xr
import zarr

from atmorep.data import prepare as prepare_module
from atmorep.data.prepare import chunk_shape, prepare, prepare_dataset, update_statistics
from atmorep.data.store import STORE_FORMAT, Store
from atmorep.errors import DataError
from tests.data.conftest import NAN_COLUMNS, NAN_FIELD, NAN_LEVEL, NAN_ROWS, STORE_BOX
from tests.data.synthetic import internal_dataset


def _weighted_moments(values: np.ndarray, latitude: np.ndarray, lat_axis: int) -> tuple[float, float]:
    """cos(latitude)-weighted mean and std of all finite values, computed directly with numpy."""
    shape = [1] * values.ndim
    shape[lat_axis] = -1
    weights = np.broadcast_to(np.cos(np.deg2rad(latitude)).reshape(shape), values.shape)
    finite = np.isfinite(values)
    x, w = values[finite].astype(np.float64), weights[finite]
    mean = np.sum(w * x) / np.sum(w)
    return float(mean), float(np.sqrt(np.sum(w * (x - mean) ** 2) / np.sum(w)))


def _statistics_by_numpy(ds: xr.Dataset) -> dict[str, list[tuple[float, float]]]:
    """Per field and level (mean, std), latitude weighted."""
    lat = ds["latitude"].values
    out = {}
    for name, var in ds.data_vars.items():
        values = var.values
        if "level" in var.dims:
            axis = var.dims.index("level")
            out[name] = [_weighted_moments(np.take(values, i, axis=axis), lat, var.dims.index("latitude") - 1)
                         for i in range(values.shape[axis])]
        else:
            out[name] = [_weighted_moments(values, lat, var.dims.index("latitude"))]
    return out


# ------------------------------------------------------------------------------------ chunk shape


@pytest.mark.parametrize(("box", "grid", "fraction", "expected"), [
    ((36, 54, 108), (8760, 721, 1440), 2, (18, 27, 54)),
    ((36, 54, 108), (8760, 721, 1440), 4, (9, 14, 27)),  # ceil(54 / 4) = 14
    ((12, 8, 16), (48, 19, 36), 2, (6, 4, 8)),
    ((12, 8, 16), (10, 3, 36), 1, (10, 3, 16)),  # never larger than the grid
    ((1, 1, 3), (5, 5, 5), 4, (1, 1, 1)),  # never smaller than one point
])
def test_chunk_shape(box, grid, fraction, expected):
    assert chunk_shape(box, grid, fraction) == expected


# ------------------------------------------------------------------------------- prepared content


def test_values_identical_to_the_source(prepared_store, store_source):
    written = xr.open_zarr(prepared_store, consolidated=True)
    assert set(written.data_vars) == set(store_source.data_vars)
    for name, var in store_source.data_vars.items():
        assert written[name].dims == var.dims
        assert written[name].dtype == np.float32
        assert np.array_equal(written[name].values, var.values), name


def test_coordinates(prepared_store, store_source):
    written = xr.open_zarr(prepared_store, consolidated=True)
    for name in ("time", "level", "latitude", "longitude"):
        assert np.array_equal(written[name].values, store_source[name].values), name
    store = Store(prepared_store)
    assert np.array_equal(store.time, store_source["time"].values.astype("datetime64[s]"))
    assert np.array_equal(store.latitude, store_source["latitude"].values)
    assert np.array_equal(store.longitude, store_source["longitude"].values)
    assert np.array_equal(store.level, [500.0, 850.0])
    assert store.resolution == pytest.approx(10.0)


def test_attributes_units_and_cf(prepared_store):
    group = zarr.open_group(prepared_store, mode="r")
    attrs = dict(group.attrs)
    assert attrs["atmorep_format"] == STORE_FORMAT
    assert attrs["Conventions"].startswith("CF-")
    assert attrs["atmorep_fields"] == ["sp", "t", "u"]
    assert attrs["atmorep_level_kind"] == "pressure"
    assert attrs["atmorep_members"] == 1
    expected = {"t": ("K", "air_temperature"), "u": ("m s-1", "eastward_wind"),
                "sp": ("Pa", "surface_air_pressure")}
    for name, (units, standard_name) in expected.items():
        assert group[name].attrs["units"] == units
        assert group[name].attrs["standard_name"] == standard_name
        assert group[name].attrs["long_name"]
    assert group["time"].attrs["units"].startswith("seconds since 1970-01-01")
    assert group["time"].dtype == np.int64
    assert group["latitude"].attrs["units"] == "degrees_north"
    assert group["level"].attrs["units"] == "hPa"


def test_chunking_follows_the_box(prepared_store):
    group = zarr.open_group(prepared_store, mode="r")
    t, h, w = chunk_shape(STORE_BOX, (48, 19, 36))
    assert group["t"].chunks == (t, 2, h, w)  # all levels of a field in one chunk
    assert group["u"].chunks == (t, 2, h, w)
    assert group["sp"].chunks == (t, h, w)


def test_chunk_fraction_option(tmp_path):
    ds = internal_dataset(times=12, levels=(500.0,), nlat=10, nlon=16)
    path = prepare_dataset(ds, tmp_path / "f4.zarr", box=(12, 8, 16), chunk_fraction=4)
    assert zarr.open_group(path, mode="r")["t"].chunks == (3, 1, 2, 4)


def test_statistics_are_latitude_weighted_mean_and_std(prepared_store, store_source):
    statistics = Store(prepared_store).statistics
    expected = _statistics_by_numpy(store_source)
    for name, moments in expected.items():
        assert statistics[name].levels == ((500.0, 850.0) if name != "sp" else (0.0,))
        np.testing.assert_allclose(statistics[name].mean, [m for m, _ in moments], rtol=1e-10)
        np.testing.assert_allclose(statistics[name].std, [s for _, s in moments], rtol=1e-7)
    # the weighting matters: the unweighted std of t differs by far more than the tolerance
    unweighted = float(store_source["t"].isel(level=0).std())
    assert abs(unweighted / statistics["t"].std[0] - 1) > 0.01


def test_no_nan_gives_an_empty_report(prepared_store):
    assert json.loads(Store(prepared_store).attrs["atmorep_nan_report"]) == {}


def test_nan_report_and_statistics_skip_nan(nan_store, nan_source):
    report = json.loads(Store(nan_store).attrs["atmorep_nan_report"])
    assert set(report) == {NAN_FIELD}
    t = nan_source[NAN_FIELD]
    count = t.isel(level=NAN_LEVEL, latitude=NAN_ROWS, longitude=NAN_COLUMNS).size
    assert report[NAN_FIELD]["count"] == count
    assert report[NAN_FIELD]["fraction"] == pytest.approx(count / t.size)
    where = report[NAN_FIELD]["where"]
    assert "24 time steps" in where and "latitude 60..90" in where and "longitude 0..80" in where
    statistics = Store(nan_store).statistics[NAN_FIELD]
    expected = _statistics_by_numpy(nan_source[[NAN_FIELD]])[NAN_FIELD]
    np.testing.assert_allclose(statistics.mean, [m for m, _ in expected], rtol=1e-10)
    np.testing.assert_allclose(statistics.std, [s for _, s in expected], rtol=1e-7)


def test_nan_is_logged(tmp_path, nan_source, caplog):
    small = nan_source.isel(time=slice(0, 12))
    with caplog.at_level("WARNING", logger="atmorep.data.prepare"):
        prepare_dataset(small, tmp_path / "nan.zarr", box=STORE_BOX)
    assert any("field 't' holds NaN" in r.getMessage() for r in caplog.records)


def _fail_after(monkeypatch, name: str) -> None:
    """Make the prepare step ``name`` run and then raise."""
    original = getattr(prepare_module, name)

    def failing(*args, **kwargs):
        original(*args, **kwargs)
        raise RuntimeError(f"simulated failure in {name}")

    monkeypatch.setattr(prepare_module, name, failing)


@pytest.mark.parametrize("step", ["_write", "nan_report"])
def test_failure_leaves_no_store(tmp_path, monkeypatch, step):
    _fail_after(monkeypatch, step)
    out = tmp_path / "store.zarr"
    with pytest.raises(RuntimeError, match="simulated failure"):
        prepare_dataset(internal_dataset(times=12, nlat=10, nlon=16), out, box=(12, 8, 16))
    assert list(tmp_path.iterdir()) == []  # neither the store nor its temporary sibling


def test_failure_leaves_an_existing_store_untouched(tmp_path, monkeypatch, prepared_store, store_source):
    out = tmp_path / "store.zarr"
    shutil.copytree(prepared_store, out)
    _fail_after(monkeypatch, "_write")
    other = internal_dataset(times=48, seed=5, start="1990-01-01")
    with pytest.raises(RuntimeError, match="simulated failure"):
        prepare_dataset(other, out, box=STORE_BOX, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.zarr"]
    written = xr.open_zarr(out, consolidated=True)
    assert np.array_equal(written["t"].values, store_source["t"].values)
    assert Store(out).time[0] == np.datetime64("2000-02-29T12:00:00")


def test_existing_output_without_overwrite_is_an_error(tmp_path, prepared_store):
    out = tmp_path / "store.zarr"
    shutil.copytree(prepared_store, out)
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(DataError, match="already exists"):
        prepare_dataset(internal_dataset(times=12), out, box=STORE_BOX)
    assert sorted(p.name for p in out.rglob("*")) == before


def test_overwrite_replaces_the_store(tmp_path):
    out = tmp_path / "store.zarr"
    prepare_dataset(internal_dataset(times=12, nlat=10, nlon=16), out, box=(12, 8, 16))
    other = internal_dataset(times=12, nlat=10, nlon=16, seed=3)
    prepare_dataset(other, out, box=(12, 8, 16), overwrite=True)
    assert np.array_equal(xr.open_zarr(out)["u"].values, other["u"].values)


@pytest.mark.parametrize("box", [(49, 8, 16), (12, 20, 16), (12, 8, 37), (36, 54, 108)])
def test_data_smaller_than_the_box_prepare_with_a_warning(tmp_path, store_source, box, caplog):
    """Preparing is not sampling: a short file prepares, chunked whole along the short axes."""
    out = prepare_dataset(store_source, tmp_path / "store.zarr", box=box)
    assert "is larger than the data" in caplog.text
    written = xr.open_zarr(out)
    assert np.array_equal(written["t"].values, store_source["t"].values)
    grid = (store_source.sizes["time"], store_source.sizes["latitude"], store_source.sizes["longitude"])
    time_chunk, _, lat_chunk, lon_chunk = written["t"].encoding["chunks"]
    assert (time_chunk, lat_chunk, lon_chunk) == chunk_shape(box, grid)


def test_irregular_times_are_an_error(tmp_path, store_source):
    gappy = store_source.isel(time=[*range(10), *range(12, 48)])
    with pytest.raises(DataError, match=r"irregular time steps at index 10 .*typical step is 1 h"):
        prepare_dataset(gappy, tmp_path / "store.zarr", box=STORE_BOX)
    assert not (tmp_path / "store.zarr").exists()


def test_dataset_without_fields_is_an_error(tmp_path, store_source):
    with pytest.raises(DataError, match="no known fields"):
        empty = store_source.drop_vars(list(store_source.data_vars))
        prepare_dataset(empty, tmp_path / "s.zarr", box=STORE_BOX)


# ---------------------------------------------------------------------------------- update_statistics


def test_update_statistics_round_trip(tmp_path, prepared_store):
    out = tmp_path / "store.zarr"
    shutil.copytree(prepared_store, out)
    original = Store(prepared_store).statistics
    group = zarr.open_group(out, mode="r+")
    wrong = {name: {"levels": list(s.levels), "mean": [0.0] * len(s.levels), "std": [1.0] * len(s.levels)}
             for name, s in original.fields.items()}
    group.attrs["atmorep_statistics"] = json.dumps(wrong)
    zarr.consolidate_metadata(out)
    assert Store(out).statistics.to_dict() == wrong
    assert update_statistics(out) == out
    assert Store(out).statistics == original


def test_update_statistics_needs_a_store(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError):
        update_statistics(tmp_path / "empty")


# ------------------------------------------------------------------------------------ from files


@pytest.mark.skipif(importlib.util.find_spec("atmorep.data.sources") is None,
                    reason="atmorep.data.sources is not available")
def test_prepare_from_a_netcdf_file(tmp_path):
    ds = internal_dataset(times=12, nlat=10, nlon=16)
    source = tmp_path / "source.nc"
    ds.to_netcdf(source)
    path = prepare([source], tmp_path / "store.zarr", fields=["t", "sp"], box=(12, 8, 16))
    written = xr.open_zarr(path, consolidated=True)
    assert set(written.data_vars) == {"t", "sp"}
    for name in ("t", "sp"):
        assert np.array_equal(written[name].values, ds[name].values)
    assert str(source) in Store(path).attrs["atmorep_sources"]
    with pytest.raises(DataError, match="already exists"):
        prepare([source], path, box=(12, 8, 16))
