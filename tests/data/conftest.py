"""Fixtures that make small datasets and files in the layouts of real archives.

``reference`` is a dataset in the internal convention with analytic values (4 times x 3 pressure
levels x 19 latitudes x 36 longitudes); every ``layouts`` entry is the same data as a real archive
writes it, so that mapping any of them back must give ``reference`` exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from atmorep.fields import FIELD_SPECS

TIMES = pd.date_range("2020-01-01", periods=4, freq="6h").values.astype("datetime64[ns]")
LEVELS = np.array([500.0, 850.0, 1000.0])
LATITUDES = np.linspace(-90.0, 90.0, 19)
LONGITUDES = np.arange(0.0, 360.0, 10.0)
MEMBERS = 3


def _cf(name: str) -> dict:
    spec = FIELD_SPECS[name]
    return {"units": spec.units, "long_name": spec.long_name, "standard_name": spec.standard_name}


def make_reference(members: int | None = None) -> xr.Dataset:
    """t, u on pressure levels and tp at the surface, internal convention, distinct values everywhere.

    With ``members``, a leading ``member`` dimension whose member ``k`` adds ``k`` to every value.
    """
    hours = (TIMES - TIMES[0]) / np.timedelta64(1, "h")
    tt, ll, yy, xx = np.meshgrid(hours, LEVELS, np.deg2rad(LATITUDES), np.deg2rad(LONGITUDES), indexing="ij")
    wave = np.cos(yy) * np.sin(2 * xx + tt / 7.0)  # [T, L, H, W]
    t = 200.0 + 0.1 * ll + 20.0 * wave + 5.0 * np.sin(yy) + 2.0 * np.cos(xx)  # no symmetry in lat or lon
    u = 10.0 * wave * np.cos(xx) + 0.01 * ll + 3.0 * yy
    tp = 1e-3 * (1.5 + wave[:, 0] + 0.1 * np.sin(yy[:, 0]))  # [T, H, W]
    level_dims, surface_dims = ("time", "level", "latitude", "longitude"), ("time", "latitude", "longitude")
    ds = xr.Dataset(
        {"t": (level_dims, t.astype(np.float32), _cf("t")), "u": (level_dims, u.astype(np.float32), _cf("u")),
         "tp": (surface_dims, tp.astype(np.float32), _cf("tp"))},
        coords={"time": ("time", TIMES, {"standard_name": "time"}),
                "level": ("level", LEVELS, {"level_kind": "pressure", "units": "hPa"}),
                "latitude": ("latitude", LATITUDES, {"standard_name": "latitude", "long_name": "latitude",
                                                     "units": "degrees_north"}),
                "longitude": ("longitude", LONGITUDES, {"standard_name": "longitude",
                                                        "long_name": "longitude", "units": "degrees_east"})})
    if members is None:
        return ds
    ensemble = xr.concat([ds + k for k in range(members)], dim="member", combine_attrs="override")
    ensemble = ensemble.assign_coords(member=("member", np.arange(members), {"long_name": "ensemble member"}))
    for name in ds.data_vars:
        ensemble[name].attrs = ds[name].attrs
    return ensemble


def _strip(ds: xr.Dataset) -> xr.Dataset:
    """Remove all attributes, as many archives do."""
    ds = ds.copy()
    for name in ds.variables:
        ds[name].attrs = {}
    return ds


def wb2_layout(ref: xr.Dataset) -> xr.Dataset:
    """WeatherBench-2 / ARCO: long names, integer levels, latitude descending, no attributes."""
    ds = _strip(ref).rename(t="temperature", u="u_component_of_wind", tp="total_precipitation")
    return ds.assign_coords(level=ref.level.values.astype(np.int64)).isel(latitude=slice(None, None, -1))


def flipped_layout(ref: xr.Dataset) -> xr.Dataset:
    """Internal names, latitude 90 -> -90."""
    return ref.isel(latitude=slice(None, None, -1))


def lon180_layout(ref: xr.Dataset) -> xr.Dataset:
    """Longitude -180..170, names lat/lon."""
    ds = ref.roll(longitude=18, roll_coords=True)
    ds = ds.assign_coords(longitude=np.where(ds.longitude >= 180, ds.longitude - 360, ds.longitude))
    return ds.rename(latitude="lat", longitude="lon")


def cds_layout(ref: xr.Dataset) -> xr.Dataset:
    """CDS netCDF (2024+): short names, ``valid_time``, ``pressure_level`` 1000 -> 500, latitude 90 -> -90,
    a scalar ``number`` and an ``expver`` coordinate."""
    ds = _strip(ref).rename(time="valid_time", level="pressure_level")
    ds = ds.isel(pressure_level=slice(None, None, -1), latitude=slice(None, None, -1))
    ds["pressure_level"].attrs = {"units": "hPa", "long_name": "pressure"}
    return ds.assign_coords(number=0, expver=("valid_time", ["0001"] * ds.sizes["valid_time"]))


def cfgrib_layout(ref: xr.Dataset) -> xr.Dataset:
    """cfgrib forecasts: reference ``time`` x ``step`` (valid = time + step), ``isobaricInhPa``
    descending, latitude 90 -> -90, a 2-D ``valid_time`` and a scalar ``surface`` coordinate."""
    ds = _strip(ref).rename(level="isobaricInhPa").isel(isobaricInhPa=slice(None, None, -1),
                                                        latitude=slice(None, None, -1))
    init, step = TIMES[::2], np.array([0, 6], dtype="timedelta64[h]").astype("timedelta64[ns]")
    fields = {}
    for name, var in ds.data_vars.items():
        values = var.values.reshape(2, 2, *var.shape[1:])  # [T, ...] -> [time, step, ...]
        fields[name] = (("time", "step", *var.dims[1:]), values)
    coords = {name: ds[name] for name in ("isobaricInhPa", "latitude", "longitude")}
    out = xr.Dataset(fields, coords={**coords, "time": init, "step": step, "surface": 0.0})
    return out.assign_coords(valid_time=out.time + out.step)


def cfgrib_netcdf_layout(ref: xr.Dataset, step_units: str | None = "hours") -> xr.Dataset:
    """A cfgrib dataset converted to netCDF by other tools: ``step`` as plain numbers in ``step_units``
    (no units attribute when None: the GRIB default, hours), no xarray timedelta marker."""
    ds = cfgrib_layout(ref)
    per_unit = {"hours": 1.0, "minutes": 60.0, "seconds": 3600.0, "days": 1 / 24, None: 1.0}[step_units]
    hours = ds.step.values / np.timedelta64(1, "h")
    attrs = {"long_name": "time since forecast_reference_time", "standard_name": "forecast_period"}
    if step_units is not None:
        attrs["units"] = step_units
    ds = ds.assign_coords(step=("step", hours * per_unit, attrs))
    return ds.assign_coords(valid_time=(("time", "step"), ds.valid_time.values))


def time_index_layout(ref: xr.Dataset) -> xr.Dataset:
    """A cloud sample zarr: time as an integer dimension ``time_index`` of hours since 1940-01-01,
    stated in a free-text attribute (not CF units)."""
    hours = ((ref.time.values - np.datetime64("1940-01-01")) / np.timedelta64(1, "h")).astype(np.int64)
    ds = _strip(ref).rename(time="time_index")
    return ds.assign_coords(time_index=("time_index", hours, {"description": "hours since 1940-01-01"}))


def plev_pa_layout(ref: xr.Dataset) -> xr.Dataset:
    """CMIP-like: ``plev`` in Pa, CF standard names on variables with other names."""
    ds = _strip(ref).rename(t="ta", u="ua", tp="pr_amount", level="plev")
    ds = ds.assign_coords(plev=("plev", ref.level.values * 100.0, {"units": "Pa"}))
    for old, new in (("ta", "t"), ("ua", "u"), ("pr_amount", "tp")):
        ds[old].attrs = {"standard_name": FIELD_SPECS[new].standard_name}
    return ds


def number_layout(ref_members: xr.Dataset) -> xr.Dataset:
    """An ensemble dimension ``number`` before time (CDS ensembles), with short names."""
    return _strip(ref_members).rename(member="number")


LAYOUTS: dict[str, Callable[[xr.Dataset], xr.Dataset]] = {
    "internal": lambda ref: ref, "wb2": wb2_layout, "flipped": flipped_layout, "lon180": lon180_layout,
    "cds": cds_layout, "cfgrib": cfgrib_layout, "plev_pa": plev_pa_layout,
    "cfgrib_netcdf": cfgrib_netcdf_layout,
}


@pytest.fixture
def reference() -> xr.Dataset:
    return make_reference()


@pytest.fixture
def reference_members() -> xr.Dataset:
    return make_reference(members=MEMBERS)


def write_netcdf(ds: xr.Dataset, path: Path, engine: str = "netcdf4", fmt: str = "NETCDF4") -> str:
    ds.to_netcdf(path, engine=engine, format=fmt)
    return str(path)


def write_zarr(ds: xr.Dataset, path: str | Path) -> str:
    ds.to_zarr(str(path), mode="w", consolidated=False, zarr_format=3)
    return str(path)


def truncate_file(path: str | Path, keep: Callable[[int], int]) -> str:
    """Cut a file to ``keep(size)`` bytes, as an interrupted download leaves it."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:keep(len(data))])
    return str(path)


