"""Sources: open zarr, netCDF, GRIB and in-memory datasets lazily, in the internal convention.

A source is a small plugin, like an xarray backend: it says whether it can open a path, opens it
raw and lazily (dask arrays, nothing loaded), and describes it. Sources are registered by name in
:data:`SOURCES`; :func:`detect_source` picks one by URL scheme, extension, directory content or
magic bytes, and :func:`open_dataset` opens one or many files, maps them to the internal
convention (:mod:`atmorep.data.conventions`) and selects fields, levels and ensemble members.

Built-in sources:

- ``zarr``: zarr v2/v3 stores, local directories or fsspec URLs (``gs://``, ``s3://``, ``memory://``;
  cloud schemes need their fsspec package, e.g. gcsfs).
- ``netcdf``: ``.nc``, ``.nc4``, ``.cdf``, ``.netcdf`` (netCDF-3 and netCDF-4), engine netcdf4 or
  h5netcdf; fsspec URLs through h5netcdf.
- ``grib``: ``.grib``, ``.grb``, ``.grib2``, ``.grb2``, ``.grib1``, ``.grb1`` through cfgrib
  (``pip install atmorep[grib]``); no index files are written next to the data.
- ``memory``: datasets registered with :func:`register_memory_dataset`, opened as ``mem://name``.
"""

from __future__ import annotations

import abc
import contextlib
import importlib.util
import logging
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import xarray as xr

from atmorep.data.conventions import Member, squeeze_extra_dims, to_internal
from atmorep.data.grids import check_grid
from atmorep.errors import DataError
from atmorep.fields import canonical_field_name

logger = logging.getLogger(__name__)

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://")
NETCDF_SUFFIXES = (".nc", ".nc4", ".cdf", ".netcdf")
GRIB_SUFFIXES = (".grib", ".grb", ".grib2", ".grb2", ".grib1", ".grb1")
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zattrs", ".zmetadata")
MEMORY_SCHEME = "mem://"


@runtime_checkable
class Source(Protocol):
    """A way to open one kind of file; registered by ``name`` in :data:`SOURCES`."""

    name: str

    def can_open(self, path: str) -> bool:
        """Whether this source reads ``path`` (by scheme, extension, content); must not raise."""
        ...

    def open(self, path: str, **kwargs: Any) -> xr.Dataset:
        """The raw dataset, opened lazily; library exceptions may propagate."""
        ...

    def describe(self, path: str) -> str:
        """A short human-readable summary of the raw dataset at ``path``."""
        ...


def _scheme(path: str) -> str | None:
    match = _URL.match(path)
    return match.group(1).lower() if match else None


def _suffix(path: str) -> str:
    return Path(path.rstrip("/")).suffix.lower()


def _magic(path: str, size: int = 8) -> bytes:
    """The first bytes of a local file (empty for directories, URLs, unreadable files)."""
    with contextlib.suppress(OSError):
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                return handle.read(size)
    return b""


def describe_dataset(source: Source, path: str, ds: xr.Dataset) -> str:
    """A few lines naming the source, the dimensions and the variables of a raw dataset."""
    lines = [f"{source.name}: {path}", "  dimensions: " + ", ".join(f"{k}={v}" for k, v in ds.sizes.items())]
    for name, var in ds.data_vars.items():
        units = var.attrs.get("units", "?")
        lines.append(f"  {name} ({', '.join(map(str, var.dims))}) {var.dtype} [{units}]")
    return "\n".join(lines)


class _BaseSource(abc.ABC):
    """``describe`` for sources whose ``open`` does the work."""

    name: str

    @abc.abstractmethod
    def open(self, path: str, **kwargs: Any) -> xr.Dataset:
        """Open ``path`` lazily as a raw dataset."""

    def describe(self, path: str) -> str:
        return describe_dataset(self, path, open_raw(self, path))


