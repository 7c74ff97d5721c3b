"""Lazy reads of the truth (and training) stores: only the steps and points that the cases need.

:class:`LazyStore` opens a prepared zarr store without dask, so that nothing but its coordinates is
read when it is opened and every selection stays a lazy index into the store. The times the cases
need (valid times, and the reference times and interpolation end points of the baselines) are looked
up in its time axis (:meth:`LazyStore.positions`), the prediction's levels and grid points in its
coordinates (:meth:`LazyStore.variable`; a regional grid may wrap past 360 degrees east), and each
needed step is read once (:meth:`LazyStore.read_once`), however many cases share it; the cases are
then selected from those steps, one dask chunk per case (:func:`select_cases`). A truth store ten
times longer therefore costs the same.

:func:`open_store` is the one place where the evaluation opens a zarr store: a store that is missing
or not readable raises a :class:`atmorep.errors.DataError` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from atmorep.data.sources import ZarrSource, open_raw
from atmorep.errors import DataError
from atmorep.evaluate.climatology import is_climatology
from atmorep.evaluate.metrics import SPATIAL_DIMS as SPATIAL


def open_store(path: str | Path, what: str, **kwargs) -> xr.Dataset:
    """The zarr store at ``path``, consolidated metadata or not.

    Args:
        path: the store.
        what: its role, for messages (e.g. ``"truth store"``).
        **kwargs: passed to :func:`xarray.open_dataset` (e.g. ``chunks={}`` for dask arrays in the
            store's chunks, ``chunks=None`` for lazy indexing without dask).

    Raises:
        DataError: the store is missing or cannot be read.
    """
    kwargs.setdefault("chunks", None)  # xarray's default: lazy indexing without dask
    try:
        return open_raw(ZarrSource(), str(path), consolidated=None, **kwargs)
    except DataError as error:  # names the path and the library's error
        raise DataError(f"cannot open {what} '{path}': {str(error).removeprefix(f'{path}: ')}") from None


class LazyStore:
    """A zarr store opened without dask: selections stay lazy and read only what they index.

    Attributes:
        path: the store, as given.
        what: its role, for messages.
        dataset: its gridded variables (those with dims latitude and longitude).
        is_climatology: whether it holds a climatology (dims ``dayofyear`` or ``month``, and ``hour``).
    """

    def __init__(self, path: str | Path, what: str):
        self.path, self.what = str(path), what
        dataset = open_store(path, what, chunks=None, cache=False)
        self.dataset = dataset[[n for n, v in dataset.data_vars.items() if set(SPATIAL) <= set(v.dims)]]
        self.is_climatology = is_climatology(self.dataset)

    @cached_property
    def time(self) -> pd.DatetimeIndex:
        """The store's time axis ``[T]`` (nanoseconds)."""
        if "time" not in self.dataset.dims:
            raise DataError(f"{self.what} '{self.path}' has no dim 'time' (dims {list(self.dataset.dims)})")
        return pd.DatetimeIndex(self.dataset["time"].values).as_unit("ns")

    def holds(self, times: np.ndarray) -> bool:
        """Whether the store has data at every one of ``times``."""
        wanted = pd.DatetimeIndex(np.asarray(times).ravel()).as_unit("ns")
        return bool((self.time.get_indexer(wanted) >= 0).all())

    def positions(self, times: np.ndarray, what: str) -> np.ndarray:
        """Indices of ``times`` along the store's time axis; DataError naming the first missing one."""
        times = pd.DatetimeIndex(np.asarray(times).ravel()).as_unit("ns")
        index = self.time.get_indexer(times)
        if (index < 0).any():
            missing = times[index < 0]
            raise DataError(f"{self.what} '{self.path}' has no data at {what} {missing[0]} "
                            f"({missing.size} of {times.size} missing)")
        return index

    def variable(self, field: str, like: xr.DataArray) -> xr.DataArray:
        """``field`` on ``like``'s levels, latitudes and longitudes (lazy), with ``like``'s coordinates."""
        if field not in self.dataset:
            raise DataError(f"{self.what} '{self.path}' has no field '{field}' "
                            f"(available: {list(self.dataset.data_vars)})")
        data = self.dataset[field]
        if "member" in data.dims:
            raise DataError(f"{self.what} '{self.path}' holds an ensemble (dim 'member' of '{field}'); "
                            f"prepare the truth with one member")
        if ("level" in data.dims) != ("level" in like.dims):
            raise DataError(f"{self.what} '{self.path}': field '{field}' has dims {list(data.dims)}, but "
                            f"the prediction's has {'' if 'level' in like.dims else 'no '}level")
        dims = [d for d in ("level", *SPATIAL) if d in like.dims]
        indexers = {d: self._match(data[d].values, like[d].values, d) for d in dims}
        return data.isel(indexers).assign_coords({d: like[d].values for d in dims})

    def _match(self, available: np.ndarray, wanted: np.ndarray, name: str) -> np.ndarray:
        return match_coordinates(available, wanted, name, f"{self.what} '{self.path}'",
                                 "(its grid must be a subset of the store's)")

    def read(self, field: str, times: np.ndarray, like: xr.DataArray, what: str,
             chunk: int = 1) -> xr.DataArray:
        """``field`` at ``times`` on ``like``'s grid, ``(time, [level], latitude, longitude)``, dask."""
        return self.variable(field, like).isel(time=self.positions(times, what)).chunk({"time": chunk})

    def read_once(self, field: str, times: Mapping[str, np.ndarray], like: xr.DataArray,
                  chunk: int = 1) -> xr.DataArray:
        """``field`` at every time of ``times``, each step read once, on ``like``'s grid.

        Args:
            field: the field.
            times: the times wanted, by their role for messages (e.g. ``"valid time"``); the roles
                are checked in order, so the first missing time is named with its role.
            like: gives the levels, latitudes and longitudes.
            chunk: steps per dask chunk.

        Returns:
            ``(time, [level], latitude, longitude)`` at the sorted unique times, dask.
        """
        for what, wanted in times.items():
            self.positions(wanted, what)
        unique = np.unique(np.concatenate([np.asarray(t).ravel().astype("datetime64[ns]")
                                           for t in times.values()]))
        return self.read(field, unique, like, "time", chunk).assign_coords(time=unique)

    def cases(self, field: str, like: xr.DataArray) -> xr.DataArray:
        """``field`` at the valid times of ``like`` (dims time, prediction_timedelta), one chunk per case."""
        known = self.read_once(field, {"valid time": case_valid_times(like)}, like,
                               chunk=like.sizes["prediction_timedelta"])
        return select_cases(known, like)


def case_valid_times(like: xr.DataArray) -> np.ndarray:
    """``time + prediction_timedelta`` of ``like``'s cases, ``[I, P]``."""
    return like["time"].values[:, None] + like["prediction_timedelta"].values[None, :]


def select_cases(known: xr.DataArray, like: xr.DataArray) -> xr.DataArray:
    """The cases of ``like`` selected from the steps in ``known``, one dask chunk per case.

    Args:
        known: ``(time, [level], latitude, longitude)``, dask, holding every valid time of ``like``.
        like: the cases, dims ``time`` and ``prediction_timedelta``.

    Returns:
        ``(time, prediction_timedelta, [level], latitude, longitude)`` with ``like``'s time coordinates.
    """
    times, leads = like["time"].values, like["prediction_timedelta"].values
    index = np.searchsorted(known["time"].values, case_valid_times(like).ravel())  # [I * P], by case
    flat = known.data[index].rechunk({0: leads.size})  # (I * P, [L], H, W), a chunk per case
    values = flat.reshape(times.size, leads.size, *flat.shape[1:])  # [I * P, ...] -> [I, P, ...]
    rest = known.dims[1:]  # [level], latitude, longitude
    coords = {"time": times, "prediction_timedelta": leads, **{d: known[d] for d in rest}}
    return xr.DataArray(values, dims=("time", "prediction_timedelta", *rest), coords=coords,
                        name=known.name, attrs=known.attrs)


def match_coordinates(available: np.ndarray, wanted: np.ndarray, dim: str, what: str,
                      hint: str = "") -> np.ndarray:
    """Indices into ``available`` of the ``wanted`` values of coordinate ``dim`` (to 1e-6; longitudes
    modulo 360); a DataError naming ``what`` and the first values it lacks, else."""
    difference = wanted[:, None] - available[None, :]  # [wanted, available]
    if dim == "longitude":
        difference = (difference + 180.0) % 360.0 - 180.0
    hit = np.isclose(difference, 0.0, atol=1e-6, rtol=0.0)
    found = hit.any(axis=1)
    if not found.all():
        raise DataError(f"{what} has no {dim} {wanted[~found][:3].tolist()} of the prediction"
                        + (f" {hint}" if hint else ""))
    return hit.argmax(axis=1)
