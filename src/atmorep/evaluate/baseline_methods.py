"""Reference forecasts, interpolations and downscalings that a model must beat.

Forecast baselines are returned in the WeatherBench-2 layout, dims ``(time, prediction_timedelta, ...)``
with ``time`` the initialisation, so they are scored with :mod:`atmorep.evaluate.metrics` exactly as
a model's forecast. Every function takes DataArrays or Datasets in the internal convention (dims
``time, level, latitude, longitude``, latitude ascending, longitude 0..360) and stays lazy on dask
data.

- :func:`persistence`: the state at initialisation, held for every lead time.
- :func:`climatology_forecast`: the climatology at each valid time.
- :func:`coarsen` and :func:`upsample`: block-mean coarsening, and bilinear or bicubic
  interpolation back to a finer grid, periodic in longitude (downscaling), with the weight matrices
  of :func:`atmorep.numerics.interpolation.spline_weights`.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import numpy as np
import pandas as pd
import xarray as xr

from atmorep.errors import DataError
from atmorep.evaluate.climatology import as_times, climatology_at, select_variables_like
from atmorep.numerics.interpolation import spline_weights

Data = TypeVar("Data", xr.DataArray, xr.Dataset)
Method = Literal["bilinear", "bicubic"]
SPLINE_ORDER: dict[str, int] = {"bilinear": 1, "bicubic": 3}


def as_lead_times(lead_times: object) -> np.ndarray:
    """``lead_times`` (timedeltas or strings such as ``"6h"``) as a 1-D ``timedelta64`` array."""
    values = lead_times.values if isinstance(lead_times, xr.DataArray) else lead_times
    values = np.atleast_1d(np.asarray(values))
    if values.dtype.kind in "biuf":
        raise DataError(f"lead_times must be timedeltas (e.g. np.timedelta64(6, 'h') or '6h'), "
                        f"got numbers of dtype {values.dtype}")
    try:
        return pd.to_timedelta(values.ravel()).to_numpy()
    except (ValueError, TypeError) as error:
        raise DataError(f"lead_times must be timedeltas: {error}") from None


def _select_times(truth: Data, times: np.ndarray, name: str) -> Data:
    """``truth`` at ``times``, with a DataError naming the missing ones."""
    if "time" not in truth.dims:
        raise DataError(f"truth needs a dim 'time' for {name}, got dims {list(truth.dims)}")
    missing = np.setdiff1d(times, truth["time"].values)
    if missing.size:
        raise DataError(f"truth has no data at {missing.size} of the {name}, e.g. {missing[:3]}")
    return truth.sel(time=times)


def _in_order(result: Data, like: xr.DataArray | xr.Dataset) -> Data:
    """``result`` with each variable's dims in the order of ``like``'s, new dims first."""
    def order(variable: xr.DataArray, reference: xr.DataArray) -> xr.DataArray:
        new = [d for d in variable.dims if d not in reference.dims]
        return variable.transpose(*new, *[d for d in reference.dims if d in variable.dims])

    if isinstance(result, xr.Dataset):
        return result.map(lambda variable: order(variable, like[variable.name]))
    return order(result, like)


def persistence(truth: Data, init_times: object, lead_times: object) -> Data:
    """The state at each initialisation time, held for every lead time.

    Args:
        truth: data with dim ``time`` holding the initialisation times.
        init_times: initialisation times (datetimes).
        lead_times: lead times (timedeltas).

    Returns:
        Dims ``(time, prediction_timedelta, ...)``; at lead 0 it equals the truth.
    """
    init = as_times(init_times, "init_times").values.ravel()
    state = _select_times(truth, init, "init_times")
    forecast = state.expand_dims(prediction_timedelta=as_lead_times(lead_times))
    return forecast.transpose("time", "prediction_timedelta", ...)


def _match_grid(forecast: Data, like: xr.DataArray | xr.Dataset) -> Data:
    """``forecast`` restricted to ``like``'s variables and levels, on ``like``'s latitudes/longitudes."""
    forecast = select_variables_like(forecast, like)
    if "level" in like.dims and "level" in forecast.dims:
        missing = np.setdiff1d(like["level"].values, forecast["level"].values)
        if missing.size:
            raise DataError(f"climatology has no level {missing.tolist()}")
        forecast = forecast.sel(level=like["level"].values)
    for dim in ("latitude", "longitude"):
        if dim in like.dims and dim in forecast.dims:
            ours, theirs = forecast[dim].values, like[dim].values
            if ours.shape != theirs.shape or not np.allclose(ours, theirs, atol=1e-6):
                raise DataError(f"climatology coordinate '{dim}' differs from the target grid; regrid first")
            forecast = forecast.assign_coords({dim: theirs})
    return forecast


def climatology_forecast(climatology: Data, init_times: object, lead_times: object,
                         like: xr.DataArray | xr.Dataset | None = None) -> Data:
    """The climatology at each valid time ``init + lead``, in the forecast layout.

    Args:
        climatology: from :func:`atmorep.evaluate.climatology.climatology_from`.
        init_times: initialisation times.
        lead_times: lead times.
        like: optional data whose variables, levels and grid (which must match) the result takes.

    Returns:
        Dims ``(time, prediction_timedelta, ...)``.
    """
    init = as_times(init_times, "init_times").values.ravel()
    leads = as_lead_times(lead_times)
    valid = xr.DataArray(init[:, None] + leads[None, :], dims=("time", "prediction_timedelta"),
                         coords={"time": init, "prediction_timedelta": leads})  # [T, lead]
    forecast = climatology_at(climatology, valid)
    if like is not None:
        forecast = _match_grid(forecast, like)
    return forecast.transpose("time", "prediction_timedelta", ...)


def coarsen(field: Data, factor: int) -> Data:
    """Block means of ``factor x factor`` grid points (latitude x longitude), as the model is given a
    coarse field (:func:`atmorep.numerics.coarsening.block_means`).

    Coordinates become the block centres (means of the block's coordinates). The grid sizes must
    be multiples of ``factor``: crop first (e.g. ERA5's 721 latitudes to 720).
    """
    if not isinstance(factor, int | np.integer) or factor < 1:
        raise DataError(f"coarsen factor must be a positive integer, got {factor!r}")
    for dim in ("latitude", "longitude"):
        if dim not in field.dims or field.sizes[dim] % factor:
            size = field.sizes.get(dim, "no")
            raise DataError(f"coarsen needs a dim '{dim}' whose size is a multiple of {factor}, got {size}")
    if isinstance(field, xr.Dataset):
        return field.map(coarsen, args=(factor,))
    return _block_means(field, int(factor))


def _block_means(field: xr.DataArray, factor: int) -> xr.DataArray:
    import torch  # the coarsening is the model's own (numerics.coarsening); evaluation loads torch here only

    from atmorep.numerics.coarsening import block_means

    def means(values: np.ndarray) -> np.ndarray:
        return block_means(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64)), factor,
                           skip_nan=True).numpy()

    grid = ["latitude", "longitude"]
    centres = {d: field[d].values.reshape(-1, factor).mean(axis=1) for d in grid}
    sizes = {d: centres[d].size for d in grid}
    data = field.chunk(dict.fromkeys(grid, -1)) if field.chunks else field
    coarse = xr.apply_ufunc(means, data, input_core_dims=[grid], output_core_dims=[grid],
                            exclude_dims=set(grid), dask="parallelized", output_dtypes=[np.float64],
                            dask_gufunc_kwargs={"output_sizes": sizes})
    coarse = coarse.astype(np.result_type(field.dtype, np.float32)).assign_coords(centres)
    return coarse.transpose(*field.dims).assign_attrs(field.attrs)


def _is_full_circle(longitude: np.ndarray) -> bool:
    """Whether equally spaced longitudes cover the whole circle (spacing x count = 360)."""
    if longitude.size < 2:
        return False
    steps = np.diff(longitude)
    return bool(np.allclose(steps, steps[0]) and np.isclose(steps[0] * longitude.size, 360.0))


def _interpolate_grid(values: np.ndarray, latitude: np.ndarray, longitude: np.ndarray,
                      target_latitude: np.ndarray, target_longitude: np.ndarray,
                      order: int, periodic: bool) -> np.ndarray:
    """Tensor-product spline interpolation ``[..., H, W] -> [..., H', W']`` (:func:`spline_weights`)."""
    columns = spline_weights(longitude, target_longitude, order, periodic)  # [W', W]
    rows = spline_weights(latitude, target_latitude, order)  # [H', H]; not-a-knot ends
    return np.einsum("ih,...hw,jw->...ij", rows, values.astype(np.float64), columns, optimize=True)


def _upsample_array(coarse: xr.DataArray, target_latitude: np.ndarray, target_longitude: np.ndarray,
                    order: int) -> xr.DataArray:
    latitude, longitude = coarse["latitude"].values, coarse["longitude"].values
    for name, axis in (("latitude", latitude), ("longitude", longitude)):
        if axis.size < order + 1 or np.any(np.diff(axis) <= 0):
            raise DataError(f"upsample needs at least {order + 1} strictly increasing values of "
                            f"'{name}' in '{coarse.name}', got {axis.size}")
    kwargs = {"latitude": latitude, "longitude": longitude, "target_latitude": target_latitude,
              "target_longitude": target_longitude, "order": order, "periodic": _is_full_circle(longitude)}
    dtype = np.result_type(coarse.dtype, np.float32)
    fine = xr.apply_ufunc(
        _interpolate_grid, coarse, kwargs=kwargs, input_core_dims=[["latitude", "longitude"]],
        output_core_dims=[["latitude", "longitude"]], exclude_dims={"latitude", "longitude"},
        dask="parallelized", output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"latitude": target_latitude.size,
                                             "longitude": target_longitude.size}, "allow_rechunk": True})
    fine = fine.astype(dtype).assign_coords(latitude=target_latitude, longitude=target_longitude)
    return fine.transpose(*coarse.dims).assign_attrs(coarse.attrs)


def upsample(coarse: Data, target_latitude: object, target_longitude: object,
             method: Method = "bilinear") -> Data:
    """Interpolate a coarse field to a finer latitude-longitude grid.

    Tensor-product splines of order 1 (``"bilinear"``) or 3 (``"bicubic"``). Along longitude the
    field is periodic when the coarse longitudes are equally spaced over the full circle (the
    bicubic spline is then the periodic cubic spline), so points between the last longitude and
    360 interpolate towards the first; target longitudes may be given in any range (-180..180
    too). Along latitude the cubic spline has not-a-knot ends, so it reproduces cubic
    polynomials; targets beyond the first or last coarse latitude (up to half a coarse cell at
    the poles) continue the end pieces. Fields must be free of NaN (a spline spreads them).

    Args:
        coarse: data with dims ``latitude``, ``longitude`` (ascending), e.g. from :func:`coarsen`.
        target_latitude: latitudes of the fine grid, ``[H']``.
        target_longitude: longitudes of the fine grid, ``[W']``.
        method: ``"bilinear"`` or ``"bicubic"``.

    Returns:
        ``coarse``'s layout on the fine grid ``[..., H', W']``.
    """
    if method not in SPLINE_ORDER:
        raise DataError(f"upsample method must be one of {list(SPLINE_ORDER)}, got '{method}'")
    latitude = np.asarray(target_latitude, dtype=np.float64).ravel()
    longitude = np.asarray(target_longitude, dtype=np.float64).ravel()
    for name in ("latitude", "longitude"):
        if name not in coarse.dims:
            raise DataError(f"upsample needs dims latitude and longitude, got {list(coarse.dims)}")
    order = SPLINE_ORDER[method]
    if isinstance(coarse, xr.Dataset):
        return coarse.map(_upsample_array, args=(latitude, longitude, order))
    return _upsample_array(coarse, latitude, longitude, order)
