"""Which horizontal grids atmorep reads: regular latitude-longitude and Gaussian, nothing else.

Boxes are cut by index on a latitude-longitude grid, so a dataset on any other grid must be regridded
before it is prepared. :func:`check_grid` recognises the other grids real files come on, from the
GRIB ``gridType`` that cfgrib records, a CF ``grid_mapping``, two-dimensional latitude and
longitude (curvilinear) or latitude and longitude along one dimension (unstructured), and names the
grid in a one-line error.
"""

from __future__ import annotations

import xarray as xr

from atmorep.errors import DataError

LATITUDE_NAMES = ("latitude", "lat")
LONGITUDE_NAMES = ("longitude", "lon")
REGULAR_GRIB_GRIDS = ("regular_ll", "regular_gg")
REGULAR_CF_MAPPINGS = ("latitude_longitude",)
GRID_NAMES = {  # GRIB gridType and CF grid_mapping_name -> words
    "lambert": "Lambert conformal", "lambert_conformal_conic": "Lambert conformal",
    "rotated_ll": "rotated-pole latitude-longitude",
    "rotated_latitude_longitude": "rotated-pole latitude-longitude",
    "rotated_gg": "rotated-pole Gaussian", "reduced_gg": "reduced Gaussian",
    "reduced_ll": "reduced latitude-longitude",
    "polar_stereographic": "polar stereographic", "mercator": "Mercator", "healpix": "HEALPix",
    "lambert_azimuthal_equal_area": "Lambert azimuthal equal-area", "space_view": "satellite view",
    "unstructured_grid": "unstructured", "sh": "spherical harmonic coefficients",
}
REGRID = ("regrid it to a regular latitude-longitude grid first (e.g. with xesmf, or `cdo remapbil`), "
          "then prepare the regridded file")
UNSTRUCTURED_DIMS = ("values", "cell", "cells", "ncells", "ncol", "nCells", "node")


def check_grid(ds: xr.Dataset, origin: str) -> None:
    """Raise a :class:`DataError` naming the grid if ``ds`` is not on a regular latitude-longitude grid."""
    for name, var in ds.data_vars.items():
        grid_type = var.attrs.get("GRIB_gridType")
        if grid_type and grid_type not in REGULAR_GRIB_GRIDS:
            _reject(origin, f"variable '{name}' is on a GRIB grid of type '{grid_type}'", grid_type)
        mapping = var.attrs.get("grid_mapping")
        if mapping and str(mapping) in ds.variables:
            kind = ds[str(mapping)].attrs.get("grid_mapping_name")
            if kind and kind not in REGULAR_CF_MAPPINGS:
                _reject(origin, f"variable '{name}' is on a grid of grid_mapping_name '{kind}'", str(kind))
    latitude = next((ds[n] for n in LATITUDE_NAMES if n in ds.coords), None)
    longitude = next((ds[n] for n in LONGITUDE_NAMES if n in ds.coords), None)
    if latitude is not None and longitude is not None:
        if latitude.ndim > 1 or longitude.ndim > 1:
            _reject(origin, f"latitude and longitude are 2-D along {latitude.dims} (a curvilinear grid)")
        if latitude.ndim == 1 and latitude.dims == longitude.dims:
            _reject(origin, f"latitude and longitude both lie along '{latitude.dims[0]}' (an unstructured "
                    "grid: reduced Gaussian, HEALPix, icosahedral ...)")
    unstructured = [dim for dim in ds.dims if dim in UNSTRUCTURED_DIMS]
    if unstructured and (latitude is None or longitude is None):
        _reject(origin, f"the data lie along '{unstructured[0]}' without latitude and longitude axes (an "
                "unstructured grid)")


def _reject(origin: str, what: str, kind: str | None = None) -> None:
    words = f" ({GRID_NAMES[kind]})" if kind in GRID_NAMES else ""
    raise DataError(f"{origin}: {what}{words}, not a regular latitude-longitude grid; {REGRID}")
