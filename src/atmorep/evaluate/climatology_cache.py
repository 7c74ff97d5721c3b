"""The climatology a scoring needs: only at the days of year and hours of its valid times, cached.

A climatology source is either a climatology store (dims ``dayofyear`` or ``month``, and ``hour``),
used as it is, or a training store, whose climatology by day of year and hour
(:func:`atmorep.evaluate.climatology.climatology_from`) is computed here. The training store is
restricted, before any reduction, to the days of year of the valid times (widened by half the
smoothing window) and their hours, and only those steps are read, in dask chunks of about
:data:`CHUNK_BYTES`. A longer training store thus costs more only through the days it holds for
the needed dates.

With a cache directory (e.g. ``<output>/climatology``) the restricted climatology of each field is
written there as one small zarr store, ``<field>.zarr``, with the source and the window as
attributes, and reused by later calls on the same grid whose dates it covers; a call that needs
other dates computes the union of both and replaces the cached store.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from atmorep.errors import DataError
from atmorep.evaluate.climatology import DAYS_IN_YEAR, climatology_at, climatology_from, valid_times
from atmorep.evaluate.truth import SPATIAL, LazyStore
from atmorep.io import atomic_directory

logger = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 2**20  # dask chunk size of the training data read for a climatology


def _needed(like: xr.DataArray) -> tuple[set[int], set[int]]:
    """The days of year and hours of the valid times of ``like`` (dims time, prediction_timedelta)."""
    valid = pd.DatetimeIndex(np.asarray(valid_times(like).values).ravel())  # [I * P]
    return set(valid.day_of_year.tolist()), set(valid.hour.tolist())


def _restricted(climatology: xr.DataArray, days: set[int], hours: set[int]) -> xr.DataArray:
    """``climatology`` at the wanted days of year and hours that it holds (lazy where it was)."""
    wanted = {"dayofyear": days, "hour": hours}
    return climatology.sel({key: sorted(values & set(climatology[key].values.tolist()))
                            for key, values in wanted.items() if key in climatology.dims})


def _from_training(store: LazyStore, field: str, like: xr.DataArray, days: set[int], hours: set[int],
                   window_days: int) -> xr.DataArray:
    """The climatology of a training store at ``days`` and ``hours``, reading only the times it needs."""
    half = window_days // 2
    reach = {(day - 1 + shift) % DAYS_IN_YEAR + 1 for day in days for shift in range(-half, half + 1)}
    time = store.time
    keep = np.flatnonzero(np.isin(time.day_of_year, sorted(reach)) & np.isin(time.hour, sorted(hours)))
    if keep.size == 0:
        raise DataError(f"climatology source '{store.path}' has no data on the days of year and hours of "
                        f"the valid times (hours {sorted(hours)})")
    data = store.variable(field, like).isel(time=keep)  # lazy: only these steps are read
    step_bytes = data.dtype.itemsize * int(np.prod(data.shape[1:]))
    data = data.chunk({"time": max(1, CHUNK_BYTES // step_bytes)})
    logger.info("climatology of '%s' from %d steps of '%s'", field, keep.size, store.path)
    return _restricted(climatology_from(data, window_days=window_days), days, hours).compute()


def _identity(path: str | Path) -> str:
    return str(Path(path).resolve()) if Path(path).exists() else str(path)


def _cached(cache: Path, field: str, source: str, window_days: int,
            like: xr.DataArray) -> xr.DataArray | None:
    """The cached climatology of ``field`` if it was made from ``source`` on ``like``'s grid, else None."""
    path = cache / f"{field}.zarr"
    if not path.exists():
        return None
    try:
        stored = LazyStore(path, "climatology cache").dataset
    except DataError as error:
        logger.warning("%s: computing the climatology again", error)
        return None
    same_grid = field in stored and all(
        stored[d].shape == like[d].shape and np.allclose(stored[d].values, like[d].values, atol=1e-6)
        for d in ("level", *SPATIAL) if d in like.dims)
    attrs = stored.attrs
    if not same_grid or attrs.get("source") != _identity(source) or attrs.get("window_days") != window_days:
        logger.info("climatology cache '%s' was made for other data: computing it again", path)
        return None
    return stored[field]


def _write_cache(climatology: xr.DataArray, path: Path, source: str, window_days: int) -> None:
    dataset = climatology.to_dataset().drop_encoding()
    dataset.attrs = {"source": _identity(source), "window_days": window_days}
    with atomic_directory(path, overwrite=True) as tmp:
        dataset.to_zarr(tmp, mode="w", consolidated=False)
    logger.info("climatology cached in '%s'", path)


def _climatology(store: LazyStore, field: str, like: xr.DataArray, window_days: int,
                 cache: Path | None) -> xr.DataArray:
    """The climatology of ``field`` at the days of year and hours of ``like``'s valid times, loaded."""
    days, hours = _needed(like)
    if store.is_climatology:
        return _restricted(store.variable(field, like), days, hours).compute()
    cached = None if cache is None else _cached(cache, field, store.path, window_days, like)
    if cached is not None:
        cached_days, cached_hours = (set(cached[key].values.tolist()) for key in ("dayofyear", "hour"))
        if days <= cached_days and hours <= cached_hours:
            return _restricted(cached, days, hours).compute()
        days, hours = days | cached_days, hours | cached_hours  # the cache grows to cover both
    climatology = _from_training(store, field, like, days, hours, window_days)
    if cache is not None:
        _write_cache(climatology, cache / f"{field}.zarr", store.path, window_days)
    return climatology


def climatologies(source: str | Path, models: dict[str, xr.DataArray], window_days: int = 1,
                  cache: str | Path | None = None) -> dict[str, xr.DataArray]:
    """Per field, the climatology at the days of year and hours of the valid times of its cases.

    Args:
        source: a training store or a climatology store (dims ``dayofyear`` or ``month``, and ``hour``).
        models: per field the predicted cases, dims ``(time, prediction_timedelta, ..., [level],
            latitude, longitude)``; the climatology comes on their levels and grid.
        window_days: odd width of the running mean over the day of year (training stores only).
        cache: a directory keeping one zarr store per field, reused by later calls.

    Returns:
        Per field a loaded climatology ``(dayofyear|month, hour, [L], H, W)`` holding at least the
        needed days (or months) and hours.

    Raises:
        DataError: the source cannot be opened, lacks a field, level or grid point, or holds no
            data on the needed days and hours.
    """
    store = LazyStore(source, "climatology source")
    cache = None if cache is None else Path(cache)
    return {field: _climatology(store, field, model, window_days, cache) for field, model in models.items()}


def at_cases(climatology: xr.DataArray, truth: xr.DataArray) -> xr.DataArray:
    """The climatology at the valid times of ``truth``, in its layout and dask blocks (one per case).

    Args:
        climatology: from :func:`climatologies`, dims ``(dayofyear|month, hour, [L], H, W)``.
        truth: the cases, dims ``(time, prediction_timedelta, [L], H, W)``, dask-backed.

    Returns:
        Lazy, with the dims, coordinates, chunks and dtype of ``truth``.
    """
    def lookup(block: xr.DataArray) -> xr.DataArray:
        valid = valid_times(block)  # (time, prediction_timedelta)
        return climatology_at(climatology, valid).transpose(*block.dims).astype(block.dtype)

    return xr.map_blocks(lookup, truth, template=truth)
