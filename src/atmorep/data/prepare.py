"""Prepare a store: any supported input to a zarr store chunked for box sampling, with statistics.

``prepare`` reads the sources lazily (``atmorep.data.sources.open_dataset``), maps them to the
internal convention, rechunks to a chunk shape derived from the box size (not the source's chunks),
writes a zarr store with consolidated metadata and CF attributes to a hidden temporary path,
computes normalisation statistics and a NaN report on the written data (out of core, dask), and
only then renames the store into place. An interrupted prepare leaves no store that looks finished.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from zarr.codecs import BloscCodec

from atmorep.data.compute_statistics import (
    compute_statistics,
    nan_report,
    reduce_store,
)
from atmorep.data.regrid import coarse_grain, target_grid
from atmorep.data.store import STORE_FORMAT, Store
from atmorep.data.time_axis import check_regular
from atmorep.data.transforms import apply_transforms
from atmorep.errors import DataError
from atmorep.fields import field_spec
from atmorep.io import atomic_directory

log = logging.getLogger(__name__)

TIME_UNITS = "seconds since 1970-01-01 00:00:00"
# fast to decode: zarr's cost per chunk, not decompression, should bound the sampling speed
COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


def chunk_shape(box: Sequence[int], grid: Sequence[int], fraction: int = 2) -> tuple[int, int, int]:
    """Chunk sizes ``(time, latitude, longitude)`` for sampling boxes of shape ``box``.

    A box of size ``b`` along an axis chunked by ``c = b / fraction`` reads on average
    ``b + c - 1`` points: ``fraction=2`` reads about 1.5x the box per axis (3.4x in all) in few
    chunks, ``fraction=4`` about 1.25x per axis (1.95x in all) in 8x as many chunks. zarr's cost
    per chunk dominates at these sizes, so the default favours fewer chunks; docs/benchmarks.md
    gives the measured trade-off.
    """
    return tuple(max(1, min(n, math.ceil(b / fraction))) for b, n in zip(box, grid))  # type: ignore[return-value]


def prepare(
    sources: Sequence[str | Path],
    out: str | Path,
    *,
    fields: Sequence[str] | None = None,
    levels: Sequence[float] | None = None,
    member: int | str | None = None,
    box: Sequence[int] = (36, 54, 108),
    chunk_fraction: int = 2,
    overwrite: bool = False,
    filters: Mapping[str, str | int | float] | None = None,
    rename: Mapping[str, str] | None = None,
    time_dim: str | None = None,
    time_units: str | None = None,
    transforms: Mapping[str, str] | None = None,
    grid: str | Path | None = None,
) -> Path:
    """Write a prepared store from one or more source files or URLs.

    Args:
        sources: input paths/URLs (zarr, netCDF, GRIB; several files are concatenated along time).
        out: path of the store to write.
        fields: short names to keep (all known fields when None).
        levels: level values to keep (all when None).
        member: ensemble member to select, or "all" to keep a member dimension.
        box: ``(T, H, W)`` box size in grid points the store will be sampled with (sets chunking).
            Data smaller than the box are prepared all the same, with a warning, and chunked whole.
        chunk_fraction: chunks are ``box / chunk_fraction`` along each axis (see :func:`chunk_shape`).
        overwrite: replace an existing store.
        filters, rename, time_dim, time_units: how to read the sources, see
            :func:`atmorep.data.sources.open_dataset`.
        transforms: ``{field: transform}`` applied to the stored values, see
            :mod:`atmorep.data.transforms` (e.g. ``{"tp": "log1p"}``).
        grid: coarse-grain the sources first onto this grid: a Gaussian truncation (``"T31"``) or a
            store whose latitudes and longitudes to take (:mod:`atmorep.data.regrid`).

    Returns:
        The path of the complete store.
    """
    from atmorep.data.sources import open_dataset

    out = Path(out)
    if out.exists() and not overwrite:
        raise DataError(f"output store '{out}' already exists (use --overwrite to replace it)")
    ds = open_dataset([str(s) for s in sources], fields=fields, levels=levels, member=member,
                      filters=filters, rename=rename, time_dim=time_dim, time_units=time_units)
    origin = ", ".join(map(str, sources))
    if grid is not None:
        ds = coarse_grain(ds, target_grid(grid), origin=origin)
    ds = apply_transforms(ds, dict(transforms or {}), origin=origin)
    return prepare_dataset(
        ds,
        out,
        box=box,
        chunk_fraction=chunk_fraction,
        overwrite=overwrite,
        origin=origin,
    )


def prepare_dataset(
    ds: xr.Dataset,
    out: str | Path,
    *,
    box: Sequence[int] = (36, 54, 108),
    chunk_fraction: int = 2,
    overwrite: bool = False,
    origin: str = "<dataset>",
) -> Path:
    """Write a prepared store from a dataset already in the internal convention (see :func:`prepare`)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise DataError(f"output store '{out}' already exists (use --overwrite to replace it)")
    ds = _check_fits(ds, box, origin=origin)
    chunks = chunk_shape(box, (ds.sizes["time"], ds.sizes["latitude"], ds.sizes["longitude"]), chunk_fraction)
    task = _task_chunks(ds, chunks[0])
    with atomic_directory(out, overwrite=overwrite) as tmp:
        _write(ds, tmp, chunks, task)
        written = _open_for_reduction(tmp, task)
        try:
            statistics, nan_counts = reduce_store(written)
        except DataError as error:
            raise DataError(f"{origin}: {error}") from None
        report = nan_report(written, nan_counts)
        attrs = {
            "atmorep_statistics": json.dumps(statistics.to_dict()),
            "atmorep_nan_report": json.dumps(report),
            "atmorep_sources": origin,
        }
        _finalise(tmp, attrs)
    for name, entry in report.items():
        log.warning(
            "field '%s' holds NaN: %.3g of its values (%s); boxes with NaN are skipped when "
            "sampling (data.nan_policy)",
            name,
            entry["fraction"],
            entry["where"],
        )
    return out