class ZarrSource(_BaseSource):
    """Zarr stores: local directories (``*.zarr`` or holding zarr metadata) and fsspec URLs."""

    name = "zarr"

    def can_open(self, path: str) -> bool:
        if path.startswith(MEMORY_SCHEME):
            return False
        if _scheme(path) is not None:
            return _suffix(path) not in NETCDF_SUFFIXES + GRIB_SUFFIXES
        local = Path(path)
        has_metadata = local.is_dir() and any((local / marker).exists() for marker in ZARR_MARKERS)
        return _suffix(path) == ".zarr" or has_metadata

    def open(self, path: str, **kwargs: Any) -> xr.Dataset:
        kwargs.setdefault("chunks", {})  # dask arrays in the store's own chunks
        with warnings.catch_warnings():  # stores without consolidated metadata are fine
            warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated", RuntimeWarning)
            return xr.open_dataset(path, engine="zarr", **kwargs)


class NetCDFSource(_BaseSource):
    """netCDF-3 and netCDF-4 files, local or through fsspec."""

    name = "netcdf"

    def can_open(self, path: str) -> bool:
        if path.startswith(MEMORY_SCHEME):
            return False
        magic = _magic(path)
        return _suffix(path) in NETCDF_SUFFIXES or magic[:3] == b"CDF" or magic[:4] == b"\x89HDF"

    def open(self, path: str, **kwargs: Any) -> xr.Dataset:
        kwargs.setdefault("chunks", {})
        if _scheme(path) is not None:
            import fsspec

            handle = fsspec.open(path, mode="rb").open()
            return xr.open_dataset(handle, engine="h5netcdf", **kwargs)
        if _magic(path)[:3] == b"CDF":
            _check_classic_netcdf(path)
        engine = kwargs.pop("engine", "netcdf4" if importlib.util.find_spec("netCDF4") else "h5netcdf")
        return xr.open_dataset(path, engine=engine, **kwargs)


def _check_classic_netcdf(path: str) -> None:
    """Map a netCDF-3 file with scipy: a truncated file fails here, whereas netCDF4 reads zeros."""
    from scipy.io import netcdf_file

    problem = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns when a half-read mapping is closed
        try:
            mapped = netcdf_file(path, "r", mmap=True)
            mapped.variables.clear()  # release the arrays that view the mapping, so that it can be closed
            mapped.close()
        except (ValueError, TypeError, OSError) as error:
            problem = _one_line(error)
    if problem is not None:
        raise DataError(f"{path}: truncated or corrupted netCDF-3 file ({problem})")


class GribSource(_BaseSource):
    """GRIB 1/2 files through cfgrib; size-1 dimensions are kept (squeezed by the convention)."""

    name = "grib"

    def can_open(self, path: str) -> bool:
        return _suffix(path) in GRIB_SUFFIXES or _magic(path)[:4] == b"GRIB"

    def open(self, path: str, **kwargs: Any) -> xr.Dataset:
        if importlib.util.find_spec("cfgrib") is None:
            raise DataError(f"{path}: reading GRIB needs cfgrib and eccodes: install atmorep[grib]")
        import cfgrib

        backend_kwargs = {"indexpath": "", "errors": "raise", "squeeze": False,
                          **kwargs.pop("backend_kwargs", {})}
        kwargs.setdefault("chunks", {})
        try:
            ds = xr.open_dataset(path, engine="cfgrib", backend_kwargs=backend_kwargs, **kwargs)
        except cfgrib.dataset.DatasetBuildError:  # several hypercubes: open them apart, then merge
            ds = _merge_hypercubes(cfgrib.open_datasets(path, backend_kwargs=backend_kwargs, **kwargs), path)
        if not ds.data_vars and backend_kwargs.get("filter_by_keys"):
            keys = backend_kwargs["filter_by_keys"]
            chosen = " ".join(f"--filter {key}={value}" for key, value in keys.items())
            raise DataError(f"{path}: no GRIB message matches {chosen}")
        return ds


