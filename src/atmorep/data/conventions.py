"""The internal data convention, and the mapping of real dataset layouts onto it.

Every reader of atmorep maps what it opens to one convention with :func:`to_internal`, so that the
rest of the package never looks at names, orders or units of a particular archive. The mapping is
lazy: coordinates are inspected and renamed, data arrays (dask or numpy) are only re-indexed.

The internal convention
-----------------------
Dimensions
    ``(time, level, latitude, longitude)`` for level fields, ``(time, latitude, longitude)`` for
    surface (single-level) fields, with a leading ``member`` dimension when an ensemble dimension
    is kept. Both kinds of field may live in one dataset.
``time``
    ``datetime64[ns]``, strictly increasing and unique. Read from ``time`` or ``valid_time``; when
    a file has a reference ``time`` and a forecast ``step`` (cfgrib), the valid time
    ``time + step`` is used, the (time, step) pairs flattened time-major into one axis.
``level``
    ``float64``, sorted by ascending value (top of the atmosphere first for all three kinds), with
    attributes ``level_kind`` (``"pressure"``, ``"model"`` or ``"sigma"``) and ``units`` (``"hPa"``
    or ``"1"``). Recognised names: ``level``, ``isobaricInhPa``, ``pressure_level``, ``plev``,
    ``pressure`` (pressure; values in Pa, by their ``units`` attribute or by magnitude, are
    converted to hPa), ``hybrid``, ``model_level`` (model level numbers), ``sigma`` and ``lev``
    (model level numbers if integral, sigma if in (0, 1]). A ``level_kind`` attribute, as written
    by atmorep itself, or CF attributes (``standard_name``, ``units``) take precedence over names.
``latitude``
    ``float64`` in [-90, 90], ascending (south to north), ``units = "degrees_north"``; read from
    ``latitude`` or ``lat``. Strictly monotonic but not necessarily equally spaced (Gaussian grids).
``longitude``
    ``float64`` in [0, 360), ascending and equally spaced, ``units = "degrees_east"``; read from
    ``longitude`` or ``lon``; -180..180 grids are wrapped and rolled. A grid must not hold both 0
    and 360.
``member``
    ``int64`` labels of ensemble members, from ``number``, ``member`` or ``realization``. By
    default an ensemble dimension of size 1 is squeezed and a larger one kept; ``member=k``
    selects the member labelled ``k``, ``member="all"`` keeps the dimension (size 1 if the dataset
    has no ensemble).
Variables
    Named by ERA5 short name (:func:`atmorep.fields.canonical_field_name` maps WeatherBench-2/ARCO
    long names, cfgrib short names and CF ``standard_name`` attributes). Unknown variables are
    dropped unless named in ``keep``. ``units``, ``long_name`` and ``standard_name`` are filled
    from :data:`atmorep.fields.FIELD_SPECS` when missing. Values and dtypes are not changed.
Other coordinates (``step``, ``expver``, scalar ``surface``...) and on-disk encodings are dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Literal

import numpy as np
import xarray as xr

from atmorep.data.grids import LATITUDE_NAMES, LONGITUDE_NAMES, check_grid
from atmorep.data.time_axis import TIME_NAMES, name_time, standardise_time, time_options
from atmorep.errors import DataError
from atmorep.fields import FIELD_SPECS, LevelKind, canonical_field_name

logger = logging.getLogger(__name__)

Member = int | Literal["all"] | None

MEMBER_NAMES = ("member", "number", "realization")
# level coordinate name -> kind (None: decided from the values)
LEVEL_NAMES: dict[str, LevelKind | None] = {
    "level": LevelKind.PRESSURE,
    "isobaricInhPa": LevelKind.PRESSURE,
    "pressure_level": LevelKind.PRESSURE,
    "plev": LevelKind.PRESSURE,
    "pressure": LevelKind.PRESSURE,
    "hybrid": LevelKind.MODEL,
    "model_level": LevelKind.MODEL,
    "sigma": LevelKind.SIGMA,
    "lev": None,
}
INTERNAL_DIMS = ("member", "time", "level", "latitude", "longitude")
EXPECTED_DIMS = ("(time, [level,] latitude, longitude), named time/valid_time, a level name "
                 f"({'/'.join(LEVEL_NAMES)}), latitude/lat, longitude/lon")
_KNOWN_DIMS = {*TIME_NAMES, "step", *LEVEL_NAMES, *LATITUDE_NAMES, *LONGITUDE_NAMES, *MEMBER_NAMES}
_HINTS = {"expver": " (ERA5 and ERA5T mixed: combine the expver slices with combine_first first)"}
RENAME_OPTION = "--rename OLD=NEW (rename= in Python)"
_PA_UNITS = {"pa", "pascal", "pascals"}
_HPA_UNITS = {"hpa", "mbar", "millibar", "millibars", "mb"}
COORDINATE_ATTRS = {
    "time": {"standard_name": "time"},
    "latitude": {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north"},
    "longitude": {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east"},
    "member": {"long_name": "ensemble member"},
}


def to_internal(ds: xr.Dataset, *, origin: str = "<dataset>", member: Member = None,
                keep: Collection[str] = (), rename: Mapping[str, str] | None = None,
                time_dim: str | None = None, time_units: str | None = None) -> xr.Dataset:
    """Map a dataset of any supported layout to the internal convention (see the module docstring).

    Args:
        ds: the dataset as opened (lazily) from its file.
        origin: the file or URL it came from; every error message starts with it.
        member: ``None`` (squeeze a size-1 ensemble dimension, keep a larger one), a member label to
            select, or ``"all"`` to keep a ``member`` dimension.
        keep: names of variables that are not known fields but are kept under their own name.
        rename: variables, coordinates or dimensions to rename first, ``{old: new}``, for layouts
            whose names are not recognised.
        time_dim: the dimension that is time, when its name is not ``time`` or ``valid_time``.
        time_units: CF units (``"hours since 1940-01-01"``) of a time axis that holds plain numbers.

    Returns:
        The dataset with fields ``[E,] T, [L,] H, W`` and the coordinates of the convention.

    Raises:
        DataError: a dimension cannot be mapped, a coordinate is irregular or unsorted, a time is
            duplicated, or no known field is present.
    """
    ds = _rename(ds.drop_encoding(), dict(rename or {}), origin)
    check_grid(ds, origin)
    if time_dim is not None:
        ds = name_time(ds, time_dim, origin)
    ds = _rename_fields(ds, origin, set(keep))
    ds = _swap_coordinate_dims(ds)
    _check_variable_dims(ds, origin)
    ds = squeeze_extra_dims(ds)
    ds = standardise_time(ds, origin, time_units)
    ds = _standardise_member(ds, origin, member)
    ds = _standardise_level(ds, origin)
    ds = _standardise_latitude(ds, origin)
    ds = _standardise_longitude(ds, origin)
    return _finalise(ds)


def _field_name_from_attrs(var: xr.DataArray) -> str | None:
    """The short name from the GRIB short name or the CF standard name (same kind of field first)."""
    grib = var.attrs.get("GRIB_shortName") or var.attrs.get("GRIB_cfVarName")
    if grib and canonical_field_name(str(grib)):
        return canonical_field_name(str(grib))
    standard_name = var.attrs.get("standard_name")
    if not standard_name:
        return None
    surface = not any(dim in LEVEL_NAMES for dim in var.dims)
    matches = [spec for spec in FIELD_SPECS.values() if spec.standard_name == standard_name]
    matches.sort(key=lambda spec: spec.surface != surface)  # same kind of field first
    return matches[0].name if matches else None


def _rename_fields(ds: xr.Dataset, origin: str, keep: set[str]) -> xr.Dataset:
    """Rename known fields to short names, drop unknown variables (except ``keep``)."""
    renames: dict[str, str] = {}
    for name in ds.data_vars:
        short = canonical_field_name(str(name)) or (str(name) if name in keep else None)
        if short is None:
            continue
        if short in renames.values():
            first = next(old for old, new in renames.items() if new == short)
            raise DataError(f"{origin}: variables '{first}' and '{name}' both map to field '{short}'")
        renames[str(name)] = short
    for name, var in ds.data_vars.items():  # by attributes, only for fields not named already
        short = _field_name_from_attrs(var) if name not in renames else None
        if short is not None and short not in renames.values():
            renames[str(name)] = short
    if not renames:
        names = ", ".join(map(str, ds.data_vars))
        raise DataError(f"{origin}: no known field among the variables ({names}); "
                        f"expected e.g. {', '.join(FIELD_SPECS)} or their long names")
    dropped = [name for name in ds.data_vars if name not in renames]
    if dropped:
        logger.debug("%s: dropping unknown variables %s", origin, dropped)
    ds = ds.drop_vars(dropped)
    clash = [new for old, new in renames.items() if new != old and new in ds.variables]
    if clash:
        raise DataError(f"{origin}: cannot rename to field '{clash[0]}': the name is already used")
    return ds.rename({old: new for old, new in renames.items() if old != new})


def _rename(ds: xr.Dataset, rename: dict[str, str], origin: str) -> xr.Dataset:
    """Apply the user's renames of variables, coordinates and dimensions."""
    missing = [old for old in rename if old not in ds.variables and old not in ds.dims]
    if missing:
        names = ", ".join(sorted({*map(str, ds.variables), *map(str, ds.dims)}))
        raise DataError(f"{origin}: cannot rename '{missing[0]}' (--rename): no such variable or dimension; "
                        f"the file has {names}")
    clash = [new for old, new in rename.items() if new != old and new in ds.variables and new not in rename]
    if clash:
        raise DataError(f"{origin}: cannot rename to '{clash[0]}' (--rename): the file already has it")
    return ds.rename(rename) if rename else ds