def _check_fits(ds: xr.Dataset, box: Sequence[int], origin: str) -> xr.Dataset:
    """Fields present and times equally spaced; a box larger than the data only warns (it shapes chunks)."""
    if not ds.data_vars:
        raise DataError(f"{origin}: no known fields found")
    check_regular(ds["time"].values, origin)
    grid = {"time": ds.sizes["time"], "latitude": ds.sizes["latitude"], "longitude": ds.sizes["longitude"]}
    larger = [f"{axis} {b} > {size}" for (axis, size), b in zip(grid.items(), box) if b > size]
    if larger:
        log.warning("%s: the box (%s) is larger than the data (%s); the store is written all the same, "
                    "but sampling it for training or inference needs a box within (%s)", origin,
                    ", ".join(map(str, box)), ", ".join(larger), ", ".join(map(str, grid.values())))
    return ds


def _write(ds: xr.Dataset, path: Path, chunks: tuple[int, int, int], task: dict[str, int]) -> None:
    """Write the dataset chunked for sampling: all levels of a field in one chunk.

    Args:
        ds: the dataset in the internal convention.
        path: the store to write.
        chunks: storage chunks ``(time, latitude, longitude)``.
        task: dask chunks of the write, from :func:`_task_chunks`.
    """
    sizes = {"time": chunks[0], "latitude": chunks[1], "longitude": chunks[2], "level": -1, "member": 1}
    encoding = {}
    variables = {}
    for name, var in ds.data_vars.items():
        target = {dim: sizes[dim] for dim in var.dims}
        var = var.astype(np.float32).chunk({dim: task[dim] for dim in var.dims})
        spec = field_spec(str(name))
        var.attrs = {
            "units": spec.units,
            "long_name": spec.long_name.replace("_", " "),
            "standard_name": spec.standard_name,
            **var.attrs,
        }
        encoding[name] = {
            "chunks": tuple(min(target[d], var.sizes[d]) if target[d] > 0 else var.sizes[d]
                            for d in var.dims),
            "compressors": (COMPRESSOR,),
        }
        var.encoding = {}
        variables[name] = var
    out = xr.Dataset(variables, coords={k: v for k, v in ds.coords.items() if k in ds.dims}, attrs=ds.attrs)
    for coord in out.coords.values():
        coord.encoding = {}
    encoding["time"] = {"units": TIME_UNITS, "dtype": "int64", "calendar": "proleptic_gregorian"}
    out.to_zarr(path, mode="w", encoding=encoding, consolidated=True, zarr_format=3)


def _task_chunks(ds: xr.Dataset, time_chunk: int, target_bytes: int = 64 * 2**20) -> dict[str, int]:
    """Dask chunks for writing and reducing: whole grids, ``k`` storage chunks along time.

    Storage chunks are small (a fraction of a box); one dask task per storage chunk would make
    the task graph, not the data, the cost. A task instead covers whole latitude-longitude grids
    and a multiple of the storage time chunk (so every write is aligned), about ``target_bytes``.
    """
    per_step = max(1, sum(int(np.prod([v.sizes[d] for d in v.dims if d != "time"])) * 4
                          for v in ds.data_vars.values()))
    steps = max(time_chunk, (target_bytes // per_step) // time_chunk * time_chunk)
    chunks = {"time": int(steps), "latitude": -1, "longitude": -1, "level": -1, "member": 1}
    return {dim: size for dim, size in chunks.items() if dim in ds.dims}


def _stored_task_chunks(path: str | Path) -> dict[str, int]:
    """The :func:`_task_chunks` of a written store, from its storage time chunk."""
    stored = xr.open_zarr(path, consolidated=True, chunks=None)
    time_chunk = max(int(v.encoding["chunks"][v.dims.index("time")]) for v in stored.data_vars.values())
    return _task_chunks(stored, time_chunk)


def _open_for_reduction(path: str | Path, task: dict[str, int]) -> xr.Dataset:
    """A written store opened lazily in the dask chunks ``task`` of :func:`_task_chunks`.

    The chunks depend only on the store's shape and storage chunks, so every reduction of a store
    sums in the same order and gives the same statistics.
    """
    return xr.open_zarr(path, consolidated=True, chunks=task)


def _finalise(path: Path, attrs: dict) -> None:
    """Add the store attributes that mark it complete, and reconsolidate metadata."""
    import zarr

    group = zarr.open_group(path, mode="r+")
    fields = [
        name
        for name, array in group.arrays()
        if name not in ("time", "level", "latitude", "longitude", "member")
    ]
    level_kind = group["level"].attrs.get("level_kind", "pressure") if "level" in group else "surface"
    members = group["member"].shape[0] if "member" in group else 1
    group.attrs.update(
        {
            **attrs,
            "atmorep_fields": sorted(fields),
            "atmorep_level_kind": level_kind,
            "atmorep_members": int(members),
            "atmorep_format": STORE_FORMAT,
            "Conventions": "CF-1.8",
        }
    )
    zarr.consolidate_metadata(path)


def update_statistics(path: str | Path) -> Path:
    """Recompute and store the statistics of an existing store (``atmorep data stats``)."""
    import zarr

    store = Store(path)  # validates that it is a complete store
    ds = _open_for_reduction(store.path, _stored_task_chunks(store.path))
    statistics = compute_statistics(ds)
    group = zarr.open_group(store.path, mode="r+")
    group.attrs["atmorep_statistics"] = json.dumps(statistics.to_dict())
    zarr.consolidate_metadata(store.path)
    return Path(path)
