"""Climatologies: the mean state per time of year and hour of day, and its look-up at valid times.

A climatology is computed from a training period with :func:`climatology_from` and has dims
``(dayofyear, hour, ...)`` (day of year 1..366 from ``time.dt.dayofyear``, hour of day 0..23), or
``(month, hour, ...)`` for periods too short to fill every day of the year. It is the reference of
the anomaly correlation (:func:`atmorep.evaluate.metrics.acc`) and of the climatology baseline.

Day of year is the calendar day: from March on, a leap year's days are one later than the same
dates of other years (as in WeatherBench-2); a smoothing window of a few days hides this.
"""

from __future__ import annotations

import logging
from typing import Literal, TypeVar

import numpy as np
import pandas as pd
import xarray as xr
from xarray.groupers import UniqueGrouper

from atmorep.errors import DataError

logger = logging.getLogger(__name__)

Data = TypeVar("Data", xr.DataArray, xr.Dataset)
Period = Literal["dayofyear", "month"]
PERIODS: tuple[Period, ...] = ("dayofyear", "month")
DAYS_IN_YEAR = 366


def _check_time(data: xr.DataArray | xr.Dataset, what: str) -> None:
    if "time" not in data.dims or data["time"].dtype.kind != "M":
        raise DataError(f"{what} needs a datetime dim 'time', got dims {list(data.dims)}")


def is_climatology(data: xr.DataArray | xr.Dataset) -> bool:
    """Whether ``data`` is indexed by period of year and hour (as :func:`climatology_from` returns)."""
    return "hour" in data.dims and any(period in data.dims for period in PERIODS)


def climatology_from(data: Data, by: Period = "dayofyear", window_days: int = 1) -> Data:
    """Mean climatology per (day of year or month) and hour of day of a training period.

    Args:
        data: fields with a datetime dim ``time`` (e.g. ``(time, level, latitude, longitude)``).
        by: ``"dayofyear"`` (days 1..366) or ``"month"`` (1..12); months suit periods of a year or
            less, where most days of the year are seen at most once.
        window_days: odd width of a circular running mean over the day of year (``by="dayofyear"``
            only), e.g. 15 or 61, to smooth the noise of few years; also fills days within half
            a window of the period's days.

    Returns:
        Dims ``(dayofyear, hour, ...)`` or ``(month, hour, ...)`` followed by the other dims of
        ``data``. Only the periods and hours seen in the data (plus the smoothing's reach) are
        present; a (period, hour) pair never seen together is NaN.
    """
    _check_time(data, "climatology_from")
    if by not in PERIODS:
        raise DataError(f"climatology 'by' must be one of {list(PERIODS)}, got '{by}'")
    if window_days < 1 or window_days % 2 == 0 or (window_days > 1 and by != "dayofyear"):
        raise DataError(f"climatology window_days must be an odd number >= 1 (>1 only by dayofyear), "
                        f"got {window_days} by {by}")
    keyed = data.assign_coords({by: getattr(data["time"].dt, by), "hour": data["time"].dt.hour})
    climatology = keyed.groupby({by: UniqueGrouper(), "hour": UniqueGrouper()}).mean()
    climatology = climatology.transpose(by, "hour", ...)
    if window_days > 1:
        climatology = _smooth_days(climatology, window_days)
    times = data["time"].values
    return climatology.assign_attrs(climatology=f"mean by {by} and hour of day over {times.min()} .. "
                                                f"{times.max()}, {window_days}-day window")


