"""Verification metrics of forecasts and ensembles on xarray data in the WeatherBench-2 layout.

Forecasts have dims ``time`` (initialisation), ``prediction_timedelta``, ``level``, ``latitude``
(ascending), ``longitude`` and, for ensembles, ``member``; the truth is given at the same coordinates
(:func:`truth_at_valid_times` selects it from a prepared store). Every function takes DataArrays or
Datasets (variables keyed by ERA5 short name), stays lazy on dask-backed data and returns the same
kind of object.

Reductions are means weighted by ``cos(latitude)`` (:func:`latitude_weights`) over ``dims``: by default
``("time", "latitude", "longitude")``, keeping ``level``, ``prediction_timedelta`` and whatever else.
NaNs propagate (``skipna=False``), so a broken forecast shows as NaN rather than as a smaller mean.
The definitions, with their maths, are in ``docs/evaluation.md``. Day-of-year climatologies and
their look-up live in :mod:`atmorep.evaluate.climatology` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

import numpy as np
import xarray as xr

from atmorep.errors import DataError
from atmorep.evaluate.climatology import (
    climatology_at,
    climatology_from,
    is_climatology,
    select_variables_like,
    valid_times,
)
from atmorep.numerics.crps import crps
from atmorep.numerics.latitude import latitude_weights as area_weights

__all__ = [
    "acc", "bias", "blockiness", "climatology_at", "climatology_from", "crps_ensemble", "crps_fair",
    "ensemble_mean", "latitude_weights", "mae", "power_spectrum", "rank_histogram", "reduce_dims", "rmse",
    "spread", "spread_skill_ratio", "truth_at_valid_times", "valid_times", "weighted_mean", "weighted_sum",
]

Data = TypeVar("Data", xr.DataArray, xr.Dataset)
Dims = str | Sequence[Hashable] | None

DEFAULT_DIMS = ("time", "latitude", "longitude")  # reduced unless the caller says otherwise
SPATIAL_DIMS = ("latitude", "longitude")
MEMBER_DIM = "member"


def latitude_weights(latitude: xr.DataArray) -> xr.DataArray:
    """Area weights ``cos(latitude)`` of a coordinate ``[H]``, mean 1, exactly 0 at the poles
    (:func:`atmorep.numerics.latitude.latitude_weights`)."""
    weights = area_weights(np.asarray(latitude.values, dtype=np.float64), "coordinate 'latitude'")
    return xr.DataArray(weights, dims=latitude.dims, coords=latitude.coords)


def reduce_dims(data: xr.DataArray | xr.Dataset, dims: Dims = None) -> tuple[Hashable, ...]:
    """The dims to reduce: ``dims`` checked against ``data``, or the defaults that ``data`` has."""
    if dims is None:
        return tuple(d for d in DEFAULT_DIMS if d in data.dims)
    dims = (dims,) if isinstance(dims, str) else tuple(dims)
    missing = [d for d in dims if d not in data.dims]
    if missing:
        raise DataError(f"metric dims {missing} are not dims of the data, expected some of {list(data.dims)}")
    return dims


def _weighted_mean_array(data: xr.DataArray, dims: tuple[Hashable, ...]) -> xr.DataArray:
    dims = tuple(d for d in dims if d in data.dims)  # a Dataset's surface fields have no level
    if not dims:
        return data
    if "latitude" in dims:
        return data.weighted(latitude_weights(data["latitude"])).mean(dims, skipna=False)
    return data.mean(dims, skipna=False)


def _weighted_sum_array(data: xr.DataArray, dims: tuple[Hashable, ...]) -> xr.DataArray:
    dims = tuple(d for d in dims if d in data.dims)
    if not dims:
        return data
    if "latitude" in dims:
        return data.weighted(latitude_weights(data["latitude"])).sum(dims, skipna=False)
    return data.sum(dims, skipna=False)


def weighted_mean(data: Data, dims: Dims = None) -> Data:
    """Latitude-weighted mean over ``dims`` (default: time, latitude, longitude)."""
    dims = reduce_dims(data, dims)
    if isinstance(data, xr.Dataset):
        return data.map(_weighted_mean_array, dims=dims)
    return _weighted_mean_array(data, dims)


def weighted_sum(data: Data, dims: Dims = None) -> Data:
    """Sum over ``dims`` with latitude weights of mean 1 (a count of points stays a count of points)."""
    dims = reduce_dims(data, dims)
    if isinstance(data, xr.Dataset):
        return data.map(_weighted_sum_array, dims=dims)
    return _weighted_sum_array(data, dims)


def _aligned(forecast: Data, truth: Data, name: str = "truth") -> None:
    """Raise DataError unless ``truth`` has the forecast's variables on identical coordinates.

    Without this check xarray's arithmetic would silently keep only the coordinates both share.
    """
    if isinstance(forecast, xr.Dataset):
        if not isinstance(truth, xr.Dataset):
            raise DataError(f"{name} must be a Dataset like the forecast, got {type(truth).__name__}")
        missing = sorted(set(forecast.data_vars) - set(truth.data_vars))
        if missing:
            raise DataError(f"{name} lacks the forecast variables {missing}")
    try:
        xr.align(forecast, truth, join="exact")
    except ValueError as error:
        raise DataError(f"{name} coordinates differ from the forecast's (select the {name} at the forecast's "
                        f"coordinates first): {error}") from None


def ensemble_mean(data: Data, member_dim: str = MEMBER_DIM) -> Data:
    """The mean over ``member_dim`` if ``data`` has it, else ``data`` unchanged."""
    return data.mean(member_dim, skipna=False) if member_dim in data.dims else data


def rmse(forecast: Data, truth: Data, dims: Dims = None, member_dim: str = MEMBER_DIM) -> Data:
    """Root mean squared error ``sqrt(<(f - y)^2>)`` of the (ensemble mean) forecast.

    The square root is taken after averaging over all ``dims`` (time included).
    """
    forecast = ensemble_mean(forecast, member_dim)
    _aligned(forecast, truth)
    return np.sqrt(weighted_mean((forecast - truth) ** 2, reduce_dims(forecast, dims)))


def mae(forecast: Data, truth: Data, dims: Dims = None, member_dim: str = MEMBER_DIM) -> Data:
    """Mean absolute error ``<|f - y|>`` of the (ensemble mean) forecast."""
    forecast = ensemble_mean(forecast, member_dim)
    _aligned(forecast, truth)
    return weighted_mean(abs(forecast - truth), reduce_dims(forecast, dims))


def bias(forecast: Data, truth: Data, dims: Dims = None, member_dim: str = MEMBER_DIM) -> Data:
    """Mean error ``<f - y>`` of the (ensemble mean) forecast: positive when it is too high."""
    forecast = ensemble_mean(forecast, member_dim)
    _aligned(forecast, truth)
    return weighted_mean(forecast - truth, reduce_dims(forecast, dims))


def _climatology_like(climatology: Data, truth: Data) -> Data:
    """The climatology at the truth's valid times and levels (unchanged if already there)."""
    if is_climatology(climatology):
        climatology = climatology_at(climatology, valid_times(truth))
    climatology = select_variables_like(climatology, truth)
    if "level" in truth.dims and "level" in climatology.dims:
        climatology = climatology.sel(level=truth["level"].values)
    return climatology.drop_vars(["valid_time"], errors="ignore")


