"""Read access to a prepared store: coordinates, statistics and boxes, touching only the chunks needed.

A prepared store is a zarr group written by :func:`atmorep.data.prepare.prepare` in the internal
convention (see ``atmorep.data.conventions``): one array per field with dims
``([member,] time, level, latitude, longitude)`` (surface fields without ``level``), coordinates
``time`` (datetime64), ``level``, ``latitude`` (ascending), ``longitude`` ([0, 360), periodic) and
the attribute ``atmorep_statistics``. Boxes are read with plain zarr slicing, so a box reads only
the chunks it overlaps; a box that crosses the 0/360 meridian is read as two slices.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from atmorep.data.statistics import Statistics
from atmorep.data.transforms import TRANSFORM_ATTRS
from atmorep.errors import DataError
from atmorep.fields import LevelKind

STORE_PREFIX = "atmorep-store-"
STORE_FORMAT = f"{STORE_PREFIX}1"


@dataclass(frozen=True)
class BoxIndex:
    """Where a box lies in a store, in grid indices.

    Attributes:
        time: index of the first time step.
        latitude: index of the southernmost latitude row.
        longitude: index of the westernmost longitude column (the box wraps past the last column).
        member: ensemble member index (0 when the store has no member dimension).
    """

    time: int
    latitude: int
    longitude: int
    member: int = 0


def is_store(path: str | Path) -> bool:
    """Whether ``path`` is a complete prepared store (of any format version)."""
    try:
        attrs = zarr.open_group(str(path), mode="r").attrs
    except Exception:  # not zarr at all: zarr raises several types
        return False
    return str(attrs.get("atmorep_format", "")).startswith(STORE_PREFIX)


class Store:
    """A prepared store opened for sampling. Cheap to pickle (reopens lazily in each worker)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        group = self._group
        attrs = dict(group.attrs)
        written = str(attrs.get("atmorep_format", ""))
        if written.startswith(STORE_PREFIX) and written != STORE_FORMAT:
            raise DataError(f"store '{self.path}' has format '{written}'; this atmorep reads "
                            f"'{STORE_FORMAT}' (a store of another atmorep version): upgrade atmorep, or "
                            "prepare the store again")
        if written != STORE_FORMAT:
            raise DataError(
                f"'{self.path}' is not a complete atmorep store (missing attribute "
                f"atmorep_format={STORE_FORMAT!r}; make one with `atmorep data prepare`)"
            )
        self.attrs = attrs
        self.fields: tuple[str, ...] = tuple(attrs["atmorep_fields"])
        self.level_kind = LevelKind(attrs.get("atmorep_level_kind", "pressure"))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for key in ("_group", "arrays"):
            state.pop(key, None)  # zarr handles are reopened in the worker process
        return state

    @cached_property
    def _group(self) -> zarr.Group:
        try:
            return zarr.open_group(self.path, mode="r")
        except Exception as error:  # zarr raises several types for missing/corrupt stores
            raise DataError(f"cannot open store '{self.path}': {type(error).__name__}: {error}") from None

    @cached_property
    def arrays(self) -> dict[str, zarr.Array]:
        return {name: self._group[name] for name in self.fields}

    def _coordinate(self, name: str) -> np.ndarray:
        return np.asarray(self._group[name][...])

    @cached_property
    def time(self) -> np.ndarray:
        """datetime64[s] of every time step."""
        array = self._group["time"]
        attrs = dict(array.attrs)
        values = np.asarray(array[...])
        return _decode_time(values, attrs, self.path)

    @cached_property
    def latitude(self) -> np.ndarray:
        return self._coordinate("latitude").astype(np.float64)

    @cached_property
    def longitude(self) -> np.ndarray:
        return self._coordinate("longitude").astype(np.float64)

    def check_pairs_with(self, other: Store, key: str,
                         axes: tuple[str, ...] = ("time", "latitude", "longitude")) -> None:
        """DataError (prefixed ``key``) unless this store has ``other``'s values along each of ``axes``."""
        for axis in axes:
            if not np.array_equal(getattr(self, axis), getattr(other, axis)):
                raise DataError(f"{key}: store '{self.path}' has other {axis} values than store "
                                f"'{other.path}' it pairs with; both need the same {axis}")

    @cached_property
    def level(self) -> np.ndarray:
        return self._coordinate("level").astype(np.float64) if "level" in self._group else np.zeros(0)

    @cached_property
    def statistics(self) -> Statistics:
        raw = self.attrs.get("atmorep_statistics")
        if raw is None:
            raise DataError(f"store '{self.path}' has no normalisation statistics (run `atmorep data stats`)")
        return Statistics.from_dict(json.loads(raw) if isinstance(raw, str) else raw)

    @property
    def members(self) -> int:
        return int(self.attrs.get("atmorep_members", 1))

    @property
    def resolution(self) -> float:
        """Mean latitude spacing in degrees."""
        return float(np.abs(np.diff(self.latitude)).mean())

    def is_surface(self, field: str) -> bool:
        return "level" not in self.arrays[field].metadata.dimension_names

    def field_levels(self, field: str) -> tuple[float, ...]:
        return (0.0,) if self.is_surface(field) else tuple(float(v) for v in self.level)

    def level_indices(self, field: str, levels: list[float] | None) -> list[int]:
        """Indices of the requested level values of a field (all levels for None)."""
        self.require_field(field)
        available = self.field_levels(field)
        if levels is None or self.is_surface(field):
            return list(range(len(available)))
        index = []
        for level in levels:
            matches = np.flatnonzero(np.isclose(available, level))
            if matches.size == 0:
                raise DataError(
                    f"store '{self.path}': field '{field}' has no level {level} "
                    f"(available: {list(available)})"
                )
            index.append(int(matches[0]))
        return index

    def transform(self, field: str) -> dict:
        """The value transform of a field's stored values (:mod:`atmorep.data.transforms`), or {}."""
        attrs = self.arrays[field].attrs
        return {key: attrs[key] for key in TRANSFORM_ATTRS if key in attrs}

    def require_field(self, field: str) -> None:
        if field not in self.fields:
            raise DataError(f"store '{self.path}' has no field '{field}' (available: {list(self.fields)})")

    def read_box(
        self,
        field: str,
        box: BoxIndex,
        shape: tuple[int, int, int],
        time_step: int = 1,
        levels: list[int] | None = None,
    ) -> np.ndarray:
        """Read one field's box.

        Args:
            field: short name.
            box: grid indices of the box corner.
            shape: ``(T, H, W)`` in grid points.
            time_step: stride along time.
            levels: level indices (all when None).

        Returns:
            ``[L, T, H, W]`` float32 in physical units.
        """
        array = self.arrays[field]
        t, h, w = shape
        nlon = self.longitude.size
        times = slice(box.time, box.time + (t - 1) * time_step + 1, time_step)
        lats = slice(box.latitude, box.latitude + h)
        lon_start = box.longitude % nlon
        first = min(w, nlon - lon_start)
        parts = [slice(lon_start, lon_start + first)]
        if first < w:
            parts.append(slice(0, w - first))  # the box wraps past 360 degrees
        lead = (box.member,) if self.members > 1 else ()
        surface = self.is_surface(field)
        level_sel = slice(None) if levels is None else levels
        chunks = []
        for lons in parts:
            if surface:
                values = array[(*lead, times, lats, lons)][None]  # [1, T, H, W]
            else:
                values = _read_levels(array, lead, times, level_sel, lats, lons)
            chunks.append(values)
        return np.concatenate(chunks, axis=-1).astype(np.float32, copy=False)

    def box_coordinates(self, box: BoxIndex, shape: tuple[int, int, int], time_step: int = 1):
        """``(time [T] datetime64[s], latitude [H], longitude [W])`` of a box."""
        t, h, w = shape
        time = self.time[box.time : box.time + (t - 1) * time_step + 1 : time_step]
        lat = self.latitude[box.latitude : box.latitude + h]
        lon = self.longitude[(box.longitude + np.arange(w)) % self.longitude.size]
        return time, lat, lon


