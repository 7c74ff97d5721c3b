"""The time axis of a dataset: every encoding real archives use, mapped to one ``time`` of valid times.

Accepted encodings (see docs/data.md):

- CF times (``units = "hours since 1979-01-01"``), decoded by xarray, on ``time`` or ``valid_time``;
- ``valid_time`` as the only time dimension (the CDS netCDF layout), or as a coordinate along ``time``;
- a reference ``time`` and a forecast ``step`` (cfgrib), the valid time being ``time + step``. The
  step is a timedelta, or a number with ``units`` (``hours``, ``minutes``, ``seconds``, ``days``;
  hours when it has none, the GRIB default), as netCDF files converted from GRIB store it;
- a time dimension of any name holding numbers (or no values: 0, 1, 2, ...) whose units are given by
  the user: ``time_dim="time_index", time_units="hours since 1940-01-01"`` (``--time-dim``,
  ``--time-units`` on the command line).

The result is one ``time`` dimension, ``datetime64[ns]``, strictly increasing and unique (never
sorted silently).
"""

from __future__ import annotations

import re

import numpy as np
import xarray as xr

from atmorep.errors import DataError

TIME_NAMES = ("time", "valid_time")
STEP_UNITS = {"h": "h", "hour": "h", "hours": "h", "hr": "h", "hrs": "h",
              "m": "m", "min": "m", "mins": "m", "minute": "m", "minutes": "m",
              "s": "s", "sec": "s", "second": "s", "seconds": "s",
              "d": "D", "day": "D", "days": "D"}
TIME_OPTIONS = ("--time-dim NAME --time-units 'hours since 1940-01-01' (time_dim=, time_units= in Python)")
_TIME_LIKE = re.compile(r"time|date|hour|step", re.IGNORECASE)
_UNITS_IN_TEXT = re.compile(r"\b(hours|minutes|seconds|days)\s+since\s+\d{4}-\d{1,2}-\d{1,2}[T ]?[\d:]*",
                            re.IGNORECASE)


def name_time(ds: xr.Dataset, time_dim: str, origin: str) -> xr.Dataset:
    """Make the dimension ``time_dim`` the ``time`` axis (values 0, 1, ... if it has none)."""
    if time_dim not in ds.dims:
        dims = ", ".join(map(str, ds.dims))
        raise DataError(f"{origin}: time dimension '{time_dim}' (--time-dim) not found; dimensions: {dims}")
    if time_dim == "time":
        return ds if "time" in ds.coords else ds.assign_coords(time=np.arange(ds.sizes["time"]))
    clash = [name for name in (*TIME_NAMES, "step") if name in ds.variables and name != time_dim]
    if any(ds[name].ndim > 0 for name in clash):
        raise DataError(f"{origin}: cannot use '{time_dim}' as the time dimension: the file already has "
                        f"'{clash[0]}' along {ds[clash[0]].dims}; drop --time-dim to use it")
    ds = ds.drop_vars(clash)
    if time_dim not in ds.coords:
        ds = ds.assign_coords({time_dim: np.arange(ds.sizes[time_dim])})
    return ds.rename({time_dim: "time"})


def time_options(ds: xr.Dataset, candidates: list[str]) -> str:
    """The options that name the time dimension, for an error: the file's own candidate by name.

    Args:
        ds: the dataset as read.
        candidates: its dimensions that could be time (not latitude, longitude, level or member).

    Returns:
        ``--time-dim time_index --time-units '...'`` with the one candidate that holds dates or is
        named like time (or the only candidate), with ``--time-units`` only when its values are plain
        numbers, and the units its attributes mention where they do; :data:`TIME_OPTIONS` without one.
    """
    dated = [name for name in candidates if name in ds.coords and ds[name].dtype.kind in "MO"]
    named = [name for name in candidates if _TIME_LIKE.search(str(name))]
    chosen = next((group for group in (dated, named, candidates) if len(group) == 1), None)
    if chosen is None:
        return TIME_OPTIONS if not candidates else (
            f"--time-dim and one of {', '.join(map(str, candidates))} (time_dim= in Python)")
    name = chosen[0]
    if name in ds.coords and ds[name].dtype.kind in "MO":
        return f"--time-dim {name} (time_dim='{name}' in Python)"
    units = _units_in_attributes(ds[name]) if name in ds.coords else None
    example = f"'{units}'" if units else "'UNITS since DATE' (e.g. 'hours since 1940-01-01')"
    return f"--time-dim {name} --time-units {example} (time_dim='{name}', time_units= in Python)"