def acc(forecast: Data, truth: Data, climatology: Data, dims: Dims = None,
        member_dim: str = MEMBER_DIM, centred: bool = True) -> Data:
    """Anomaly correlation coefficient of the (ensemble mean) forecast.

    With anomalies ``f' = f - c`` and ``y' = y - c`` from the climatology ``c`` at the valid time,
    centred (``f' - <f'>``) over the spatial dims among ``dims``, the ACC is the latitude-weighted
    correlation ``<f' y'> / sqrt(<f'^2> <y'^2>)`` over those spatial dims, computed per time (and
    per whatever is kept) and then averaged over the other ``dims`` (e.g. time), as in
    WeatherBench-2. ``centred=False`` gives WeatherBench-2's uncentred form.

    Args:
        forecast: forecast, optionally with members.
        truth: the truth at the forecast's coordinates.
        climatology: either a climatology from :func:`climatology_from` (looked up at the truth's
            valid times) or one already at the truth's coordinates.
        dims: dims to reduce; must include latitude and/or longitude.
        member_dim: the ensemble dim of ``forecast``, averaged first.
        centred: subtract the spatial mean anomaly before correlating.

    Returns:
        The ACC, 1 for a perfect forecast, -1 for the negated anomaly.
    """
    forecast = ensemble_mean(forecast, member_dim)
    _aligned(forecast, truth)
    dims = reduce_dims(forecast, dims)
    spatial = tuple(d for d in dims if d in SPATIAL_DIMS)
    if not spatial:
        raise DataError(f"acc correlates over latitude and/or longitude, but dims are {list(dims)}")
    climatology = _climatology_like(climatology, truth)
    _aligned(truth, climatology, "climatology")
    forecast_anomaly, truth_anomaly = forecast - climatology, truth - climatology
    if centred:
        forecast_anomaly = forecast_anomaly - weighted_mean(forecast_anomaly, spatial)
        truth_anomaly = truth_anomaly - weighted_mean(truth_anomaly, spatial)
    covariance = weighted_mean(forecast_anomaly * truth_anomaly, spatial)
    norm = np.sqrt(weighted_mean(forecast_anomaly**2, spatial) * weighted_mean(truth_anomaly**2, spatial))
    others = tuple(d for d in dims if d not in spatial)
    return weighted_mean(covariance / norm, others)