def _swap_coordinate_dims(ds: xr.Dataset) -> xr.Dataset:
    """Make 1-D coordinates with a known name (``lat(y)``) the dimension they lie along."""
    swaps = {}
    for name in (*TIME_NAMES, *LEVEL_NAMES, *LATITUDE_NAMES, *LONGITUDE_NAMES, *MEMBER_NAMES):
        if name in ds.coords and ds[name].ndim == 1 and ds[name].dims[0] not in _KNOWN_DIMS:
            swaps[ds[name].dims[0]] = name
    return ds.swap_dims(swaps) if swaps else ds


def _check_variable_dims(ds: xr.Dataset, origin: str) -> None:
    """Every field must have time, latitude and longitude dims and no unknown dim of size > 1 (fields in
    name order, so the error names the same one whatever order the file lists them in)."""
    for name in sorted(ds.data_vars, key=str):
        var = ds[name]
        dims = set(var.dims)
        empty = [dim for dim in var.dims if ds.sizes[dim] == 0]
        if empty:
            raise DataError(f"{origin}: variable '{name}' has an empty dimension '{empty[0]}'; expected data")
        unknown = [dim for dim in var.dims if dim not in _KNOWN_DIMS and ds.sizes[dim] > 1]
        levels = dims & set(LEVEL_NAMES)
        has_time = bool(dims & {*TIME_NAMES, "step"}) or any(
            time in ds.coords and ds[time].ndim == 0 for time in TIME_NAMES)
        horizontal = dims & set(LATITUDE_NAMES) and dims & set(LONGITUDE_NAMES)
        if unknown or len(levels) > 1 or not has_time or not horizontal:
            hint = "".join(text for dim, text in _HINTS.items() if dim in dims)
            time = "" if has_time or not unknown else (
                f"name the time dimension with {time_options(ds, unknown)}, or ")
            raise DataError(f"{origin}: variable '{name}' has dimensions ({', '.join(map(str, var.dims))}); "
                            f"expected {EXPECTED_DIMS}{hint}; {time}rename others with {RENAME_OPTION}")