def standardise_time(ds: xr.Dataset, origin: str, time_units: str | None = None) -> xr.Dataset:
    """One ``time`` dimension of valid times, datetime64[ns], strictly increasing.

    Args:
        ds: a dataset whose time lies on ``time``/``valid_time`` (and ``step``), see the module docstring.
        origin: the file it came from, for error messages.
        time_units: CF units (``"hours since 1940-01-01"``) of a time axis that holds plain numbers.
    """
    if "step" in ds.coords and ("time" in ds.coords or "time" in ds.dims):
        ds = _valid_time_from_step(ds, origin, time_units)
    elif "valid_time" in ds.dims or ("valid_time" in ds.coords and ds["valid_time"].ndim == 0):
        ds = ds.drop_vars([name for name in ("time", "step") if name in ds.coords])
        ds = ds.rename(valid_time="time")
    elif "valid_time" in ds.coords and ds["valid_time"].dims == ("time",):
        ds = ds.assign_coords(time=ds["valid_time"].values).drop_vars("valid_time")
    if "time" not in ds.coords:
        raise DataError(f"{origin}: no time coordinate; expected 'time' or 'valid_time' values, or "
                        f"name the time dimension: {TIME_OPTIONS}")
    if ds["time"].ndim == 0:
        ds = ds.expand_dims("time")
    times = as_datetime(ds["time"], origin, time_units)
    check_time(times, origin)
    return ds.assign_coords(time=("time", times))


def _valid_time_from_step(ds: xr.Dataset, origin: str, time_units: str | None) -> xr.Dataset:
    """Replace reference ``time`` and forecast ``step`` by the valid time, flattened time-major."""
    reference = xr.DataArray(as_datetime(ds["time"], origin, time_units).reshape(ds["time"].shape),
                             dims=ds["time"].dims)
    step = xr.DataArray(step_as_timedelta(ds["step"], origin).reshape(ds["step"].shape), dims=ds["step"].dims)
    valid = reference + step  # broadcast over the dims of time and step
    ds = ds.drop_vars([name for name in ("valid_time",) if name in ds.coords])
    if "time" in ds.dims and "step" in ds.dims:
        ds = ds.stack(_valid=("time", "step"))  # (time, step) -> one axis of time*step valid times
        valid = valid.stack(_valid=("time", "step"))
        ds = ds.drop_vars(["_valid", "time", "step"]).rename(_valid="time")
    elif "step" in ds.dims:
        ds = ds.drop_vars("time").rename(step="time")
    else:
        ds = ds.drop_vars("step")
        if "time" not in ds.dims:
            ds = ds.expand_dims("time")
    return ds.assign_coords(time=("time", np.atleast_1d(valid.values).ravel()))


def step_as_timedelta(step: xr.DataArray, origin: str) -> np.ndarray:
    """Forecast steps as timedelta64[ns]: timedeltas as they are, numbers in their ``units`` (hours by
    default, as GRIB), ``[S]``."""
    values = np.atleast_1d(step.values)
    if values.dtype.kind == "m":
        return values.astype("timedelta64[ns]")
    if values.dtype.kind not in "iuf":
        raise DataError(f"{origin}: forecast step has dtype {values.dtype}; expected timedeltas or numbers")
    units = str(step.attrs.get("units") or step.encoding.get("units") or "hours").strip().lower()
    unit = STEP_UNITS.get(units)
    if unit is None:
        raise DataError(f"{origin}: forecast step has units '{units}'; expected one of hours, minutes, "
                        "seconds, days")
    if not np.all(np.isfinite(values)):
        raise DataError(f"{origin}: forecast step has missing values; expected numbers")
    nanoseconds = values.astype(np.float64) * (np.timedelta64(1, unit) / np.timedelta64(1, "ns"))
    return np.round(nanoseconds).astype("int64").astype("timedelta64[ns]")