def _members(ensemble: Data, member_dim: str, minimum: int, metric: str) -> int:
    """The ensemble size E, checked to be at least ``minimum``."""
    if member_dim not in ensemble.dims:
        raise DataError(f"{metric} needs an ensemble with dim '{member_dim}', got dims {list(ensemble.dims)}")
    size = ensemble.sizes[member_dim]
    if size < minimum:
        raise DataError(f"{metric} needs at least {minimum} members along '{member_dim}', got {size}")
    return size


def _crps(ensemble: Data, truth: Data, dims: Dims, member_dim: str, fair: bool) -> Data:
    _members(ensemble, member_dim, 1, "crps")
    _aligned(ensemble.isel({member_dim: 0}, drop=True), truth)
    def score_of(members: np.ndarray, observed: np.ndarray) -> np.ndarray:
        return np.asarray(crps(members, observed, fair=fair), dtype=np.float64)

    score = xr.apply_ufunc(score_of, ensemble, truth, input_core_dims=[[member_dim], []],
                           dask="parallelized", output_dtypes=[np.float64],
                           dask_gufunc_kwargs={"allow_rechunk": True})
    return weighted_mean(score, reduce_dims(truth, dims))


def crps_fair(ensemble: Data, truth: Data, dims: Dims = None, member_dim: str = MEMBER_DIM) -> Data:
    """Fair (unbiased) kernel CRPS of an ensemble, latitude-weighted mean over ``dims``.

    ``mean_i |x_i - y| - 1 / (2 E (E - 1)) sum_{i,j} |x_i - x_j|`` per point: its expectation over
    ensembles of E members drawn from F is the CRPS of F. A single member gives the absolute error
    (the spread term is dropped, as in :func:`atmorep.train.losses.crps_fair`).

    Args:
        ensemble: members along ``member_dim``, e.g. ``[E, T, P, L, H, W]`` (P lead times).
        truth: the truth at the same coordinates without ``member_dim``, e.g. ``[T, P, L, H, W]``.
        dims: dims averaged; default time, latitude, longitude (``()``: the score at every point).
        member_dim: the ensemble dim.

    Returns:
        The mean score over ``dims``, e.g. ``[P, L]``.
    """
    return _crps(ensemble, truth, dims, member_dim, fair=True)


def crps_ensemble(ensemble: Data, truth: Data, dims: Dims = None, member_dim: str = MEMBER_DIM) -> Data:
    """CRPS of the ensemble's empirical distribution, ``mean_i |x_i - y| - 1/(2 E^2) sum_{i,j} |x_i - x_j|``.

    Higher than :func:`crps_fair` by ``sum_{i,j} |x_i - x_j| / (2 E^2 (E - 1))``, expected
    ``E|X - X'| / (2 E)`` for members drawn from F.
    """
    return _crps(ensemble, truth, dims, member_dim, fair=False)


def spread(ensemble: Data, dims: Dims = None, member_dim: str = MEMBER_DIM) -> Data:
    """Ensemble spread ``sqrt(<var>)``: root of the latitude-weighted mean unbiased variance (E - 1)."""
    _members(ensemble, member_dim, 2, "spread")
    variance = ensemble.var(member_dim, ddof=1, skipna=False)
    return np.sqrt(weighted_mean(variance, reduce_dims(variance, dims)))


