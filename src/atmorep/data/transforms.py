"""Value transforms applied when a store is prepared, for fields whose distribution a network learns badly.

Accumulated precipitation (``tp``, metres of water per output interval) is zero most of the time
and heavy-tailed when it is not; normalised by a mean and a standard deviation its rare large
values dominate the loss. ``log1p`` stores ``y = log(1 + x / scale)`` instead (scale 1e-4 m =
0.1 mm by default: 0.1 mm -> 0.69, 1 mm -> 2.4, 10 mm -> 4.6), after clipping the small negative
values that GRIB packing leaves to 0. The stored variable says so in its attributes
(``atmorep_transform``, ``atmorep_transform_scale``, ``atmorep_physical_units``; its ``units`` is
``1``), training, inference and evaluation work in the transformed values, and :func:`to_physical`
inverts any store or prediction store that carries these attributes. NaN stays NaN.

On the command line: ``atmorep data prepare SRC OUT --transform tp=log1p`` (or ``tp=log1p:0.001``
for another scale, in the field's units).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from atmorep.errors import DataError
from atmorep.fields import field_spec

TRANSFORMS = ("log1p",)
DEFAULT_SCALE = {"log1p": 1e-4}
TRANSFORM_ATTRS = ("atmorep_transform", "atmorep_transform_scale", "atmorep_physical_units")


def parse_transform(text: str, field: str) -> tuple[str, float]:
    """``"log1p"`` or ``"log1p:0.001"`` -> (name, scale)."""
    name, _, scale = text.partition(":")
    if name not in TRANSFORMS:
        raise DataError(f"transform '{name}' of field '{field}' is unknown; expected one of "
                        f"{', '.join(TRANSFORMS)}")
    try:
        value = float(scale) if scale else DEFAULT_SCALE[name]
    except ValueError:
        value = -1.0
    if not np.isfinite(value) or value <= 0:
        raise DataError(f"transform '{text}' of field '{field}': the scale must be a positive number")
    return name, value


def apply_transforms(ds: xr.Dataset, transforms: dict[str, str], origin: str) -> xr.Dataset:
    """``ds`` with each field of ``transforms`` (``{field: "log1p[:scale]"}``) transformed, lazily."""
    missing = [name for name in transforms if name not in ds.data_vars]
    if missing:
        raise DataError(f"{origin}: cannot transform field '{missing[0]}' (--transform): not among the "
                        f"fields ({', '.join(map(str, ds.data_vars))})")
    out = ds.copy()
    for field, text in transforms.items():
        name, scale = parse_transform(text, field)
        units = str(ds[field].attrs.get("units") or field_spec(field).units)
        values = np.log1p(ds[field].clip(min=0) / scale).astype(ds[field].dtype)
        out[field] = values.assign_attrs({
            **ds[field].attrs, "units": "1", "atmorep_transform": name, "atmorep_transform_scale": scale,
            "atmorep_physical_units": units,
            "long_name": f"log(1 + {field_spec(field).long_name.replace('_', ' ')} / {scale:g} {units})"})
    return out


def inverse(values: np.ndarray | xr.DataArray, attrs: dict) -> np.ndarray | xr.DataArray:
    """Physical values of transformed ``values`` whose variable has the attributes ``attrs``."""
    name = attrs.get("atmorep_transform")
    if name is None:
        return values
    if name not in TRANSFORMS:
        raise DataError(f"transform '{name}' is unknown; expected one of {', '.join(TRANSFORMS)}")
    return np.expm1(values) * float(attrs["atmorep_transform_scale"])


def to_physical(ds: xr.Dataset) -> xr.Dataset:
    """A store or prediction store with every transformed field back in physical units (lazy)."""
    out = ds.copy()
    for name, var in ds.data_vars.items():
        if "atmorep_transform" in var.attrs:
            attrs = {key: value for key, value in var.attrs.items() if key not in TRANSFORM_ATTRS}
            attrs |= {"units": var.attrs["atmorep_physical_units"],
                      "long_name": field_spec(str(name)).long_name}
            physical = inverse(var, var.attrs)
            physical.attrs = attrs
            out[name] = physical
    return out