def _smooth_days(climatology: Data, window_days: int) -> Data:
    """Circular running mean over ``dayofyear`` of width ``window_days``, NaNs skipped."""
    half = window_days // 2
    seen = climatology["dayofyear"].values
    full = climatology.reindex(dayofyear=np.arange(1, DAYS_IN_YEAR + 1)).drop_vars("dayofyear")
    wrapped = full.isel(dayofyear=np.arange(-half, DAYS_IN_YEAR + half) % DAYS_IN_YEAR)  # [366 + 2 half]
    if _is_lazy(wrapped):
        wrapped = wrapped.chunk({"dayofyear": -1})
    smooth = wrapped.rolling(dayofyear=window_days, center=True, min_periods=1).mean()
    smooth = smooth.isel(dayofyear=slice(half, half + DAYS_IN_YEAR))
    smooth = smooth.assign_coords(dayofyear=np.arange(1, DAYS_IN_YEAR + 1))
    days = np.arange(1, DAYS_IN_YEAR + 1)
    distance = np.abs(days[:, None] - seen[None, :])  # [366, seen]
    distance = np.minimum(distance, DAYS_IN_YEAR - distance)  # circular
    return smooth.sel(dayofyear=days[(distance <= half).any(axis=1)])


def _is_lazy(data: xr.DataArray | xr.Dataset) -> bool:
    variables = data.variables.values() if isinstance(data, xr.Dataset) else [data.variable]
    return any(variable.chunks is not None for variable in variables)


def as_times(times: object, name: str = "times") -> xr.DataArray:
    """``times`` as a datetime DataArray: a DataArray is kept, anything else becomes dim ``time``."""
    if isinstance(times, xr.DataArray):
        array = times
    else:
        values = np.atleast_1d(np.asarray(times))
        if values.dtype.kind not in "MOU":
            raise DataError(f"{name} must be datetimes, got dtype {values.dtype}")
        try:
            values = pd.to_datetime(values.ravel()).to_numpy()
        except (ValueError, TypeError) as error:
            raise DataError(f"{name} must be datetimes: {error}") from None
        array = xr.DataArray(values, dims="time", coords={"time": values})
    if array.dtype.kind != "M":
        raise DataError(f"{name} must be datetimes, got dtype {array.dtype}")
    return array


def valid_times(data: xr.DataArray | xr.Dataset) -> xr.DataArray:
    """The valid times of ``data``: its ``valid_time`` coordinate, else ``time + prediction_timedelta``
    (dims ``time, prediction_timedelta``) for a forecast, else its ``time``."""
    if "valid_time" in data.coords:
        return data["valid_time"]
    _check_time(data, "valid_times")
    if "prediction_timedelta" in data.dims:
        return (data["time"] + data["prediction_timedelta"]).rename("valid_time")
    return data["time"]


def climatology_at(climatology: Data, times: object) -> Data:
    """The climatology looked up at the given valid times.

    Args:
        climatology: from :func:`climatology_from`, dims ``(dayofyear|month, hour, ...)``.
        times: datetimes; a DataArray of any dims (e.g. ``(time, prediction_timedelta)`` valid
            times from :func:`valid_times`), or a sequence taken as dim ``time``.

    Returns:
        The climatology with the dims and coordinates of ``times`` in place of period and hour.
    """
    if not is_climatology(climatology):
        raise DataError(f"climatology needs dims (dayofyear or month, hour), got {list(climatology.dims)}")
    times = as_times(times)
    period = "dayofyear" if "dayofyear" in climatology.dims else "month"
    keys = {period: getattr(times.dt, period), "hour": times.dt.hour}
    for key, wanted in keys.items():
        missing = np.setdiff1d(np.asarray(wanted.values).ravel(), climatology[key].values)
        if missing.size:
            raise DataError(f"climatology has no {key} {missing[:5].tolist()} (of the requested times); "
                            f"compute it from a longer period or with a wider window")
    return climatology.sel(keys).drop_vars(list(keys))


def select_variables_like(data: Data, like: xr.DataArray | xr.Dataset, what: str = "climatology") -> Data:
    """``data`` restricted to the variables of ``like`` when both are datasets; DataError if some lack."""
    if isinstance(like, xr.Dataset) and isinstance(data, xr.Dataset):
        missing = sorted(set(like.data_vars) - set(data.data_vars))
        if missing:
            raise DataError(f"{what} lacks the variables {missing}")
        data = data[list(like.data_vars)]
    return data
