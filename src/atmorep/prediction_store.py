"""Prediction stores: inference output written case by case, atomically, in the WeatherBench-2 layout.

A prediction store is a zarr v3 group with consolidated metadata and one data variable per predicted
field (ERA5 short name), in physical units::

    field        [I, P, E, L, H, W] float32   (time, prediction_timedelta, member, level, latitude, longitude)
    surface      [I, P, E, H, W]    float32   (no level dimension)
    target_mask  [I, P, H, W]       bool      True where the model predicted (infill, reconstruct)
    valid_time   [I, P]             datetime64[ns] = time + prediction_timedelta

``I`` counts the cases (reference times), ``P`` the predicted steps, ``E`` the members; one chunk per
case and variable. The level axis is the sorted union of the levels of all level fields; a field is NaN
at the levels it does not have. :class:`PredictionWriter` appends one case at a time to a hidden sibling
of the target path and renames it into place only when complete; :func:`open_prediction` opens a store
lazily and checks its layout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

import atmorep
from atmorep.errors import DataError
from atmorep.fields import field_spec
from atmorep.io import atomic_directory
from atmorep.tasks import inference_tasks

log = logging.getLogger(__name__)

LEVEL_KINDS = ("sigma", "pressure", "model", "surface")
MASK = "target_mask"
COORDINATES = ("time", "prediction_timedelta", "valid_time", "member", "level", "latitude", "longitude")
CASE_DIMS = ("time", "prediction_timedelta", "member")
MASK_DIMS = ("time", "prediction_timedelta", "latitude", "longitude")
TIME_UNITS = "seconds since 1970-01-01 00:00:00"
TIMEDELTA_UNITS = "seconds"
_TIME_CHUNK = 1024  # cases per chunk of the small time coordinates (one read opens many cases)

_COORD_ATTRS: dict[str, dict[str, str]] = {
    "time": {"standard_name": "forecast_reference_time", "long_name": "reference time"},
    "prediction_timedelta": {"standard_name": "forecast_period", "long_name": "time after reference time"},
    "valid_time": {"standard_name": "time", "long_name": "valid time"},
    "member": {"standard_name": "realization", "long_name": "ensemble member"},
    "latitude": {"units": "degrees_north", "axis": "Y", "standard_name": "latitude"},
    "longitude": {"units": "degrees_east", "axis": "X", "standard_name": "longitude"},
}
_LEVEL_ATTRS = {
    "sigma": {"units": "1", "long_name": "sigma level (pressure / surface pressure)"},
    "pressure": {"units": "hPa", "long_name": "pressure level"},
    "model": {"units": "1", "long_name": "model level number"},
}


@dataclass(frozen=True)
class PredictionLayout:
    """What a prediction store holds besides its cases: fields, levels, steps, members, grid, attrs.

    Arrays are normalised on construction (``prediction_timedelta`` to timedelta64[ns], ``latitude``
    and ``longitude`` to float64) and checked; a bad layout raises :class:`DataError`.

    Attributes:
        fields: predicted field (ERA5 short name) -> its levels, or None for a surface field.
        level_kind: "sigma", "pressure", "model" or "surface" (only surface fields).
        prediction_timedelta: ``[P]`` strictly increasing offsets of the predicted steps, whole seconds.
        members: ensemble size ``E`` (>= 1).
        latitude: ``[H]`` ascending, degrees north.
        longitude: ``[W]`` in [0, 360), increasing modulo 360 (a regional range may wrap past 360).
        attrs: global attributes, JSON-serialisable; ``task`` is required (a registered inference task).
        with_mask: write ``target_mask``, the points the model predicted.
    """

    fields: dict[str, tuple[float, ...] | None]
    level_kind: str
    prediction_timedelta: np.ndarray
    members: int
    latitude: np.ndarray
    longitude: np.ndarray
    attrs: dict
    with_mask: bool = False

    def __post_init__(self) -> None:
        fields = _checked_fields(self.fields)
        object.__setattr__(self, "fields", fields)
        levelled = any(levels is not None for levels in fields.values())
        if self.level_kind not in LEVEL_KINDS or (levelled and self.level_kind == "surface"):
            allowed = LEVEL_KINDS[:3] if levelled else LEVEL_KINDS
            raise DataError(f"prediction layout: level_kind '{self.level_kind}' is not one of {allowed}")
        object.__setattr__(self, "prediction_timedelta", _checked_timedelta(self.prediction_timedelta))
        members = self.members
        if isinstance(members, bool) or not isinstance(members, int | np.integer) or members < 1:
            raise DataError(f"prediction layout: members must be an integer >= 1, got {self.members!r}")
        latitude, longitude = _checked_grid(self.latitude, self.longitude)
        object.__setattr__(self, "latitude", latitude)
        object.__setattr__(self, "longitude", longitude)
        _check_attrs(self.attrs)

    @property
    def levels(self) -> np.ndarray:
        """``[L]`` float64: the sorted union of the levels of the level fields (empty if none)."""
        union = {level for levels in self.fields.values() if levels is not None for level in levels}
        return np.array(sorted(union), dtype=np.float64)

    def dims(self, name: str) -> tuple[str, ...]:
        """Dimensions of the stored variable of field ``name``."""
        vertical = ("level",) if self.fields[name] is not None else ()
        return (*CASE_DIMS, *vertical, "latitude", "longitude")

    def case_shape(self, name: str) -> tuple[int, ...]:
        """Shape of one case of field ``name`` as passed to :meth:`PredictionWriter.write`.

        ``[P, E, L, H, W]`` for a level field (``L`` its own levels), ``[P, E, H, W]`` for a surface field.
        """
        levels = self.fields[name]
        vertical = (len(levels),) if levels is not None else ()
        grid = (len(self.latitude), len(self.longitude))
        return (len(self.prediction_timedelta), self.members, *vertical, *grid)


def _checked_fields(fields: Mapping[str, Any]) -> dict[str, tuple[float, ...] | None]:
    if not fields:
        raise DataError("prediction layout: no fields")
    checked: dict[str, tuple[float, ...] | None] = {}
    for name, levels in fields.items():
        if not isinstance(name, str) or not name or name in COORDINATES or name == MASK:
            raise DataError(f"prediction layout: field name {name!r} is empty or a reserved name")
        if levels is None:
            checked[name] = None
            continue
        values = tuple(float(level) for level in levels)
        if not values or len(set(values)) != len(values) or not np.all(np.isfinite(values)):
            raise DataError(f"prediction layout: levels of field '{name}' must be distinct finite numbers "
                            f"(None for a surface field), got {values}")
        checked[name] = values
    return checked


def _checked_timedelta(offsets: Any) -> np.ndarray:
    offsets = np.asarray(offsets)
    if offsets.ndim != 1 or not offsets.size or not np.issubdtype(offsets.dtype, np.timedelta64):
        raise DataError(f"prediction layout: prediction_timedelta must be a non-empty 1-d timedelta64 array, "
                        f"got {offsets.dtype} of shape {offsets.shape}")
    offsets = offsets.astype("timedelta64[ns]")
    if np.isnat(offsets).any() or np.any(np.diff(offsets) <= np.timedelta64(0)):
        raise DataError(f"prediction layout: prediction_timedelta must be strictly increasing, got {offsets}")
    if np.any(offsets.astype("timedelta64[s]") != offsets):
        raise DataError(f"prediction layout: prediction_timedelta must be whole seconds, got {offsets}")
    return offsets


def _checked_grid(latitude: Any, longitude: Any) -> tuple[np.ndarray, np.ndarray]:
    latitude = np.asarray(latitude, dtype=np.float64)
    longitude = np.asarray(longitude, dtype=np.float64)
    if (latitude.ndim != 1 or not latitude.size or np.any(np.diff(latitude) <= 0)
            or np.abs(latitude).max() > 90):
        raise DataError("prediction layout: latitude must be a non-empty ascending 1-d array in [-90, 90]")
    steps = np.diff(longitude) % 360.0
    if (longitude.ndim != 1 or not longitude.size or np.any(longitude < 0) or np.any(longitude >= 360)
            or np.any(steps == 0) or steps.sum() >= 360.0):
        raise DataError("prediction layout: longitude must be a non-empty 1-d array in [0, 360), "
                        "increasing modulo 360 and spanning less than a full circle")
    return latitude, longitude


def _check_attrs(attrs: Mapping[str, Any]) -> None:
    try:
        json.dumps(attrs)
    except (TypeError, ValueError) as error:
        raise DataError(f"prediction layout: attrs must be JSON-serialisable ({error})") from error
    if attrs.get("task") not in inference_tasks():
        raise DataError(f"prediction layout: attrs 'task' is {attrs.get('task')!r}, expected one of "
                        f"{inference_tasks()}")


class PredictionWriter:
    """Write a prediction store one case at a time; the store appears only when complete.

    Example::

        with PredictionWriter(out, layout) as writer:
            for time, values in cases:
                writer.write(time, values)

    Args:
        path: the store to write.
        layout: fields, steps, members, grid and global attributes of the store.
        overwrite: replace an existing store at ``path`` (only once the new one is complete).

    Attributes:
        cases: the number of cases written so far.

    Raises:
        DataError: ``path`` exists and ``overwrite`` is False.
    """

    def __init__(self, path: str | Path, layout: PredictionLayout, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.layout = layout
        self.overwrite = overwrite
        self._refuse_existing()
        levels = layout.levels
        self._level_index = {name: np.searchsorted(levels, own)
                             for name, own in layout.fields.items() if own is not None}
        self._on_union_levels = {name for name, index in self._level_index.items()
                                 if np.array_equal(index, np.arange(len(levels)))}  # own levels == union
        self._attrs = _global_attrs(layout)
        self._context: contextlib.AbstractContextManager[Path] | None = None
        self._tmp: Path | None = None
        self._last_time: np.datetime64 | None = None
        self.cases = 0

    def _refuse_existing(self) -> None:
        if self.path.exists() and not self.overwrite:
            raise DataError(f"output store '{self.path}' already exists "
                            "(--overwrite or overwrite=True replaces it)")

    def __enter__(self) -> PredictionWriter:
        if self._context is not None:
            raise RuntimeError(f"PredictionWriter for '{self.path}' is already open")
        self._refuse_existing()
        self._context = atomic_directory(self.path, overwrite=self.overwrite)
        self._tmp = self._context.__enter__()
        return self

    def write(self, time: np.datetime64, values: Mapping[str, np.ndarray],
              mask: np.ndarray | None = None) -> None:
        """Append one case.

        Args:
            time: reference time of the case (whole seconds), later than the previous case's.
            values: field -> ``[P, E, L, H, W]`` for a level field (its own levels, in the layout's
                order) or ``[P, E, H, W]`` for a surface field; finite, cast to float32.
            mask: ``[P, H, W]`` bool, True where the model predicted; required iff ``layout.with_mask``.

        Raises:
            DataError: a field is missing, unknown, of the wrong shape or not finite; the mask is
                missing, unexpected or of the wrong shape or dtype; the time is not after the last one.
        """
        if self._tmp is None:
            raise RuntimeError(f"PredictionWriter for '{self.path}' is used outside its with block")
        time = self._checked_time(time)
        case = self._case(time, values, mask)
        if self.cases == 0:
            case.to_zarr(self._tmp, mode="w", encoding=_encoding(case), zarr_format=3, consolidated=False)
        else:
            case.to_zarr(self._tmp, append_dim="time", consolidated=False)
        self.cases += 1
        self._last_time = time

    def __exit__(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> None:
        context, tmp = self._context, self._tmp
        self._context = self._tmp = None
        if context is None or tmp is None:
            return
        if exc is None:
            try:
                if self.cases == 0:
                    raise DataError(f"output store '{self.path}': no case written; nothing stored")
                self._finalise(tmp)
            except BaseException as error:
                context.__exit__(type(error), error, error.__traceback__)  # removes the temporary store
                raise
        context.__exit__(exc_type, exc, traceback)
        if exc is None:
            log.info("%s: wrote %d cases", self.path, self.cases)

    def _checked_time(self, time: Any) -> np.datetime64:
        try:
            checked = np.datetime64(time, "ns")
        except (TypeError, ValueError) as error:
            raise DataError(f"{self.path}: case time {time!r} is not a datetime64") from error
        if np.isnat(checked) or checked.astype("datetime64[s]") != checked:
            raise DataError(f"{self.path}: case time {time!r} must be a valid time in whole seconds")
        if self._last_time is not None and checked <= self._last_time:
            raise DataError(f"{self.path}: case time {checked} is not after the previous case's "
                            f"{self._last_time}; write times in strictly increasing order")
        return checked

    def _case(self, time: np.datetime64, values: Mapping[str, np.ndarray],
              mask: np.ndarray | None) -> xr.Dataset:
        """One case as a dataset with a time dimension of size 1 (everything checked first)."""
        layout = self.layout
        missing = [name for name in layout.fields if name not in values]
        unknown = [str(name) for name in values if name not in layout.fields]
        if missing or unknown:
            raise DataError(f"{self.path}: case {time}: fields missing {missing}, not in the layout "
                            f"{unknown}; expected {list(layout.fields)}")
        variables = {name: (layout.dims(name), self._field(name, values[name])[None],
                                _field_attrs(name, layout.attrs.get("transforms")))
                     for name in layout.fields}  # [P, E, (L,) H, W] -> [1, P, E, (L,) H, W]
        checked_mask = self._checked_mask(mask)
        if checked_mask is not None:
            variables[MASK] = (MASK_DIMS, checked_mask[None], _MASK_ATTRS)  # [P, H, W] -> [1, P, H, W]
        return xr.Dataset(variables, coords=self._coords(time), attrs=self._attrs)

    def _field(self, name: str, value: np.ndarray) -> np.ndarray:
        """One field's case ``[P, E, (L_own,) H, W]`` checked, as float32 on the union level axis."""
        array = np.asarray(value)
        expected = self.layout.case_shape(name)
        if array.shape != expected or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
            raise DataError(f"{self.path}: field '{name}' has shape {array.shape} and dtype {array.dtype}, "
                            f"expected real numbers of shape {expected}")
        array = array.astype(np.float32, copy=False)
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise DataError(f"{self.path}: field '{name}' holds {bad} NaN or infinite values; "
                            "a prediction must be finite")
        if name not in self._level_index or name in self._on_union_levels:
            return array
        union = np.full((*expected[:2], len(self.layout.levels), *expected[3:]), np.nan, np.float32)
        union[:, :, self._level_index[name]] = array  # [P, E, L_own, H, W] -> [P, E, L, H, W]
        return union

    def _checked_mask(self, mask: np.ndarray | None) -> np.ndarray | None:
        layout = self.layout
        if (mask is None) == layout.with_mask:
            state = "without" if mask is None else "with"
            raise DataError(f"{self.path}: '{MASK}' given {state} a mask while the layout's with_mask "
                            f"is {layout.with_mask}")
        if mask is None:
            return None
        array = np.asarray(mask)
        expected = (len(layout.prediction_timedelta), len(layout.latitude), len(layout.longitude))
        if array.shape != expected or array.dtype != np.bool_:
            raise DataError(f"{self.path}: '{MASK}' has shape {array.shape} and dtype {array.dtype}, "
                            f"expected bool of shape {expected}")
        return array

    def _coords(self, time: np.datetime64) -> dict[str, tuple]:
        layout = self.layout
        times = np.array([time], dtype="datetime64[ns]")
        offsets = layout.prediction_timedelta
        members = np.arange(layout.members, dtype=np.int64)
        values = {"time": times, "prediction_timedelta": offsets, "member": members,
                  "latitude": layout.latitude, "longitude": layout.longitude}
        coords: dict[str, tuple] = {name: (name, value, _COORD_ATTRS[name]) for name, value in values.items()}
        coords["valid_time"] = (("time", "prediction_timedelta"), times[:, None] + offsets[None],
                                _COORD_ATTRS["valid_time"])  # [1, P]
        if self._level_index:
            attrs = {**_LEVEL_ATTRS[layout.level_kind], "level_kind": layout.level_kind, "axis": "Z",
                     "positive": "down"}
            coords["level"] = ("level", layout.levels, attrs)
        return coords

    def _finalise(self, tmp: Path) -> None:
        """Consolidate the metadata of the complete temporary store."""
        import zarr

        with warnings.catch_warnings():  # consolidated metadata is not yet part of the zarr v3 specification
            warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
            zarr.consolidate_metadata(tmp)