def squeeze_extra_dims(ds: xr.Dataset) -> xr.Dataset:
    """Drop size-1 dimensions that carry no structure (cfgrib's ``surface``, ``heightAboveGround``)
    and scalar coordinates of that kind, so that 2 m and 10 m fields share one dataset."""
    extra = [dim for dim in ds.dims if dim not in _KNOWN_DIMS and ds.sizes[dim] == 1]
    ds = ds.isel({dim: 0 for dim in extra}, drop=True) if extra else ds
    scalars = [name for name in ds.coords if ds[name].ndim == 0 and name not in _KNOWN_DIMS]
    return ds.drop_vars(scalars)


def _standardise_member(ds: xr.Dataset, origin: str, member: Member) -> xr.Dataset:
    """Select one ensemble member, or keep them as a ``member`` dimension."""
    if member is not None and member != "all" and (isinstance(member, bool) or not isinstance(member, int)):
        raise DataError(f"{origin}: member must be an int, 'all' or None, got {member!r}")
    names = [name for name in MEMBER_NAMES if name in ds.dims or name in ds.coords]
    if len(names) > 1:
        raise DataError(f"{origin}: several ensemble dimensions ({', '.join(names)}); expected one")
    if not names:
        if member is None:
            return ds
        if member == "all":
            return ds.expand_dims(member=np.array([0], dtype=np.int64))
        raise DataError(f"{origin}: member {member} requested but there is no ensemble dimension "
                        f"(expected one of {', '.join(MEMBER_NAMES)})")
    name = names[0]
    if name not in ds.dims:
        ds = ds.expand_dims(name)  # a scalar coordinate becomes a size-1 dimension
    if name not in ds.coords:
        ds = ds.assign_coords({name: np.arange(ds.sizes[name])})
    ds = ds.rename({name: "member"}) if name != "member" else ds
    if ds["member"].dtype.kind not in "iu":
        raise DataError(f"{origin}: ensemble labels of '{name}' have dtype {ds['member'].dtype}; "
                        "expected integers")
    ds = ds.assign_coords(member=ds["member"].values.astype(np.int64))
    if member is None:
        return ds.isel(member=0, drop=True) if ds.sizes["member"] == 1 else ds
    if member == "all":
        return ds
    labels = ds["member"].values.tolist()
    if member not in labels:
        raise DataError(f"{origin}: member {member} not found (members: {labels})")
    return ds.sel(member=member, drop=True)


