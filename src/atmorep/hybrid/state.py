"""The truth on the core's grid, and the one conversion between physical fields and core states.

Physical fields are atmorep's layout: ``[..., C, H, W]`` with latitude ascending, channels
:func:`channel_names` - ``u``, ``v``, ``t`` on every level (top first), then ``lnsp`` (the natural
logarithm of surface pressure in Pa). Units are SI (m s-1, K). :class:`StateConverter` maps them
to the core's modal states and back; :func:`read_truth` reads a period of a sigma-level run (the
jcm corpus) and brings it onto the core's grid by spectral truncation: vorticity, divergence and
the scalars are analysed on the truth's Gaussian grid, their coefficients beyond the core's
truncation dropped and synthesised on the core's grid. On the truth's own grid it is the identity
up to round-off.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from dinosaur_torch import primitive_equations, scales, sigma_coordinates, spherical_harmonic
from torch import nn

from atmorep.errors import DataError
from atmorep.hybrid.core import DynamicalCore, State, gaussian_truncation, grid_spec, sigma_boundaries
from atmorep.numerics.latitude import latitude_weights

LEVEL_FIELDS = ("u", "v", "t")
FIELDS = (*LEVEL_FIELDS, "sp", "z")  # read from the truth; z only for the orography


def channel_names(sigma: np.ndarray) -> list[str]:
    """The channel names of physical fields: ``u@0.95`` ..., then ``lnsp``."""
    return [f"{field}@{level:g}" for field in LEVEL_FIELDS for level in sigma] + ["lnsp"]


class StateConverter(nn.Module):
    """Physical fields ``[..., 3L + 1, H, W]`` (SI) to modal core states and back, on the core's grid."""

    def __init__(self, core: DynamicalCore) -> None:
        super().__init__()
        self.grid = core.grid
        self.layers = core.coords.vertical.layers
        physics = core.physics
        self.speed = physics.nondimensionalize(1 * scales.units.meter / scales.units.second)
        self.kelvin = physics.nondimensionalize(1 * scales.units.degK)
        self.log_pascal = float(np.log(physics.nondimensionalize(1 * scales.units.pascal)))
        self.reference = core.spec.reference_temperature * self.kelvin

    def to_state(self, fields: torch.Tensor) -> State:
        """The modal state of physical fields ``[..., 3L + 1, H, W]``."""
        layers = self.layers
        nodal = fields.transpose(-1, -2)  # [..., C, W, H]: dinosaur's nodal layout
        u, v, t = (nodal[..., k * layers:(k + 1) * layers, :, :] for k in range(3))
        vorticity, divergence = self.grid.uv_nodal_to_vor_div_modal(u * self.speed, v * self.speed)
        return State(vorticity=vorticity, divergence=divergence,
                     temperature_variation=self.grid.to_modal(t * self.kelvin - self.reference),
                     log_surface_pressure=self.grid.to_modal(nodal[..., -1:, :, :] + self.log_pascal),
                     sim_time=0.0)

    def to_fields(self, state: State) -> torch.Tensor:
        """The physical fields ``[..., 3L + 1, H, W]`` of a modal state."""
        u, v = self.grid.vor_div_to_uv_nodal(state.vorticity, state.divergence)
        t = (self.grid.to_nodal(state.temperature_variation) + self.reference) / self.kelvin
        lnsp = self.grid.to_nodal(state.log_surface_pressure) - self.log_pascal
        nodal = torch.cat([u / self.speed, v / self.speed, t, lnsp], dim=-3)  # [..., C, W, H]
        return nodal.transpose(-1, -2)


@dataclass
class Truth:
    """A period of the truth on the core's grid.

    Attributes:
        times: valid times ``[T]``, one hybrid interval apart.
        fields: physical fields ``[T, 3L + 1, H, W]`` (float32, SI, see the module docstring).
        sigma: layer centres ``[L]``.
        orography: surface height in metres ``[H, W]`` (time mean of what the run's hydrostatic
            geopotential implies at the lowest level).
        latitudes, longitudes: the core grid's coordinates in degrees.
    """

    times: np.ndarray
    fields: torch.Tensor
    sigma: np.ndarray
    orography: np.ndarray
    latitudes: np.ndarray
    longitudes: np.ndarray

    def weights(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Latitude weights ``[H, 1]`` of the grid (mean 1), to broadcast against ``[..., H, W]``."""
        return torch.as_tensor(latitude_weights(self.latitudes), dtype=dtype)[:, None]


class _SpectralRegrid:
    """Fields on one Gaussian grid to another by truncating their spherical-harmonic coefficients."""

    def __init__(self, source: int, target: int) -> None:
        if target > source:
            raise DataError(f"hybrid: the core's truncation T{target} is finer than the truth's T{source}")
        self.source = spherical_harmonic.Grid(grid_spec(source), dtype=torch.float64)
        self.target = spherical_harmonic.Grid(grid_spec(target), dtype=torch.float64)
        self.modes = self.target.modal_shape

    def _cut(self, modal: torch.Tensor) -> torch.Tensor:
        """Coefficients up to the target's truncation; its extra total wavenumber (kept by dinosaur for
        the wind transforms, zeroed by every core step) is zeroed here too, so that the core does not
        remove it in its first step - in surface pressure that alone is several hPa."""
        return self.target.clip_wavenumbers(modal[..., : self.modes[0], : self.modes[1]])

    def scalar(self, field: np.ndarray) -> np.ndarray:
        """``[..., H, W]`` on the source grid to ``[..., H', W']`` on the target grid."""
        nodal = torch.as_tensor(np.asarray(field, np.float64)).transpose(-1, -2)
        return self.target.to_nodal(self._cut(self.source.to_modal(nodal))).transpose(-1, -2).numpy()

    def wind(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Winds ``[..., H, W]`` through their vorticity and divergence."""
        u, v = (torch.as_tensor(np.asarray(x, np.float64)).transpose(-1, -2) for x in (u, v))
        vorticity, divergence = self.source.uv_nodal_to_vor_div_modal(u, v)
        u, v = self.target.vor_div_to_uv_nodal(self._cut(vorticity), self._cut(divergence))
        return u.transpose(-1, -2).numpy(), v.transpose(-1, -2).numpy()


