"""Observations at sites: a gridded run sampled at fixed points, with measurement noise and gaps.

The analogue of station data for training and scoring on observations: ``sites`` grid points of the
source (the "nature run", e.g. T63, whose orography and coasts the coarse corpus cannot show) are
drawn once, uniformly over the sphere's area, land and sea alike. Every time, each site reports the
source's value of each field (at one level) plus Gaussian noise of a given standard deviation, and is
missing (NaN) with probability ``missing``, independently per time and site.

The store (zarr) holds ``<field>(time, station)`` float32 with NaN where missing, and the coordinates
``station`` (0..S-1), ``latitude(station)`` and ``longitude(station)`` in degrees; the attribute
``atmorep_observations`` records the spec, ``source`` the store sampled.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from atmorep.errors import DataError
from atmorep.io import atomic_directory

OBSERVATIONS_ATTR = "atmorep_observations"
STATION = "station"
DEFAULT_NOISE = {"t": 0.5, "u": 1.0, "v": 1.0, "q": 5e-4, "sp": 50.0, "z": 10.0}  # SI units, a good station's


@dataclass(frozen=True)
class ObservationSpec:
    """Which sites, fields, noise and gaps.

    Attributes:
        sites: number of distinct sites (grid points of the source).
        fields: the fields observed.
        level: the level of level fields (default: the one nearest the surface, the largest sigma
            or pressure value).
        noise: standard deviation of the measurement noise per field, in its units (default
            :data:`DEFAULT_NOISE`).
        missing: probability that a value is missing, in [0, 1).
        seed: seed of the sites, the noise and the gaps.
    """

    sites: int = 300
    fields: tuple[str, ...] = ("t",)
    level: float | None = None
    noise: dict[str, float] = field(default_factory=dict)
    missing: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if int(self.sites) != self.sites or self.sites < 1:
            raise DataError(f"observations: sites must be a positive integer, got {self.sites}")
        if not 0.0 <= self.missing < 1.0:
            raise DataError(f"observations: missing must be a fraction in [0, 1), got {self.missing}")
        if not self.fields or len(set(self.fields)) != len(self.fields):
            raise DataError(f"observations: fields must be distinct names, got {list(self.fields)}")
        unknown = sorted(set(self.noise) - set(self.fields))
        if unknown:
            raise DataError(f"observations: noise given for {unknown}, which are not observed fields "
                            f"{list(self.fields)}")
        for name in self.fields:
            std = self.noise.get(name, DEFAULT_NOISE.get(name))
            if std is None:
                raise DataError(f"observations: no default noise for field '{name}'; give it, e.g. "
                                f"--noise {name}=0.1")
            if not std >= 0:
                raise DataError(f"observations: noise of '{name}' must be >= 0, got {std}")

    def std(self, name: str) -> float:
        return float(self.noise.get(name, DEFAULT_NOISE.get(name, 0.0)))


def draw_sites(latitude: np.ndarray, longitude: np.ndarray, count: int,
               rng: np.random.Generator) -> np.ndarray:
    """``[count, 2]`` distinct (row, column) grid indices, drawn with probabilities proportional to area."""
    area = np.cos(np.deg2rad(latitude))[:, None] * np.ones(longitude.size)  # [H, W]
    area = np.clip(area, 0.0, None).ravel()
    available = int((area > 0).sum())
    if count > available:
        raise DataError(f"observations: {count} sites asked for, but the grid has only {available} points "
                        "off the poles")
    flat = rng.choice(area.size, size=count, replace=False, p=area / area.sum())
    return np.stack(np.unravel_index(np.sort(flat), (latitude.size, longitude.size)), axis=1)


def observe(source: str | Path, out: str | Path, spec: ObservationSpec, overwrite: bool = False) -> Path:
    """Write the observation store of ``spec`` sampled from the gridded store ``source``."""
    source, out = Path(source), Path(out)
    if out.exists() and not overwrite:
        raise DataError(f"output store '{out}' already exists (use --overwrite to replace it)")
    try:
        ds = xr.open_zarr(source)
    except (FileNotFoundError, ValueError, KeyError) as error:
        raise DataError(f"{source}: not a readable zarr store ({error})") from None
    for name in ("time", "latitude", "longitude"):
        if name not in ds.coords:
            raise DataError(f"{source}: no coordinate '{name}'; observations need a gridded store with "
                            "time, latitude and longitude")
    missing = [name for name in spec.fields if name not in ds.data_vars]
    if missing:
        raise DataError(f"{source}: no field {missing[0]}; it has {sorted(map(str, ds.data_vars))}")
    rng = np.random.default_rng(spec.seed)
    sites = draw_sites(ds["latitude"].values, ds["longitude"].values, int(spec.sites), rng)
    rows = xr.DataArray(sites[:, 0], dims=STATION)
    columns = xr.DataArray(sites[:, 1], dims=STATION)
    level = _level(ds, spec, source)
    data = {}
    for name in spec.fields:
        var = ds[name]
        if "level" in var.dims:
            var = var.sel(level=level)
        values = var.isel(latitude=rows, longitude=columns).transpose("time", STATION).values
        values = values.astype(np.float64)
        values = values + spec.std(name) * rng.standard_normal(values.shape)
        values[rng.random(values.shape) < spec.missing] = np.nan
        data[name] = xr.DataArray(values.astype(np.float32), dims=("time", STATION),
                                  attrs={**ds[name].attrs, "noise_std": spec.std(name)})
    coords = {"time": ds["time"].values, STATION: np.arange(len(sites)),
              "latitude": (STATION, ds["latitude"].values[sites[:, 0]], dict(ds["latitude"].attrs)),
              "longitude": (STATION, ds["longitude"].values[sites[:, 1]], dict(ds["longitude"].attrs))}
    record = {**asdict(spec), "fields": list(spec.fields), "level": level}
    result = xr.Dataset(data, coords=coords,
                        attrs={OBSERVATIONS_ATTR: json.dumps(record), "source": str(source)})
    if level is not None:
        result.attrs["level"] = level
    with atomic_directory(out, overwrite=overwrite) as tmp:
        result.to_zarr(tmp, consolidated=True)
    return out


def _level(ds: xr.Dataset, spec: ObservationSpec, source: Path) -> float | None:
    """The level observed: the spec's, checked against the store, or the one nearest the surface."""
    if not any("level" in ds[name].dims for name in spec.fields):
        return None
    levels = np.asarray(ds["level"].values, dtype=np.float64)
    if spec.level is None:
        return float(levels.max())  # sigma and pressure grow downwards
    if not np.any(np.isclose(levels, spec.level)):
        raise DataError(f"{source}: no level {spec.level:g}; it has {levels.tolist()}")
    return float(levels[np.isclose(levels, spec.level)][0])