def _read_levels(
    array: zarr.Array, lead: tuple, times: slice, levels, lats: slice, lons: slice
) -> np.ndarray:
    if isinstance(levels, slice):
        values = array[(*lead, times, levels, lats, lons)]  # [T, L, H, W]
    else:
        values = array.get_orthogonal_selection((*lead, times, levels, lats, lons))
    return np.moveaxis(values, 0, 1)  # [L, T, H, W]


def _decode_time(values: np.ndarray, attrs: dict, path: str) -> np.ndarray:
    """The time coordinate as ``datetime64[s]``, decoded by xarray from its CF ``units`` and ``calendar``."""
    if np.issubdtype(values.dtype, np.datetime64):
        return values.astype("datetime64[s]")
    units = attrs.get("units", "")
    if not units or " since " not in units:
        raise DataError(f"store '{path}': time coordinate has no CF units (got {units!r})")
    calendar = attrs.get("calendar", "standard")
    encoded = xr.Dataset({"time": ("time", values, {"units": units, "calendar": calendar})})
    try:
        with warnings.catch_warnings():  # a calendar numpy cannot hold is refused below, by name
            warnings.simplefilter("ignore", xr.SerializationWarning)
            coder = xr.coders.CFDatetimeCoder(time_unit="s")
            decoded = xr.decode_cf(encoded, decode_times=coder)["time"].values
    except (ValueError, TypeError, OverflowError):
        raise DataError(f"store '{path}': cannot decode the time coordinate with units {units!r}; expected "
                        "'<seconds|minutes|hours|days> since <date>'") from None
    if not np.issubdtype(decoded.dtype, np.datetime64):
        raise DataError(f"store '{path}': the times ({units!r}, calendar {calendar!r}) are not dates of the "
                        "proleptic Gregorian calendar (a calendar such as noleap or 360_day, or dates before "
                        "1582-10-15); convert the source's time axis to the Gregorian calendar first "
                        "(e.g. xarray's convert_calendar)")
    return decoded.astype("datetime64[s]")