def _standardise_level(ds: xr.Dataset, origin: str) -> xr.Dataset:
    """One float64 ``level`` dimension sorted ascending, with ``level_kind`` and ``units``."""
    names = [name for name in LEVEL_NAMES if name in ds.coords or name in ds.dims]
    if len(names) > 1:
        raise DataError(f"{origin}: several vertical coordinates ({', '.join(names)}); expected one")
    if not names:
        return ds
    name = names[0]
    if name not in ds.coords:
        raise DataError(f"{origin}: level dimension '{name}' has no coordinate values")
    if ds[name].ndim == 0:
        ds = _expand_scalar_level(ds, name)
    kind, values = level_values(name, ds[name], origin)
    ds = ds.rename({name: "level"}) if name != "level" else ds
    ds = ds.assign_coords(level=("level", values, {"level_kind": kind.value, "units": kind.units}))
    if np.any(np.diff(values) <= 0):
        ds = ds.isel(level=np.argsort(values, kind="stable"))
    return ds


def _expand_scalar_level(ds: xr.Dataset, name: str) -> xr.Dataset:
    """A scalar level coordinate (one level selected) becomes a size-1 dimension of level fields."""
    coord = ds[name]
    ds = ds.drop_vars(name)
    expanded = {field: ds[field].expand_dims({name: 1}) for field in ds.data_vars
                if field not in FIELD_SPECS or not FIELD_SPECS[field].surface}
    return ds.assign(expanded).assign_coords({name: (name, [coord.item()], coord.attrs)})


