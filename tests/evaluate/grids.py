"""Small forecasts and truths in the WeatherBench-2 layout, built from numpy values."""

from __future__ import annotations

from contextlib import contextmanager

import dask
import numpy as np
import pandas as pd
import xarray as xr

TIMES = pd.date_range("2021-03-01", periods=4, freq="6h").values
LEADS = np.array([0, 6, 12], dtype="timedelta64[h]").astype("timedelta64[ns]")
LEVELS = np.array([500.0, 850.0])
LATITUDES = np.linspace(-87.5, 87.5, 36)  # 5 degrees, ascending
LONGITUDES = np.arange(0.0, 360.0, 10.0)
FORECAST_DIMS = ("time", "prediction_timedelta", "level", "latitude", "longitude")


def coords(times=TIMES, leads=LEADS, levels=LEVELS, latitudes=LATITUDES, longitudes=LONGITUDES) -> dict:
    return {"time": times, "prediction_timedelta": leads, "level": levels, "latitude": latitudes,
            "longitude": longitudes}


def layout(values: np.ndarray, members: bool = False, **overrides) -> xr.DataArray:
    """``values [(E,) T, P, L, H, W]`` as a DataArray with the WB2 forecast dims (member first)."""
    grid = coords(**overrides)
    dims = (("member",) if members else ()) + FORECAST_DIMS
    named = {dim: grid[dim] for dim in FORECAST_DIMS}
    if members:
        named["member"] = np.arange(values.shape[0])
    return xr.DataArray(values, dims=dims, coords=named, name="t")


def shape(members: int | None = None, **overrides) -> tuple[int, ...]:
    grid = coords(**overrides)
    sizes = tuple(len(grid[dim]) for dim in FORECAST_DIMS)
    return sizes if members is None else (members, *sizes)


def normalised_weights(latitudes: np.ndarray) -> np.ndarray:
    weights = np.cos(np.deg2rad(latitudes))
    return weights / weights.mean()


@contextmanager
def no_compute():
    """Fail if dask computes anything inside the block (the code under test must stay lazy)."""
    def refuse(*args, **kwargs):
        raise AssertionError("dask computed inside a block that must stay lazy")

    with dask.config.set(scheduler=refuse):
        yield