def spread_skill_ratio(ensemble: Data, truth: Data, dims: Dims = None, member_dim: str = MEMBER_DIM,
                       corrected: bool = True) -> Data:
    """Spread over the RMSE of the ensemble mean, ``sqrt((E + 1) / E) * spread / rmse``.

    For members and truth drawn independently from one distribution of variance s^2, the ensemble
    mean's expected squared error is ``s^2 (E + 1) / E`` and the unbiased variance's expectation is
    ``s^2``, so the plain ratio tends to ``sqrt(E / (E + 1))``. The finite-ensemble factor
    ``sqrt((E + 1) / E)`` (applied when ``corrected``, the WeatherBench-2 convention) makes a
    calibrated ensemble score 1 for any E; below 1 is under-dispersive, above 1 over-dispersive.
    """
    size = _members(ensemble, member_dim, 2, "spread_skill_ratio")
    ratio = spread(ensemble, dims, member_dim) / rmse(ensemble, truth, dims, member_dim)
    return ratio * np.sqrt((size + 1) / size) if corrected else ratio


def _truth_ranks(members: np.ndarray, truth: np.ndarray, seed: int) -> np.ndarray:
    """Rank 0..E of the truth among the members ``[..., E]``, ties broken uniformly; NaN if undefined."""
    below = (members < truth[..., None]).sum(-1)
    ties = (members == truth[..., None]).sum(-1)
    rank = below + np.random.default_rng(seed).integers(0, ties + 1)
    invalid = np.isnan(truth) | np.isnan(members).any(-1)
    return np.where(invalid, np.nan, rank.astype(np.float64))


def rank_histogram(ensemble: Data, truth: Data, dims: Dims = None, member_dim: str = MEMBER_DIM,
                   seed: int = 0) -> Data:
    """Histogram of the rank of the truth among the E members (Talagrand diagram).

    The rank of ``y`` is the number of members below it, 0..E; ties with members are broken
    uniformly at random (generator seeded with ``seed``, once per dask block). Counts are
    latitude-weighted when latitude is reduced (weights of mean 1, so the counts still sum to the
    number of points); points with a NaN are not counted. A calibrated ensemble gives a flat
    histogram, an under-dispersive one a U, a biased one a slope.

    Returns:
        Counts with a new dim ``rank`` (0..E) in place of ``dims``.
    """
    size = _members(ensemble, member_dim, 1, "rank_histogram")
    _aligned(ensemble.isel({member_dim: 0}, drop=True), truth)
    ranks = xr.apply_ufunc(_truth_ranks, ensemble, truth, kwargs={"seed": seed},
                           input_core_dims=[[member_dim], []], dask="parallelized",
                           output_dtypes=[np.float64], dask_gufunc_kwargs={"allow_rechunk": True})
    labels = xr.DataArray(np.arange(size + 1), dims="rank", coords={"rank": np.arange(size + 1)})
    one_hot = (ranks == labels).astype(np.float64)  # [rank, ...]; NaN ranks match no label
    return weighted_sum(one_hot, reduce_dims(truth, dims))