def level_values(name: str, coord: xr.DataArray, origin: str) -> tuple[LevelKind, np.ndarray]:
    """The kind of a level coordinate and its values in internal units (hPa or 1), ``[L]`` float64."""
    values = np.asarray(coord.values, dtype=np.float64)
    kind = _level_kind(name, coord.attrs, values, origin)
    units = str(coord.attrs.get("units", "")).strip().lower()
    in_pa = units in _PA_UNITS or (units not in _HPA_UNITS and values.max() > 1100)
    if kind is LevelKind.PRESSURE and in_pa:
        values = values / 100.0  # Pa -> hPa
    valid, expected = {LevelKind.PRESSURE: ((values > 0) & (values <= 1100), "0 < hPa <= 1100"),
                       LevelKind.MODEL: ((values >= 1) & (values == np.round(values)), "integers >= 1"),
                       LevelKind.SIGMA: ((values > 0) & (values <= 1), "0 < sigma <= 1")}[kind]
    if not np.all(valid):
        raise DataError(f"{origin}: {kind.value} levels of '{name}' out of range ({values.tolist()}); "
                        f"expected {expected}")
    if np.unique(values).size != values.size:
        raise DataError(f"{origin}: duplicated levels in '{name}' ({values.tolist()}); expected unique")
    return kind, values


def _level_kind(name: str, attrs: dict, values: np.ndarray, origin: str) -> LevelKind:
    """The kind from a ``level_kind`` attribute, CF attributes, the name, or the values (``lev``)."""
    declared = attrs.get("level_kind")
    if declared is not None:
        if declared not in ("pressure", "model", "sigma"):
            raise DataError(f"{origin}: level_kind '{declared}' of '{name}' is not one of pressure, model, "
                            "sigma")
        return LevelKind(declared)
    standard_name = str(attrs.get("standard_name", "")).lower()
    units = str(attrs.get("units", "")).strip().lower()
    if standard_name == "air_pressure" or units in _PA_UNITS | _HPA_UNITS:
        return LevelKind.PRESSURE
    if standard_name == "model_level_number":
        return LevelKind.MODEL
    integral = bool(np.all(values >= 1) and np.all(values == np.round(values)))
    if "sigma" in standard_name:  # sigma or hybrid sigma-pressure: ECMWF numbers its hybrid levels
        return LevelKind.MODEL if integral else LevelKind.SIGMA
    if LEVEL_NAMES[name] is not None:
        return LEVEL_NAMES[name]
    if integral:
        return LevelKind.MODEL
    if np.all((values > 0) & (values <= 1)):
        return LevelKind.SIGMA
    raise DataError(f"{origin}: cannot tell the kind of level '{name}' ({values.tolist()}); expected model "
                    "level numbers, sigma in (0, 1] or a units/level_kind attribute")


def _renamed_axis(ds: xr.Dataset, names, axis: str, origin: str) -> tuple[xr.Dataset, np.ndarray]:
    """Rename the first dimension of ``names`` present to ``axis``; return it with its float64 values."""
    name = next(name for name in names if name in ds.dims)
    if name not in ds.coords:
        raise DataError(f"{origin}: {axis} dimension '{name}' has no coordinate values")
    ds = ds.rename({name: axis}) if name != axis else ds
    return ds, np.asarray(ds[axis].values, dtype=np.float64)


def _standardise_latitude(ds: xr.Dataset, origin: str) -> xr.Dataset:
    """``latitude`` float64, ascending, in [-90, 90]."""
    ds, latitude = _renamed_axis(ds, LATITUDE_NAMES, "latitude", origin)
    descending = check_latitude(latitude, origin)
    if descending:
        ds, latitude = ds.isel(latitude=slice(None, None, -1)), latitude[::-1]
    return ds.assign_coords(latitude=("latitude", latitude))


def _standardise_longitude(ds: xr.Dataset, origin: str) -> xr.Dataset:
    """``longitude`` float64 in [0, 360), ascending, equally spaced."""
    ds, longitude = _renamed_axis(ds, LONGITUDE_NAMES, "longitude", origin)
    order, wrapped = longitude_order(longitude, origin)
    if not np.array_equal(order, np.arange(order.size)):
        ds = ds.isel(longitude=order)
    return ds.assign_coords(longitude=("longitude", wrapped))