def corrupt_zarr(ds: xr.Dataset, path: Path) -> str:
    """A zarr store of ``ds`` whose group metadata is not JSON."""
    write_zarr(ds, path)
    (path / "zarr.json").write_text("{not json")
    return str(path)


GRIB_NAMES = {"t": ("t", None), "u": ("u", None), "t2m": ("2t", ("heightAboveGround", 2)),
              "u10": ("10u", ("heightAboveGround", 10)), "v10": ("10v", ("heightAboveGround", 10)),
              "msl": ("msl", ("meanSea", 0)), "sp": ("sp", ("surface", 0))}


def write_grib(ds: xr.Dataset, path: Path, forecast: bool = False, level_type: str = "isobaricInhPa",
               mode: str = "wb") -> str:
    """Write the fields of ``ds`` (t, u, t2m) as GRIB2 with eccodes: latitude 90 -> -90, exact values.

    Args:
        forecast: one reference time with steps 0, 6, ... h instead of one analysis per time.
        level_type: the GRIB typeOfLevel of the level fields (``isobaricInhPa`` or ``hybrid``).
        mode: ``"ab"`` appends messages to an existing file.
    """
    eccodes = pytest.importorskip("eccodes")
    lat, lon = ds.latitude.values, ds.longitude.values
    grid = {"Ni": lon.size, "Nj": lat.size, "latitudeOfFirstGridPointInDegrees": float(lat.max()),
            "latitudeOfLastGridPointInDegrees": float(lat.min()), "longitudeOfFirstGridPointInDegrees": 0.0,
            "longitudeOfLastGridPointInDegrees": float(lon[-1]), "jScansPositively": 0,
            "iDirectionIncrementInDegrees": float(lon[1] - lon[0]),
            "jDirectionIncrementInDegrees": float(lat[1] - lat[0]), "packingType": "grid_ieee"}
    start = pd.Timestamp(ds.time.values[0])
    with open(path, mode) as handle:
        for index, time in enumerate(pd.to_datetime(ds.time.values)):
            when = start if forecast else time
            date = {"dataDate": int(when.strftime("%Y%m%d")), "dataTime": int(when.strftime("%H%M")),
                    "stepRange": str(int((time - when) / pd.Timedelta(hours=1)))}
            for name, var in ds.data_vars.items():
                short_name, surface = GRIB_NAMES[str(name)]
                at_time = var.isel(time=index)
                levels = [(surface, at_time)] if surface else [
                    ((level_type, int(level)), at_time.sel(level=level)) for level in ds.level.values]
                for (type_of_level, level), values in levels:
                    keys = {**grid, **date, "shortName": short_name, "typeOfLevel": type_of_level,
                            "level": level}
                    _write_message(eccodes, handle, keys, values.values[::-1])  # [H, W] north first
    return str(path)