def surface_height(z: np.ndarray, t: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Surface height ``[..., H, W]`` (m) from geopotential and temperature at the lowest layer.

    The core's hydrostatic discretisation puts the lowest layer ``R alpha_L T_L`` above the surface
    (``alpha_L = -ln sigma_L``, Durran 8.6.5), so ``Phi_s = Phi_L - R alpha_L T_L``.
    """
    coordinates = sigma_coordinates.SigmaCoordinates(sigma_boundaries(sigma))
    alpha = primitive_equations.get_sigma_ratios(coordinates)[-1]
    gas = scales.IDEAL_GAS_CONSTANT.to("J / kg / K").magnitude
    gravity = scales.GRAVITY_ACCELERATION.to("m / s**2").magnitude
    return (z - gas * alpha * t) / gravity


def read_truth(path: str | Path, start: str | None, end: str | None, truncation: int,
               interval_hours: float) -> Truth:
    """A period ``[start, end]`` of a sigma-level run on the grid of truncation ``truncation``.

    Args:
        path: a store or file atmorep reads (``atmorep data simulate`` writes one) holding u, v, t,
            z on all sigma levels and sp, on a Gaussian grid.
        start, end: the period (inclusive: an end date includes its whole day), ISO dates or times;
            None for the store's first or last time.
        truncation: the core's truncation.
        interval_hours: the hybrid step; the truth's times must include every multiple of it.

    Raises:
        DataError: a field is missing or has NaNs, levels are not sigma, the grid is not Gaussian, the
            period is empty, or the times do not fall on the interval.
    """
    from atmorep.data.sources import open_dataset

    if not Path(path).exists():
        raise DataError(f"{path}: no such store; make a sigma-level run with: atmorep data simulate {path} "
                        "--interval 6 --fields u,v,t,z,sp")
    ds = open_dataset(path, fields=list(FIELDS))
    missing = [name for name in FIELDS if name not in ds]
    if missing:
        raise DataError(f"{path}: the hybrid model needs fields {', '.join(FIELDS)}; "
                        f"missing {', '.join(missing)}")
    if ds["level"].attrs.get("level_kind") != "sigma":
        raise DataError(f"{path}: levels are {ds['level'].attrs.get('level_kind')}; the hybrid core needs "
                        "sigma levels (a jcm run: atmorep data simulate)")
    ds = ds.sel(time=slice(start, end))
    ds = _every(ds, interval_hours, path)
    sigma = ds["level"].values.astype(np.float64)
    regrid = _SpectralRegrid(gaussian_truncation(ds.latitude.values, ds.longitude.values), truncation)
    values = {name: ds[name].values.astype(np.float64) for name in FIELDS}
    for name, value in values.items():
        if not np.all(np.isfinite(value)):
            raise DataError(f"{path}: field '{name}' has NaNs in {start} .. {end}; the hybrid model needs "
                            "complete fields")
    u, v = regrid.wind(values["u"], values["v"])
    t = regrid.scalar(values["t"])
    lnsp = regrid.scalar(np.log(values["sp"]))[:, None]
    orography = regrid.scalar(surface_height(values["z"][:, -1], values["t"][:, -1], sigma).mean(axis=0))
    fields = torch.as_tensor(np.concatenate([u, v, t, lnsp], axis=1), dtype=torch.float32)
    target = regrid.target.spec
    return Truth(times=ds.time.values, fields=fields, sigma=sigma, orography=orography,
                 latitudes=np.rad2deg(target.latitudes), longitudes=np.rad2deg(target.longitudes))


def _every(ds: xr.Dataset, interval_hours: float, path: str | Path) -> xr.Dataset:
    """The times of ``ds`` one interval apart, from its first time."""
    if ds.sizes["time"] < 2:
        raise DataError(f"{path}: the period holds {ds.sizes['time']} time(s); expected at least two")
    step = (ds.time.values[1] - ds.time.values[0]) / np.timedelta64(1, "s") / 3600.0
    ratio = interval_hours / step
    if ratio < 1 or abs(ratio - round(ratio)) > 1e-9:
        raise DataError(f"{path}: times are {step:g} h apart; the hybrid step of {interval_hours:g} h must "
                        "be a multiple of that")
    spacing = np.diff(ds.time.values) / np.timedelta64(1, "s") / 3600.0
    if np.any(np.abs(spacing - step) > 1e-6):
        gap = int(np.argmax(np.abs(spacing - step) > 1e-6))
        raise DataError(f"{path}: times are not evenly {step:g} h apart: {spacing[gap]:g} h after "
                        f"{str(ds.time.values[gap])[:16]}; the hybrid model needs a complete record")
    return ds.isel(time=slice(None, None, round(ratio)))