_MASK_ATTRS = {"long_name": "points predicted by the model", "units": "1"}


def _encoding(case: xr.Dataset) -> dict[str, dict[str, Any]]:
    """Explicit encodings of a first case: exact integer times, one chunk per case and variable."""
    times = {"units": TIME_UNITS, "calendar": "proleptic_gregorian", "dtype": "int64"}
    encoding: dict[str, dict[str, Any]] = {
        "time": {**times, "chunks": (_TIME_CHUNK,)},
        "valid_time": {**times, "chunks": (_TIME_CHUNK, case.sizes["prediction_timedelta"])},
        "prediction_timedelta": {"units": TIMEDELTA_UNITS, "dtype": "int64"},
    }
    for name, variable in case.data_vars.items():
        encoding[str(name)] = {"chunks": variable.shape}  # time has size 1: one chunk per case
    return encoding


def _field_attrs(name: str, transforms: str | None = None) -> dict[str, Any]:
    """CF attributes of a predicted field; a transformed field (``transforms``: JSON of
    :meth:`atmorep.data.store.Store.transform` per field) says so, as its store does."""
    spec = field_spec(name)
    attrs: dict[str, Any] = {"units": spec.units, "long_name": spec.long_name,
                             "standard_name": spec.standard_name}
    transform = json.loads(transforms).get(name) if transforms else None
    return attrs | {"units": "1", **transform} if transform else attrs


