"""Coarse-graining: a dataset averaged conservatively onto a coarser latitude-longitude grid.

A reanalysis is a smoothed record of the real atmosphere; the embedded analogue is a fine simulation
(the "nature run", e.g. T63) averaged onto a coarse grid (e.g. the T31 Gaussian grid of the default
corpus). The average is area-conservative (:mod:`xarray_regrid`): every coarse cell holds the
area-weighted mean of the fine cells it overlaps, so area means are kept exactly and the scales the
coarse grid cannot hold are removed rather than aliased.

The target is named by a Gaussian truncation (:data:`GAUSSIAN_LATITUDES`, the grids of
``atmorep data simulate --resolution``) or taken from a store's coordinates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from atmorep.errors import DataError

# latitudes of the simulator's Gaussian grids (twice as many longitudes)
GAUSSIAN_LATITUDES = {"T21": 32, "T31": 48, "T42": 64, "T63": 96}


def gaussian_grid(name: str) -> xr.Dataset:
    """The Gaussian grid of a truncation: latitudes ascending (Gauss-Legendre nodes), longitudes from 0."""
    if name not in GAUSSIAN_LATITUDES:
        raise DataError(f"grid '{name}': expected one of {list(GAUSSIAN_LATITUDES)} or the path of a store")
    count = GAUSSIAN_LATITUDES[name]
    nodes, _ = np.polynomial.legendre.leggauss(count)  # sin(latitude), ascending
    longitude = np.arange(2 * count) * (360.0 / (2 * count))
    return xr.Dataset(coords={"latitude": np.rad2deg(np.arcsin(nodes)), "longitude": longitude})


def target_grid(grid: str | Path) -> xr.Dataset:
    """The grid named ``grid``: a truncation such as ``T31``, or the latitude and longitude of a store."""
    if str(grid) in GAUSSIAN_LATITUDES:
        return gaussian_grid(str(grid))
    path = Path(grid)
    if not path.exists():
        raise DataError(f"grid '{grid}': neither a grid name ({', '.join(GAUSSIAN_LATITUDES)}) nor an "
                        "existing store")
    with xr.open_zarr(path) as store:
        missing = [name for name in ("latitude", "longitude") if name not in store.coords]
        if missing:
            raise DataError(f"grid '{grid}': the store has no coordinate {missing[0]}")
        return xr.Dataset(coords={name: store[name].values for name in ("latitude", "longitude")})


def coarse_grain(ds: xr.Dataset, target: xr.Dataset, origin: str = "<dataset>") -> xr.Dataset:
    """``ds`` averaged conservatively onto ``target``'s latitudes and longitudes.

    Raises:
        DataError: the target reaches beyond the source (a regional source, a global target), or is
            finer than the source along an axis (averaging would not coarse-grain it).
    """
    for axis in ("latitude", "longitude"):
        source, wanted = ds[axis].values, target[axis].values
        spacing = float(np.median(np.abs(np.diff(source)))) if source.size > 1 else 0.0
        if not (axis == "longitude" and np.ptp(source) + spacing >= 360.0 - 1e-6):  # global: all covered
            reach = spacing / 2 + 1e-6
            if wanted.min() < source.min() - reach or wanted.max() > source.max() + reach:
                raise DataError(f"{origin}: the target {axis}s {wanted.min():.2f}..{wanted.max():.2f} reach "
                                f"beyond the source's {source.min():.2f}..{source.max():.2f}")
        target_spacing = float(np.median(np.abs(np.diff(wanted)))) if wanted.size > 1 else np.inf
        if target_spacing < spacing * (1 - 1e-6):
            raise DataError(f"{origin}: the target grid's {axis} spacing {target_spacing:.3g} deg is finer "
                            f"than the source's {spacing:.3g} deg; coarse-graining needs a coarser grid")
    import xarray_regrid  # noqa: F401  (registers the .regrid accessor)

    attrs = {name: ds[name].attrs for name in ds.data_vars}
    coarse = ds.regrid.conservative(target, latitude_coord="latitude", skipna=False)
    for name, var in coarse.data_vars.items():  # each variable in its source's order of dimensions
        var = var.transpose(*ds[name].dims)
        var.attrs.update(attrs[name])
        coarse[name] = var.astype(ds[name].dtype)
    coarse.attrs = dict(ds.attrs)
    for axis in ("latitude", "longitude"):
        coarse[axis].attrs = dict(ds[axis].attrs)
    return coarse
