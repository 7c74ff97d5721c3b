"""Normalisation statistics and NaN reports, computed out of core with dask.

Global statistics are latitude (area) weighted: each grid point counts with ``cos(latitude)``,
so the polar rows of a regular grid do not dominate. NaNs are skipped in the statistics and
reported separately.
"""

from __future__ import annotations

import dask
import numpy as np
import xarray as xr

from atmorep.data.statistics import FieldStatistics, Statistics
from atmorep.errors import DataError
from atmorep.numerics.latitude import latitude_weights

MIN_STD = 1e-12


def area_weights(latitude: xr.DataArray) -> xr.DataArray:
    """``cos(latitude)`` of a coordinate, mean 1, 0 at the poles (the weighted means normalise it away)."""
    weights = latitude_weights(np.asarray(latitude.values, dtype=np.float64), "coordinate 'latitude'")
    return xr.DataArray(weights, dims=latitude.dims, coords=latitude.coords)


def _reduce_dims(var: xr.DataArray) -> list[str]:
    return [d for d in var.dims if d != "level"]


def _lazy_moments(ds: xr.Dataset) -> dict:
    """field -> lazy latitude-weighted ``(mean, mean of squares)`` per level (NaNs skipped)."""
    weights = area_weights(ds["latitude"])
    lazy = {}
    for name, var in ds.data_vars.items():
        values = var.astype(np.float64)
        dims = _reduce_dims(var)
        lazy[name] = (values.weighted(weights).mean(dims), (values**2).weighted(weights).mean(dims))
    return lazy


def _statistics_from_moments(ds: xr.Dataset, moments: dict) -> Statistics:
    """Statistics from the computed :func:`_lazy_moments`; a constant field gets std 1."""
    fields = {}
    for name, (mean, mean_square) in moments.items():
        mean_v = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        var_v = np.atleast_1d(np.asarray(mean_square, dtype=np.float64)) - mean_v**2
        std_v = np.sqrt(np.clip(var_v, 0.0, None))
        levels = tuple(float(v) for v in ds["level"].values) if "level" in ds[name].dims else (0.0,)
        if not np.all(np.isfinite(mean_v)):
            where = f" at level {levels[int(np.argmax(~np.isfinite(mean_v)))]:g}" if len(levels) > 1 else ""
            raise DataError(f"field '{name}'{where} holds no value but NaN (or infinity); expected data: "
                            "leave it out with --fields or --levels")
        std_v = np.where(std_v > MIN_STD, std_v, 1.0)  # a constant field is left unscaled
        fields[str(name)] = FieldStatistics(levels, tuple(map(float, mean_v)), tuple(map(float, std_v)))
    return Statistics(fields)


def _lazy_nan_counts(ds: xr.Dataset) -> dict:
    """field -> lazy number of NaN values."""
    return {name: var.isnull().sum() for name, var in ds.data_vars.items()}


def compute_statistics(ds: xr.Dataset) -> Statistics:
    """Latitude-weighted mean and std of every field, per level (one dask pass over the data)."""
    (moments,) = dask.compute(_lazy_moments(ds))
    return _statistics_from_moments(ds, moments)


def reduce_store(ds: xr.Dataset) -> tuple[Statistics, dict[str, int]]:
    """Statistics (as :func:`compute_statistics`) and NaN counts per field, in one dask pass.

    Returns:
        The statistics, and field -> number of NaN values (for :func:`nan_report`).
    """
    moments, counts = dask.compute(_lazy_moments(ds), _lazy_nan_counts(ds))
    return _statistics_from_moments(ds, moments), {str(name): int(count) for name, count in counts.items()}


def nan_report(ds: xr.Dataset, counts: dict[str, int] | None = None) -> dict[str, dict]:
    """Fraction of NaN per field and where it lies (first time, latitude and longitude range).

    Args:
        ds: the dataset.
        counts: field -> number of NaN values, if already known (:func:`reduce_store`); computed
            when None.

    Returns:
        field -> {"fraction", "count", "where"} for fields that hold any NaN; empty if none.
    """
    if counts is None:
        (computed,) = dask.compute(_lazy_nan_counts(ds))
        counts = {str(name): int(count) for name, count in computed.items()}
    report = {}
    for name, count in counts.items():
        if count == 0:
            continue
        var = ds[name]
        isnan = var.isnull()
        any_time, any_lat, any_lon = dask.compute(
            *(isnan.any([d for d in var.dims if d != keep]) for keep in ("time", "latitude", "longitude"))
        )
        times = ds["time"].values[any_time.values]
        lats = ds["latitude"].values[any_lat.values]
        lons = ds["longitude"].values[any_lon.values]
        where = (
            f"{times.size} time steps from {str(times[0])[:19]}, latitude {lats.min():g}..{lats.max():g}, "
            f"longitude {lons.min():g}..{lons.max():g}"
        )
        report[name] = {"fraction": count / var.size, "count": count, "where": where}
    return report