def _zonal_power(values: np.ndarray) -> np.ndarray:
    """One-sided power per wavenumber of ``[..., W]`` periodic samples, ``[..., W // 2 + 1]``.

    ``P_0 = |c_0|^2``, ``P_k = 2 |c_k|^2`` for ``0 < k < W / 2`` and ``P_{W/2} = |c_{W/2}|^2`` with
    ``c = rfft(x) / W``, so that ``sum_k P_k = mean(x^2)`` (Parseval).
    """
    size = values.shape[-1]
    power = np.abs(np.fft.rfft(values, axis=-1) / size) ** 2  # [..., W // 2 + 1]
    power[..., 1:(size + 1) // 2] *= 2.0
    return power


def power_spectrum(field: Data, dim: str = "longitude", dims: Dims = None) -> Data:
    """Zonal power spectrum per wavenumber, averaged latitude-weighted over ``dims``.

    Each row along ``dim`` is taken as one period of a periodic signal (a full circle of latitude
    on an equally spaced grid); ``P_k`` is the power of zonal wavenumber ``k`` (cycles per circle).
    ``sum_k P_k`` is the mean square and ``sum_{k >= 1} P_k`` the zonal variance (Parseval), both
    averaged over ``dims``. A blurry forecast has less power than the truth at high wavenumbers.

    Args:
        field: data with dim ``dim``.
        dim: the periodic dim transformed.
        dims: dims averaged after the transform; default time, latitude and member where present.

    Returns:
        The spectrum with dim ``wavenumber`` (0..W // 2) in place of ``dim``.
    """
    if dim not in field.dims:
        raise DataError(f"power_spectrum needs dim '{dim}', got dims {list(field.dims)}")
    size = field.sizes[dim]
    power = xr.apply_ufunc(_zonal_power, field, input_core_dims=[[dim]], output_core_dims=[["wavenumber"]],
                           dask="parallelized", output_dtypes=[np.float64],
                           dask_gufunc_kwargs={"output_sizes": {"wavenumber": size // 2 + 1},
                                               "allow_rechunk": True})
    power = power.assign_coords(wavenumber=np.arange(size // 2 + 1))
    if dims is None:
        dims = tuple(d for d in ("time", "latitude", MEMBER_DIM) if d in power.dims)
    return weighted_mean(power, dims)


def _squared_steps(error: xr.DataArray, dim: str, seams: Sequence[int], periodic: bool,
                   mask: xr.DataArray | None) -> tuple[xr.DataArray, ...]:
    """Sums and counts of squared differences of ``error`` between neighbours along ``dim``: across the
    seams (a seam ``i`` lies between indices ``i - 1`` and ``i``) and elsewhere."""
    size = error.sizes[dim]
    after = np.arange(1, size + 1 if periodic else size)  # the second point of each pair
    before = (after - 1) % size
    after = after % size
    step = error.isel({dim: after}).variable - error.isel({dim: before}).variable
    step = xr.DataArray(step, dims=error.dims).rename({dim: "pair"})
    valid = xr.ones_like(step, dtype=bool)
    if mask is not None:
        both = mask.isel({dim: after}).variable & mask.isel({dim: before}).variable
        valid = xr.DataArray(both, dims=mask.dims).rename({dim: "pair"}).broadcast_like(step)
    across = xr.DataArray(np.isin(after, np.asarray(seams) % size), dims="pair")
    squared = (step**2).where(valid, 0.0)
    counts = valid.astype(np.float64)
    plane = [d for d in step.dims if d == "pair" or d in SPATIAL_DIMS]  # sum over the pairs of the grid
    return tuple(value.where(side, 0.0).sum(plane)
                 for side in (across, ~across) for value in (squared, counts))


def blockiness(forecast: Data, truth: Data, seams: dict[str, Sequence[int]], periodic: bool = False,
               mask: xr.DataArray | None = None, dims: Dims = None,
               member_dim: str = MEMBER_DIM) -> Data:
    """How much the ensemble mean's error jumps across seams (token and tile boundaries) against elsewhere.

    ``mean((e_i - e_{i-1})^2 over neighbour pairs across a seam) / mean(... over the other pairs)`` of the
    error ``e = mean - truth``, pooled over latitude and longitude pairs and over ``dims`` (default
    ``time``): 1.0 for an error without seams, above 1 where blocks show. Unweighted means.

    Args:
        forecast: with or without ``member_dim``.
        truth: at the forecast's coordinates.
        seams: per spatial dim (``latitude``, ``longitude``), the indices ``i`` of the seams between
            points ``i - 1`` and ``i``.
        periodic: longitude wraps around (a global grid): the pair (last, first) is a neighbour pair.
        mask: only pairs of two points inside the mask count (masked tasks).
    """
    _aligned(forecast, truth)
    error = ensemble_mean(forecast, member_dim) - truth
    reduced = tuple(d for d in reduce_dims(error, dims) if d not in SPATIAL_DIMS)
    parts = [_squared_steps(error, dim, seams.get(dim, ()), periodic and dim == "longitude", mask)
             for dim in SPATIAL_DIMS]
    across, n_across, inside, n_inside = (sum(part[k] for part in parts).sum(reduced) for k in range(4))
    # across / n_across is the mean across the seams, inside / n_inside the mean elsewhere
    ratio = (across / n_across) / (inside / n_inside)
    return ratio.assign_coords({d: error[d] for d in ratio.dims if d in error.coords})


def truth_at_valid_times(truth: Data, forecast: xr.DataArray | xr.Dataset) -> Data:
    """The truth at the forecast's valid times ``time + prediction_timedelta``, in its layout.

    Args:
        truth: data with dim ``time`` (valid times), e.g. a prepared store.
        forecast: a forecast with dims ``time`` (initialisation) and ``prediction_timedelta``.

    Returns:
        The truth with dims ``time``, ``prediction_timedelta`` in place of its ``time`` and a
        coordinate ``valid_time``; levels, latitudes and longitudes as in ``truth``.
    """
    valid = valid_times(forecast)
    available = np.asarray(truth["time"].values)
    missing = np.setdiff1d(np.asarray(valid.values).ravel(), available)
    if missing.size:
        raise DataError(f"truth has no data at {missing.size} forecast valid times, e.g. {missing[:3]}")
    return truth.rename(time="valid_time").sel(valid_time=valid)
