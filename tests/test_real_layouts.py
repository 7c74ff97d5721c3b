"""The whole pipeline on files in the layouts real archives write, made by the tests themselves.

A GRIB2 forecast file (one reference time and hourly steps, latitude north to south, written with
eccodes) is the training period; a netCDF converted from cfgrib output (reference ``time`` x numeric
``step`` in hours, ``isobaricInhPa`` descending, a ``number`` coordinate) is the validation and test
period. Both prepare with no options, a few steps train, and the test period is forecast,
interpolated and evaluated through the command line.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from typer.testing import CliRunner

from atmorep.cli import app
from tests.data.conftest import write_grib
from tests.data.synthetic import internal_dataset
from tests.train.conftest import write_config

STEPS = 6  # forecast steps per reference time in the netCDF file


def invoke(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def cfgrib_netcdf(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` (internal convention, hourly) as cfgrib writes forecasts, converted to netCDF by other tools."""
    ds = ds.isel(level=slice(None, None, -1), latitude=slice(None, None, -1)).rename(level="isobaricInhPa")
    references = ds.sizes["time"] // STEPS
    fields = {name: (("time", "step", *var.dims[1:]), var.values.reshape(references, STEPS, *var.shape[1:]),
                     {"units": var.attrs.get("units", "")})  # [T, ...] -> [time, step, ...]
              for name, var in ds.data_vars.items()}
    coords = {"time": ds.time.values[::STEPS], "number": 0,
              "step": ("step", np.arange(STEPS, dtype=np.float64), {"units": "hours"}),
              "isobaricInhPa": ("isobaricInhPa", ds.isobaricInhPa.values, {"units": "hPa"}),
              "latitude": ds.latitude.values, "longitude": ds.longitude.values}
    return xr.Dataset(fields, coords=coords)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
def test_grib_and_netcdf_through_prepare_train_infer_evaluate(tmp_path):
    pytest.importorskip("cfgrib")
    train = internal_dataset(times=24, seed=0).drop_vars("sp")
    test = internal_dataset(times=24, seed=1, start="2001-04-01").drop_vars("sp")
    grib = write_grib(train, tmp_path / "train.grib2", forecast=True)
    netcdf = tmp_path / "test.nc"
    cfgrib_netcdf(test).to_netcdf(netcdf)
    assert xr.open_dataset(netcdf)["step"].dtype.kind == "f"  # numbers, as such files hold them

    invoke("data", "prepare", grib, tmp_path / "train.zarr")
    invoke("data", "prepare", netcdf, tmp_path / "test.zarr")
    for name, source in (("train.zarr", train), ("test.zarr", test)):
        stored = xr.open_zarr(tmp_path / name)
        assert np.array_equal(stored.time.values, source.time.values)
        assert np.array_equal(stored.t.values, source.t.values), name  # same values, same order

    stores = {"train": str(tmp_path / "train.zarr"), "validation": str(tmp_path / "test.zarr")}
    config = write_config(tmp_path / "run.yaml", stores, tmp_path / "run", max_steps=3)
    assert "trained to step 3" in invoke("train", "--config", config)

    checkpoint, data = tmp_path / "run" / "checkpoint", tmp_path / "test.zarr"
    invoke("infer", "--checkpoint", checkpoint, "--data", data, "-o", tmp_path / "forecast.zarr",
           "--time", "2001-04-01T08", "--lead-hours", "3", "--device", "cpu")
    invoke("infer", "--checkpoint", checkpoint, "--data", data, "-o", tmp_path / "interpolate.zarr",
           "--task", "interpolate", "--time", "2001-04-01T09", "--device", "cpu")
    invoke("evaluate", tmp_path / "forecast.zarr", tmp_path / "interpolate.zarr", "--truth", data,
           "-o", tmp_path / "evaluation", "--no-maps")
    summary = pd.read_csv(tmp_path / "evaluation" / "summary.csv")
    assert set(summary["task"]) == {"forecast", "interpolate"} and set(summary["field"]) == {"t", "u"}
    assert np.isfinite(summary["rmse_model"]).all()
