"""Climatologies of fields with a known seasonal and diurnal cycle, and their look-up."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from atmorep.errors import DataError
from atmorep.evaluate.climatology import climatology_at, climatology_from, valid_times
from tests.evaluate.grids import no_compute

LATITUDES = np.array([-30.0, 0.0, 30.0])
LONGITUDES = np.array([0.0, 120.0, 240.0])


def _field(times: np.ndarray, values: np.ndarray) -> xr.DataArray:
    """``values [T]`` plus a fixed spatial pattern, dims (time, latitude, longitude)."""
    pattern = 0.1 * LATITUDES[:, None] + 0.01 * LONGITUDES[None, :]  # [H, W]
    return xr.DataArray(values[:, None, None] + pattern, dims=("time", "latitude", "longitude"),
                        coords={"time": times, "latitude": LATITUDES, "longitude": LONGITUDES}, name="t")


def _diurnal(hours: np.ndarray) -> np.ndarray:
    return 280.0 + 5.0 * np.cos(2 * np.pi * (hours - 14) / 24)


@pytest.mark.parametrize("by", ["dayofyear", "month"])
def test_climatology_of_a_pure_diurnal_cycle_is_that_cycle(by):
    times = pd.date_range("2021-01-01", "2022-12-31 18:00", freq="6h")
    year_anomaly = np.where(times.year == 2021, 3.0, -3.0)  # cancels in the two-year mean
    field = _field(times.values, _diurnal(times.hour.values) + year_anomaly)
    climatology = climatology_from(field, by=by)
    assert climatology.dims == (by, "hour", "latitude", "longitude")
    assert climatology.sizes[by] == (365 if by == "dayofyear" else 12)
    expected = _field(np.zeros(4, "datetime64[ns]"), _diurnal(np.arange(0, 24, 6.0)))  # [hour, H, W]
    np.testing.assert_allclose(climatology.values, np.broadcast_to(expected.values, climatology.shape),
                               rtol=1e-12)
    wanted = pd.to_datetime(["2030-07-04 06:00", "2031-02-10 18:00"]).values
    looked_up = climatology_at(climatology, wanted)
    assert looked_up.dims == ("time", "latitude", "longitude")
    np.testing.assert_allclose(looked_up.values, _field(wanted, _diurnal(np.array([6.0, 18.0]))).values,
                               rtol=1e-12)


def test_climatology_at_valid_times_of_a_forecast_takes_their_dims():
    times = pd.date_range("2021-01-01", periods=40, freq="6h")
    climatology = climatology_from(_field(times.values, _diurnal(times.hour.values)))
    forecast = xr.DataArray(np.zeros((2, 3)), dims=("time", "prediction_timedelta"),
                            coords={"time": times.values[:2],
                                    "prediction_timedelta": pd.to_timedelta(["0h", "6h", "30h"]).values})
    looked_up = climatology_at(climatology, valid_times(forecast))
    assert looked_up.dims == ("time", "prediction_timedelta", "latitude", "longitude")
    hours = (times.hour.values[:2, None] + np.array([0, 6, 30])[None, :]) % 24
    np.testing.assert_allclose(looked_up.isel(latitude=1, longitude=0).values, _diurnal(hours), rtol=1e-12)


def test_running_window_smooths_over_days_and_extends_the_reach():
    times = pd.date_range("2021-03-01", "2021-04-29 18:00", freq="6h")  # days of year 60..119
    field = _field(times.values, times.day_of_year.values.astype(float))
    climatology = climatology_from(field, window_days=7)
    days = climatology["dayofyear"].values
    np.testing.assert_array_equal(days, np.arange(57, 123))  # 3 days beyond each end
    centre = climatology.sel(dayofyear=slice(63, 116)).isel(hour=0, latitude=1, longitude=0)
    np.testing.assert_allclose(centre.values, centre["dayofyear"].values, rtol=1e-12)  # linear is kept
    first = float(climatology.sel(dayofyear=60).isel(hour=0, latitude=1, longitude=0))
    assert first == pytest.approx(np.mean([60, 61, 62, 63]))  # only seen days count


def test_running_window_wraps_around_the_end_of_the_year():
    times = pd.date_range("2021-12-25", "2022-01-10 18:00", freq="6h")
    climatology = climatology_from(_field(times.values, np.full(len(times), 5.0)), window_days=5)
    days = set(climatology["dayofyear"].values.tolist())
    assert {357, 365, 366, 1, 12} <= days and 356 not in days and 13 not in days
    np.testing.assert_allclose(climatology.isel(latitude=1, longitude=0).values, 5.0, rtol=1e-12)


def test_climatology_stays_lazy_on_dask_data():
    times = pd.date_range("2021-01-01", periods=20, freq="6h")
    field = _field(times.values, _diurnal(times.hour.values))
    with no_compute():
        lazy = climatology_from(field.chunk(time=8), window_days=3)
        looked_up = climatology_at(lazy, times.values[:5])
    np.testing.assert_allclose(looked_up.values, climatology_at(climatology_from(field, window_days=3),
                                                                times.values[:5]).values, rtol=1e-12)


def test_climatology_rejects_bad_input_and_unseen_times():
    times = pd.date_range("2021-01-01", periods=8, freq="6h")
    field = _field(times.values, _diurnal(times.hour.values))
    with pytest.raises(DataError, match="window_days"):
        climatology_from(field, window_days=4)
    with pytest.raises(DataError, match="window_days"):
        climatology_from(field, by="month", window_days=3)
    with pytest.raises(DataError, match="by"):
        climatology_from(field, by="week")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="time"):
        climatology_from(field.rename(time="step"))
    climatology = climatology_from(field)
    with pytest.raises(DataError, match="dayofyear"):
        climatology_at(climatology, ["2021-06-01T00"])
    with pytest.raises(DataError, match="hour"):
        climatology_at(climatology, ["2021-01-01T03"])
    with pytest.raises(DataError, match="datetimes"):
        climatology_at(climatology, [1.5])