def _finalise(ds: xr.Dataset) -> xr.Dataset:
    """Drop foreign coordinates, order dimensions, set coordinate and field attributes."""
    ds = ds.drop_vars([name for name in ds.coords if name not in INTERNAL_DIMS])
    for name in ds.data_vars:
        var = ds[name].transpose(*[dim for dim in INTERNAL_DIMS if dim in ds[name].dims])
        ds[name] = var.assign_attrs(_missing_attrs(str(name), var.attrs))
    for name, attrs in COORDINATE_ATTRS.items():
        if name in ds.coords:
            ds[name].attrs = dict(attrs)
    return ds


def _missing_attrs(name: str, attrs: dict) -> dict:
    """CF attributes of a known field that the variable lacks."""
    spec = FIELD_SPECS.get(name)
    if spec is None:
        return {}
    if "units" in attrs and _plain_units(attrs["units"]) != _plain_units(spec.units):
        logger.warning("field '%s' has units '%s'; atmorep expects '%s' (values are not converted)",
                       name, attrs["units"], spec.units)
    wanted = {"units": spec.units, "long_name": spec.long_name, "standard_name": spec.standard_name}
    return {key: value for key, value in wanted.items() if key not in attrs}


def _plain_units(units: object) -> str:
    """Units without exponent markers: ``m**2 s**-2`` and ``m^2 s^-2`` read as ``m2 s-2``."""
    return " ".join(str(units).replace("**", "").replace("^", "").split())


def check_latitude(latitude: np.ndarray, origin: str) -> bool:
    """Latitudes ``[H]`` must lie in [-90, 90] and be strictly monotonic; returns True if descending."""
    if latitude.ndim != 1 or not np.all(np.isfinite(latitude)):
        raise DataError(f"{origin}: latitude must be 1-D and finite")
    if np.any(np.abs(latitude) > 90 + 1e-6):
        raise DataError(f"{origin}: latitude outside [-90, 90] (from {latitude.min()} to {latitude.max()})")
    steps = np.diff(latitude)
    if np.all(steps > 0):
        return False
    if np.all(steps < 0):
        return True
    direction = np.sign(steps[0]) if steps[0] != 0 else 1.0
    index = int(np.argmax(np.sign(steps) != direction)) + 1
    raise DataError(f"{origin}: latitude not strictly monotonic at index {index} "
                    f"({latitude[index - 1]} -> {latitude[index]}); expected a sorted grid")


def longitude_order(longitude: np.ndarray, origin: str) -> tuple[np.ndarray, np.ndarray]:
    """The index order ``[W]`` that makes longitudes ascending in [0, 360), and those longitudes.

    Longitudes must be equally spaced, in either direction, in degrees (0..360 or -180..180), and
    must not repeat the first meridian (0 and 360). A grid whose values wrapped into [0, 360)
    cannot be ascending (a regional grid across the 0 meridian) is rejected.
    """
    if longitude.ndim != 1 or not np.all(np.isfinite(longitude)):
        raise DataError(f"{origin}: longitude must be 1-D and finite")
    steps = np.diff(longitude)
    if steps.size:
        typical = np.median(steps)
        irregular = np.flatnonzero(~np.isclose(steps, typical, rtol=1e-5, atol=1e-9) | (steps == 0))
        if irregular.size:
            index = int(irregular[0]) + 1
            raise DataError(f"{origin}: irregular longitude spacing at index {index} (step "
                            f"{steps[index - 1]:g}, typical step {typical:g}); expected equally spaced")
        if abs(typical) * longitude.size > 360 + 1e-6:
            raise DataError(f"{origin}: longitudes span more than 360 degrees ({longitude[0]:g} to "
                            f"{longitude[-1]:g}); expected no duplicate of the 0/360 meridian")
    wrapped = np.mod(longitude, 360.0)
    wrapped[np.isclose(wrapped, 360.0, rtol=0, atol=1e-9)] = 0.0
    order = np.argsort(wrapped, kind="stable")
    if steps.size and not np.allclose(np.diff(wrapped[order]), abs(typical), rtol=1e-5, atol=1e-9):
        raise DataError(f"{origin}: longitudes {longitude[0]:g}..{longitude[-1]:g} cross the 0 meridian of a "
                        "regional grid; expected a global grid or one that is ascending in [0, 360)")
    return order, wrapped[order]