def _merge_hypercubes(parts: list[xr.Dataset], path: str) -> xr.Dataset:
    """One dataset from the hypercubes cfgrib found, or an error saying how to select one."""
    for part in parts:
        check_grid(part, path)
    _check_distinct_variables(parts, path)
    parts = [squeeze_extra_dims(part) for part in parts]  # 2t at 2 m and 10u at 10 m merge
    try:
        return xr.merge(parts, join="exact", compat="no_conflicts", combine_attrs="drop_conflicts")
    except ValueError as error:
        kinds = sorted({str(var.attrs.get("GRIB_typeOfLevel", "?")) for part in parts
                        for var in part.data_vars.values()})
        raise DataError(f"{path}: GRIB messages do not form one dataset ({_one_line(error)}); level types "
                        f"{', '.join(kinds)}: select one with --filter typeOfLevel={kinds[0]} (or --filter "
                        "shortName=NAME), filters= in Python") from None


def _check_distinct_variables(parts: list[xr.Dataset], path: str) -> None:
    """A field split over several GRIB hypercubes (e.g. two level types) cannot be merged."""
    seen: dict[str, str] = {}
    for part in parts:
        for name, var in part.data_vars.items():
            level_type = str(var.attrs.get("GRIB_typeOfLevel", "?"))
            if name in seen:
                raise DataError(f"{path}: GRIB field '{name}' comes on several level types ({seen[name]}, "
                                f"{level_type}); select one with --filter typeOfLevel={seen[name]} "
                                "(filters= in Python)")
            seen[str(name)] = level_type


_MEMORY: dict[str, xr.Dataset] = {}


class MemorySource(_BaseSource):
    """Datasets held in memory (tests, notebooks): ``mem://name``."""

    name = "memory"

    def can_open(self, path: str) -> bool:
        return path.startswith(MEMORY_SCHEME)

    def open(self, path: str, **kwargs: Any) -> xr.Dataset:
        key = path[len(MEMORY_SCHEME):]
        if key not in _MEMORY:
            raise DataError(f"{path}: no in-memory dataset named '{key}' (registered: {sorted(_MEMORY)})")
        return _MEMORY[key].copy()


def register_memory_dataset(name: str, ds: xr.Dataset) -> str:
    """Register ``ds`` so that ``open_dataset("mem://name")`` opens it; returns that path."""
    _MEMORY[name] = ds
    return MEMORY_SCHEME + name


def unregister_memory_dataset(name: str) -> None:
    """Forget an in-memory dataset (no error if it is not registered)."""
    _MEMORY.pop(name, None)


SOURCES: dict[str, Source] = {}


def register_source(source: Source) -> None:
    """Add (or replace, by name) a source; the most recently registered is tried first."""
    if not isinstance(source, Source):
        raise TypeError(f"{source!r} is not a Source (needs name, can_open, open and describe)")
    SOURCES.pop(source.name, None)
    SOURCES[source.name] = source


for _source in (ZarrSource(), NetCDFSource(), GribSource(), MemorySource()):
    register_source(_source)


def detect_source(path: str | Path) -> Source:
    """The source that reads ``path``: by URL scheme, extension, directory content or magic bytes.

    Raises:
        DataError: the path does not exist, or no source recognises it.
    """
    path = str(path)
    if _scheme(path) is None and not os.path.exists(path):
        raise DataError(f"{path}: file does not exist")
    for source in reversed(SOURCES.values()):
        if source.can_open(path):
            return source
    raise DataError(f"{path}: unknown data format; expected a zarr store, a netCDF file "
                    f"({', '.join(NETCDF_SUFFIXES)}), a GRIB file ({', '.join(GRIB_SUFFIXES)}) or mem://name")


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def open_raw(source: Source, path: str, **kwargs: Any) -> xr.Dataset:
    """``source.open(path)`` with any library error re-raised as a one-line :class:`DataError`."""
    try:
        return source.open(path, **kwargs)
    except DataError:
        raise
    except Exception as error:  # netCDF/HDF5, zarr, JSON, fsspec and eccodes raise many types
        raise DataError(f"{path}: cannot read as {source.name} ({_one_line(error)})") from None


