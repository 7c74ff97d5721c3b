"""The mapped cases of a report: one field, level and lead time of a prediction beside the truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from atmorep.errors import DataError
from atmorep.evaluate.climatology import valid_times
from atmorep.numerics.interpolation import unwrapped_longitude

__all__ = ["MapCase", "map_case"]


@dataclass(frozen=True)
class MapCase:
    """One case to map: one field, level and lead time on a (regional or global) grid.

    Attributes:
        task: the task of the prediction (the report section the map goes to).
        field: ERA5 short name.
        level: the level value, None for a surface field.
        lead_hours: the lead time (``prediction_timedelta``) in hours.
        time: the valid time (reference time + lead time).
        latitude: ``[H]`` degrees north.
        longitude: ``[W]`` degrees east, increasing modulo 360.
        truth: ``[H, W]`` the truth at the valid time.
        prediction: ``[H, W]`` the ensemble mean.
        spread: ``[H, W]`` the ensemble standard deviation (E - 1 in the denominator; NaN for E = 1).
        units: the field's units.
    """

    task: str
    field: str
    level: float | None
    lead_hours: float
    time: np.datetime64
    latitude: np.ndarray
    longitude: np.ndarray
    truth: np.ndarray
    prediction: np.ndarray
    spread: np.ndarray
    units: str = ""

    def __post_init__(self) -> None:
        shape = (np.size(self.latitude), np.size(self.longitude))
        for name in ("truth", "prediction", "spread"):
            got = np.shape(getattr(self, name))
            if got != shape:
                raise DataError(f"MapCase of '{self.field}': {name} has shape {got}, expected (latitude, "
                                f"longitude) = {shape}")


def _variable(data: xr.Dataset, field: str, what: str) -> xr.DataArray:
    if field not in data.data_vars:
        raise DataError(f"{what} has no variable '{field}' (available: {list(data.data_vars)})")
    return data[field]


def _at_level(data: xr.DataArray, level: float | None, what: str) -> xr.DataArray:
    """``data`` at ``level`` (matched to 1e-6), or unchanged for a surface field and level None."""
    if "level" not in data.dims:
        if level is not None:
            raise DataError(f"{what} variable '{data.name}' has no level dim, got level={level}")
        return data
    available = np.asarray(data["level"].values, dtype=np.float64)
    matches = [] if level is None else np.flatnonzero(np.isclose(available, level, rtol=0, atol=1e-6))
    if len(matches) == 0:
        raise DataError(f"{what} variable '{data.name}' has levels {available.tolist()}, got level={level}")
    return data.isel(level=int(matches[0]))


def _on_grid(truth: xr.DataArray, latitude: np.ndarray, longitude: np.ndarray) -> np.ndarray:
    """The truth ``[H, W]`` at the given points (longitudes compared modulo 360)."""
    available = np.asarray(truth["longitude"].values, dtype=np.float64)
    wanted = unwrapped_longitude(longitude, origin=available.min())  # into the truth's convention
    try:
        picked = truth.sel(latitude=latitude, longitude=wanted, method="nearest", tolerance=1e-4)
    except KeyError as error:
        raise DataError(f"truth '{truth.name}' lacks grid points of the prediction ({error})") from None
    return np.asarray(picked.transpose("latitude", "longitude").values, dtype=np.float64)


def _truth_case(truth: xr.Dataset, field: str, level: float | None, valid: np.datetime64,
                latitude: np.ndarray, longitude: np.ndarray) -> np.ndarray:
    """The truth ``[H, W]`` of ``field`` at the valid time, level and points of a case."""
    target = _variable(truth, field, "truth")
    if "member" in target.dims:
        raise DataError(f"truth variable '{field}' holds an ensemble (dim 'member'); select one member first")
    if valid not in np.asarray(target["time"].values, dtype="datetime64[ns]"):
        raise DataError(f"truth variable '{field}' has no data at the valid time {valid}")
    return _on_grid(_at_level(target.sel(time=valid), level, "truth"), latitude, longitude)


def map_case(prediction: xr.Dataset, truth: xr.Dataset, field: str, level: float | None = None,
             lead_index: int = 0, time_index: int = 0) -> MapCase:
    """Pick one case from a prediction store and the truth at its valid time.

    Args:
        prediction: a prediction store (``field [I, P, E, (L,) H, W]``, attribute ``task``).
        truth: a prepared store opened with xarray (``field [T, (L,) H, W]``), holding the
            prediction's grid points (a regional prediction may wrap past 360 degrees).
        field: the field to map.
        level: its level value; None for a surface field.
        lead_index: index along ``prediction_timedelta``.
        time_index: index along ``time`` (the case).

    Returns:
        The case: ensemble mean and spread over ``member``, truth at ``time + prediction_timedelta``.
        Only that case is read from lazily opened stores.
    """
    indexers = {"time": time_index, "prediction_timedelta": lead_index}
    for dim, index in indexers.items():
        if not 0 <= index < prediction.sizes.get(dim, 0):
            raise DataError(f"prediction has {prediction.sizes.get(dim, 0)} steps along '{dim}', "
                            f"got index {index}")
    forecast = _at_level(_variable(prediction, field, "prediction").isel(indexers), level, "prediction")
    if "member" not in forecast.dims:
        raise DataError(f"prediction variable '{field}' has no dim 'member', got {list(forecast.dims)}")
    members = np.asarray(forecast.transpose("member", "latitude", "longitude").values, np.float64)  # E, H, W
    latitude, longitude = (np.asarray(forecast[d].values, np.float64) for d in ("latitude", "longitude"))
    valid = np.datetime64(valid_times(prediction).isel(indexers).values, "ns")
    lead = prediction["prediction_timedelta"].values[lead_index] / np.timedelta64(1, "h")
    return MapCase(task=str(prediction.attrs.get("task", "prediction")), field=field, level=level,
                   lead_hours=float(lead), time=valid, latitude=latitude, longitude=longitude,
                   truth=_truth_case(truth, field, level, valid, latitude, longitude),
                   prediction=members.mean(0), units=str(forecast.attrs.get("units", "")),
                   spread=members.std(0, ddof=1) if len(members) > 1 else np.full(members.shape[1:], np.nan))