def _global_attrs(layout: PredictionLayout) -> dict[str, Any]:
    """The layout's attrs with the CF conventions, source, title and history filled in."""
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "title": f"atmorep {layout.attrs['task']} prediction",
        "history": f"{created}: written by atmorep {atmorep.__version__}",
        **layout.attrs,
        "Conventions": "CF-1.8",
        "source": f"atmorep {atmorep.__version__}",
    }


def open_prediction(path: str | Path) -> xr.Dataset:
    """Open a prediction store lazily (dask arrays, one chunk per case) and check its layout.

    Args:
        path: a store written by :class:`PredictionWriter` (or any store in the same layout).

    Returns:
        The dataset: fields ``[I, P, E, (L,) H, W]``, optional ``target_mask`` ``[I, P, H, W]``.

    Raises:
        DataError: ``path`` is not a zarr store, or the store lacks a dimension, coordinate or data
            variable of the layout, or its ``task`` attribute is unknown.
    """
    try:
        with warnings.catch_warnings():  # a store without consolidated metadata is fine
            warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated", RuntimeWarning)
            ds = xr.open_zarr(path, consolidated=None)
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"'{path}' is not a readable zarr store ({error})") from error
    _check_prediction(ds, str(path))
    return ds


def _check_prediction(ds: xr.Dataset, path: str) -> None:
    missing = [dim for dim in (*CASE_DIMS, "latitude", "longitude") if dim not in ds.dims]
    if missing:
        raise DataError(f"prediction store '{path}': dimensions {missing} missing, found {list(ds.dims)}")
    expected = {"time": np.datetime64, "prediction_timedelta": np.timedelta64, "valid_time": np.datetime64}
    for name, kind in expected.items():
        if name not in ds.coords or not np.issubdtype(ds[name].dtype, kind):
            raise DataError(f"prediction store '{path}': coordinate '{name}' missing or not {kind.__name__}")
    fields = [name for name in ds.data_vars if name != MASK]
    if not fields:
        raise DataError(f"prediction store '{path}': no data variable (predicted field)")
    allowed = ((*CASE_DIMS, "latitude", "longitude"), (*CASE_DIMS, "level", "latitude", "longitude"))
    for name in fields:
        if tuple(ds[name].dims) not in allowed:
            raise DataError(f"prediction store '{path}': variable '{name}' has dims {ds[name].dims}, "
                            f"expected {allowed}")
    if MASK in ds.data_vars and tuple(ds[MASK].dims) != MASK_DIMS:
        raise DataError(f"prediction store '{path}': '{MASK}' has dims {ds[MASK].dims}, "
                        f"expected {MASK_DIMS}")
    if ds.attrs.get("task") not in inference_tasks():
        raise DataError(f"prediction store '{path}': attribute 'task' is {ds.attrs.get('task')!r}, "
                        f"expected one of {inference_tasks()}")