def open_dataset(paths: str | Path | Sequence[str | Path], *, fields: Sequence[str] | None = None,
                 levels: Sequence[float] | None = None, member: Member = None,
                 source: str | None = None, open_kwargs: Mapping[str, Any] | None = None,
                 filters: Mapping[str, str | int | float] | None = None,
                 rename: Mapping[str, str] | None = None, time_dim: str | None = None,
                 time_units: str | None = None) -> xr.Dataset:
    """Open one or many files lazily, in the internal convention.

    Args:
        paths: a path or URL, or several (concatenated along time in the order of their first time,
            e.g. one file per month).
        fields: field names (short, long or CF names; unknown names are kept as they are), or None
            for every known field.
        levels: level values to keep (hPa, model level number or sigma), or None for all.
        member: None, a member label, or ``"all"`` (see :func:`atmorep.data.conventions.to_internal`).
        source: a name in :data:`SOURCES`, or None to detect it per path.
        open_kwargs: keyword arguments for the source's ``open``, e.g. ``{"storage_options":
            {"token": "anon"}}`` for a public cloud zarr store or ``{"backend_kwargs":
            {"filter_by_keys": {"typeOfLevel": "isobaricInhPa"}}}`` for GRIB.
        filters: GRIB keys the messages must have, e.g. ``{"typeOfLevel": "isobaricInhPa"}``
            (``--filter`` on the command line); GRIB files only.
        rename: variables, coordinates or dimensions to rename before mapping, ``{old: new}``.
        time_dim: the time dimension, when it is not named ``time`` or ``valid_time``.
        time_units: CF units of a time axis holding plain numbers, e.g. ``"hours since 1940-01-01"``.

    Returns:
        The dataset, fields ``[E,] T, [L,] H, W`` as dask arrays (nothing is loaded).

    Raises:
        DataError: a file is missing, unreadable or not mappable; a requested field or level is
            missing; files overlap in time or have different grids or fields.
    """
    path_list = [str(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not path_list:
        raise DataError("open_dataset: no paths given; expected at least one file or URL")
    wanted = None if fields is None else [canonical_field_name(str(f)) or str(f) for f in fields]
    layout = {"member": member, "keep": wanted or (), "rename": rename, "time_dim": time_dim,
              "time_units": time_units}
    parts = [_open_one(path, wanted, levels, source, _with_filters(open_kwargs, filters), layout)
             for path in path_list]
    return parts[0] if len(parts) == 1 else _concat_in_time(parts, path_list)


def _with_filters(open_kwargs: Mapping[str, Any] | None, filters: Mapping[str, Any] | None) -> dict[str, Any]:
    """``open_kwargs`` with the GRIB ``filters`` added to cfgrib's ``filter_by_keys``."""
    kwargs = dict(open_kwargs or {})
    if filters:
        backend = dict(kwargs.get("backend_kwargs", {}))
        backend["filter_by_keys"] = {**backend.get("filter_by_keys", {}), **filters}
        kwargs["backend_kwargs"] = backend
    return kwargs


def _open_one(path: str, fields: list[str] | None, levels: Sequence[float] | None, source: str | None,
              open_kwargs: dict[str, Any], layout: dict[str, Any]) -> xr.Dataset:
    """Open, map (``layout``: the keywords of :func:`to_internal`) and select one file."""
    if source is None:
        chosen = detect_source(path)
    elif source not in SOURCES:
        raise DataError(f"{path}: unknown source '{source}' (registered: {', '.join(SOURCES)})")
    else:
        chosen = SOURCES[source]
        if _scheme(path) is None and not os.path.exists(path):
            raise DataError(f"{path}: file does not exist")
    filter_by_keys = open_kwargs.get("backend_kwargs", {}).get("filter_by_keys")
    if filter_by_keys and chosen.name != "grib":
        raise DataError(f"{path}: --filter selects GRIB messages; this is a {chosen.name} source "
                        "(select fields with --fields and levels with --levels)")
    raw = open_raw(chosen, path, **open_kwargs)
    try:
        ds = to_internal(raw, origin=path, **layout)
    except DataError:
        raise
    except (ValueError, TypeError, KeyError, IndexError) as error:  # a layout no check foresaw
        raise DataError(f"{path}: cannot map this layout ({_one_line(error)}); `atmorep data info {path}` "
                        "shows its dimensions, and --rename, --time-dim, --time-units say how to read it"
                        ) from error
    return _select_levels(_select_fields(ds, fields, path), levels, path)


def _select_fields(ds: xr.Dataset, fields: list[str] | None, path: str) -> xr.Dataset:
    if fields is None:
        return ds
    missing = [name for name in fields if name not in ds.data_vars]
    if missing:
        raise DataError(f"{path}: field(s) {', '.join(missing)} not found "
                        f"(available: {', '.join(map(str, ds.data_vars))})")
    return ds[list(dict.fromkeys(fields))]


def _select_levels(ds: xr.Dataset, levels: Sequence[float] | None, path: str) -> xr.Dataset:
    """Keep the requested levels (ascending order); surface fields are unaffected."""
    if levels is None:
        return ds
    if "level" not in ds.dims:
        raise DataError(f"{path}: levels {list(levels)} requested but the dataset has no level fields")
    available = ds["level"].values
    index, missing = [], []
    for level in levels:
        match = np.flatnonzero(np.isclose(available, float(level), rtol=1e-9, atol=1e-9))
        if match.size:
            index.append(int(match[0]))
        else:
            missing.append(level)
    if missing:
        kind, units = ds["level"].attrs["level_kind"], ds["level"].attrs["units"]
        raise DataError(f"{path}: level(s) {missing} not found ({kind} levels available: {available.tolist()}"
                        f"{' hPa' if units == 'hPa' else ''})")
    return ds.isel(level=sorted(set(index)))


def _concat_in_time(parts: list[xr.Dataset], paths: list[str]) -> xr.Dataset:
    """Concatenate files along time, ordered by their first time; they must not overlap."""
    order = sorted(range(len(parts)), key=lambda i: parts[i]["time"].values[0])
    first = order[0]
    for previous, current in zip(order, order[1:]):
        _check_compatible(parts[first], parts[current], paths[first], paths[current])
        end, start = parts[previous]["time"].values[-1], parts[current]["time"].values[0]
        if start <= end:
            raise DataError(f"{paths[current]}: times overlap with {paths[previous]} (starts at "
                            f"{np.datetime_as_string(start, unit='s')}, which is not after "
                            f"{np.datetime_as_string(end, unit='s')}); expected disjoint periods")
    return xr.concat([parts[i] for i in order], dim="time", data_vars="minimal", coords="minimal",
                     compat="override", join="exact", combine_attrs="override")


def _check_compatible(reference: xr.Dataset, other: xr.Dataset, reference_path: str, path: str) -> None:
    """Same fields and the same grid (level, latitude, longitude, member) in two files."""
    if set(reference.data_vars) != set(other.data_vars):
        raise DataError(f"{path}: fields {sorted(map(str, other.data_vars))} differ from those of "
                        f"{reference_path} ({sorted(map(str, reference.data_vars))})")
    for name in ("member", "level", "latitude", "longitude"):
        mine, theirs = reference.coords.get(name), other.coords.get(name)
        if (mine is None) != (theirs is None) or (mine is not None and not np.array_equal(mine, theirs)):
            raise DataError(f"{path}: {name} coordinate differs from that of {reference_path}; "
                            "expected the same grid in every file")