def as_datetime(time: xr.DataArray, origin: str, time_units: str | None = None) -> np.ndarray:
    """The time values as datetime64[ns], ``[T]``: decoded dates, cftime dates of a standard calendar,
    or numbers in ``time_units``."""
    values = np.atleast_1d(time.values)
    if values.dtype.kind == "M":
        return values.astype("datetime64[ns]")
    if values.dtype.kind == "O":
        try:
            return xr.CFTimeIndex(values).to_datetimeindex(time_unit="ns").values
        except (TypeError, ValueError) as error:
            raise DataError(f"{origin}: time values cannot be converted to datetime64 ({error}); "
                            "expected a standard calendar") from None
    if values.dtype.kind in "iuf" and time_units:
        return _decode_numbers(values, time_units, origin)
    hint = _units_in_attributes(time)
    known = f" (its attributes mention '{hint}')" if hint else ""
    raise DataError(f"{origin}: time '{time.name}' holds numbers ({values.dtype}) without CF units{known}; "
                    "give their units with --time-units 'hours since 1940-01-01' (time_units= in Python)")


def _decode_numbers(values: np.ndarray, units: str, origin: str) -> np.ndarray:
    """Numbers in CF ``units`` (``"<unit> since <date>"``), standard calendar, as datetime64[ns]."""
    if not np.all(np.isfinite(values)):
        raise DataError(f"{origin}: time has missing values; expected numbers in '{units}'")
    try:
        decoded = xr.coding.times.decode_cf_datetime(values, units, calendar="proleptic_gregorian")
    except (ValueError, TypeError, OverflowError) as error:
        raise DataError(f"{origin}: time units '{units}' (--time-units) cannot be read ({error}); "
                        "expected '<hours|minutes|seconds|days> since <YYYY-MM-DD[ HH:MM]>'") from None
    return np.asarray(decoded).astype("datetime64[ns]")


def _units_in_attributes(time: xr.DataArray) -> str | None:
    """A ``"<unit> since <date>"`` phrase in the attributes of a time axis, for the error message."""
    for value in time.attrs.values():
        match = _UNITS_IN_TEXT.search(str(value))
        if match:
            return match.group(0).strip()
    return None


def check_time(times: np.ndarray, origin: str) -> None:
    """Times ``[T]`` must be valid, unique and strictly increasing (never sorted silently)."""
    if np.isnat(times).any():
        raise DataError(f"{origin}: missing time (NaT) at index {int(np.argmax(np.isnat(times)))}")
    steps = np.diff(times)
    if np.all(steps > np.timedelta64(0)):
        return
    unique, counts = np.unique(times, return_counts=True)
    if np.any(counts > 1):
        duplicated = unique[counts > 1][0]
        where = np.flatnonzero(times == duplicated).tolist()
        raise DataError(f"{origin}: duplicated time {np.datetime_as_string(duplicated, unit='s')} "
                        f"at indices {where}; expected unique times")
    index = int(np.argmax(steps <= np.timedelta64(0))) + 1
    before, after = np.datetime_as_string(times[index - 1 : index + 1], unit="s")
    raise DataError(f"{origin}: times not sorted at index {index} ({before} is followed by {after}); "
                    "expected increasing times")


def check_regular(times: np.ndarray, origin: str) -> None:
    """Times ``[T]`` must be equally spaced: boxes are cut by index, so a gap would join distant times."""
    steps = np.diff(times)
    if steps.size == 0 or np.all(steps == steps[0]):
        return
    seconds = steps.astype("timedelta64[s]").astype(np.int64)
    values, counts = np.unique(seconds, return_counts=True)
    typical = values[np.argmax(counts)]  # the most frequent step (the shortest of equally frequent ones)
    index = int(np.argmax(seconds != typical)) + 1
    before, after = np.datetime_as_string(times[index - 1 : index + 1], unit="s")
    raise DataError(f"{origin}: irregular time steps at index {index} ({before} is followed by {after}, "
                    f"the typical step is {typical / 3600:g} h); expected equally spaced times (a missing "
                    "file or day?); prepare each regular period as its own store")