GRIB_MISSING = 9999.0  # the missing value of the messages that hold NaN (a bitmap marks them)


def _write_message(eccodes, handle, keys: dict, values: np.ndarray) -> None:
    gid = eccodes.codes_grib_new_from_samples("regular_ll_pl_grib2")
    try:
        for key, value in keys.items():
            eccodes.codes_set(gid, key, value)
        values = values.astype(np.float64).ravel()
        if np.isnan(values).any():  # missing values as GRIB writes them: a bitmap
            eccodes.codes_set(gid, "missingValue", GRIB_MISSING)
            eccodes.codes_set(gid, "bitmapPresent", 1)
            values = np.where(np.isnan(values), GRIB_MISSING, values)
        eccodes.codes_set_values(gid, values)
        eccodes.codes_write(gid, handle)
    finally:
        eccodes.codes_release(gid)


# ------------------------------------------------------- prepared stores (prepare, sampler, dataset tests)

STORE_BOX = (12, 8, 16)  # (time, latitude, longitude) box the small stores are chunked for
STORE_START = "2000-02-29T12:00"  # 48 hourly steps across a leap day and a month boundary
NAN_FIELD, NAN_LEVEL = "t", 1  # the NaN patch: field t at its second level (850 hPa) ...
NAN_ROWS, NAN_COLUMNS = slice(15, 19), slice(0, 9)  # ... latitude 60..90, longitude 0..80, all times


@pytest.fixture(scope="session")
def store_source() -> xr.Dataset:
    """The source of :func:`prepared_store`: t, u (500, 850 hPa) and sp, 48 h x 19 x 36 points."""
    from tests.data.synthetic import internal_dataset

    return internal_dataset(times=48, start=STORE_START)


@pytest.fixture(scope="session")
def prepared_store(tmp_path_factory, store_source) -> str:
    """A store prepared once per session; tests must not modify it."""
    from atmorep.data.prepare import prepare_dataset

    path = tmp_path_factory.mktemp("prepared") / "store.zarr"
    return str(prepare_dataset(store_source, path, box=STORE_BOX))


@pytest.fixture(scope="session")
def nan_source() -> xr.Dataset:
    """24 h of the synthetic data with NaN in t at 850 hPa north of 60N between 0 and 80E."""
    from tests.data.synthetic import internal_dataset

    ds = internal_dataset(times=24, seed=1)
    t = ds["t"].values.copy()
    t[:, NAN_LEVEL, NAN_ROWS, NAN_COLUMNS] = np.nan  # [T, L, H, W]
    return ds.assign(t=(ds["t"].dims, t, ds["t"].attrs))


@pytest.fixture(scope="session")
def nan_store(tmp_path_factory, nan_source) -> str:
    """:func:`nan_source` prepared once per session; tests must not modify it."""
    from atmorep.data.prepare import prepare_dataset

    path = tmp_path_factory.mktemp("prepared_nan") / "store.zarr"
    return str(prepare_dataset(nan_source, path, box=STORE_BOX))


def draw_batch(sampler, epoch: int, batch: int) -> list:
    """All boxes of one batch of a sampler's stream, as the dataset draws them (without NaN redraws)."""
    return list(sampler.iter_batch(sampler.generator(epoch, batch)))
