"""The differentiable dynamical core: dry primitive equations on sigma levels, Held-Suarez forcing.

Built on ``dinosaur-torch`` (a PyTorch port of the dinosaur spectral core): spherical-harmonic
transforms on a Gaussian grid, the semi-implicit primitive equations on terrain-following sigma
levels, the SIL3 implicit-explicit Runge-Kutta step and an exponential filter of the highest total
wavenumbers. Held-Suarez forcing (Held and Suarez 1994) stands in for physics:

* Rayleigh friction of the winds below ``sigma_b = 0.7``,
  ``k_v = k_f max(0, (sigma - sigma_b) / (1 - sigma_b))``, ``k_f = 1 / day``;
* Newtonian relaxation of temperature to
  ``T_eq = max(200 K, (315 K - 60 K sin^2 phi - 10 K ln(p / p0) cos^2 phi) (p / p0)^kappa)`` at the
  rate ``k_a + (k_s - k_a) max(0, (sigma - sigma_b) / (1 - sigma_b)) cos^4 phi``,
  ``k_a = 1 / 40 days``, ``k_s = 1 / 4 days``.

There is no moisture, radiation, surface flux or convection: a run with full physics (the jcm
corpus) is what the core cannot reproduce, and what a learned correction has to make up.

States are ``dinosaur_torch.primitive_equations.State`` in modal (spherical-harmonic)
coefficients, non-dimensional units, layers top first: vorticity, divergence, temperature minus
the reference temperature ``[..., L, M, N]``, log surface pressure ``[..., 1, M, N]``. Any leading
batch dimensions are carried through. Nodal fields are ``[..., W, H]`` (longitude, latitude
ascending) in dinosaur's layout; :mod:`atmorep.hybrid.state` converts from atmorep's ``[..., H, W]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from dinosaur_torch import (
    coordinate_systems,
    primitive_equations,
    scales,
    sigma_coordinates,
    spherical_harmonic,
    time_integration,
    units,
)
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from atmorep.errors import DataError

State = primitive_equations.State
DAY_SECONDS = 86400.0


class CoreSpec(BaseModel):
    """What the core integrates and how.

    Attributes:
        truncation: the triangular truncation of the core (21 for T21 on 64 x 32 points, 31 for
            T31 on 96 x 48); at most the truth's.
        time_step_minutes: the core's own time step.
        interval_hours: one step of the hybrid model: that many hours of core steps.
        reference_temperature: K, the temperature the semi-implicit step linearises about.
        forcing: ``held-suarez`` or ``none`` (adiabatic, frictionless).
        filter_attenuation: how strongly the exponential filter damps the highest wavenumber of
            vorticity, divergence and temperature per hour (``exp(-attenuation)``); dinosaur's
            default, 16 per 20 minutes, is 48 per hour.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    truncation: int = Field(21, ge=2)
    time_step_minutes: float = Field(60.0, gt=0)
    interval_hours: float = Field(6.0, gt=0)
    reference_temperature: float = Field(288.0, gt=0)
    forcing: Literal["held-suarez", "none"] = "held-suarez"
    filter_attenuation: float = Field(48.0, ge=0)

    @model_validator(mode="after")
    def _whole_steps(self) -> CoreSpec:
        substeps = self.interval_hours * 60.0 / self.time_step_minutes
        if substeps < 1 or abs(substeps - round(substeps)) > 1e-9:
            raise ValueError(f"interval_hours {self.interval_hours:g} must be a whole number of time "
                             f"steps of {self.time_step_minutes:g} minutes")
        return self

    @property
    def substeps(self) -> int:
        return round(self.interval_hours * 60.0 / self.time_step_minutes)


def sigma_boundaries(centers: Sequence[float]) -> np.ndarray:
    """Layer boundaries ``[L + 1]`` from 0 to 1 whose midpoints are the given layer centres ``[L]``.

    Raises:
        DataError: the centres are not ascending in (0, 1), or no such boundaries exist (the
            centres are not midpoints of layers that fill [0, 1], as on jcm's levels).
    """
    centers = np.asarray(centers, np.float64)
    if centers.ndim != 1 or centers.size == 0 or np.any(centers <= 0) or np.any(centers >= 1) \
            or np.any(np.diff(centers) <= 0):
        raise DataError(f"hybrid core: sigma levels {centers.tolist()} must ascend within (0, 1)")
    boundaries = np.zeros(centers.size + 1)
    for k, center in enumerate(centers):
        boundaries[k + 1] = 2 * center - boundaries[k]
    if not np.isclose(boundaries[-1], 1.0, atol=1e-4) or np.any(np.diff(boundaries) <= 0):
        raise DataError(f"hybrid core: sigma levels {centers.tolist()} are not the midpoints of layers "
                        "from 0 to 1; the core needs all levels of a sigma-level run")
    boundaries[-1] = 1.0
    return boundaries


class HeldSuarez(nn.Module, time_integration.ExplicitODE):
    """Held-Suarez tendencies of a modal state (see the module docstring), as buffers on its device."""

    def __init__(self, coords: coordinate_systems.CoordinateSystem, physics: units.SimUnits,
                 reference_temperature: float) -> None:
        super().__init__()
        self.coords = coords
        self.kappa = physics.kappa
        day = physics.nondimensionalize(1 * scales.units.day)
        kelvin = physics.nondimensionalize(1 * scales.units.degK)
        sigma = coords.vertical.coordinates.centers[:, None, None]  # [L, 1, 1]
        _, sin_lat = coords.horizontal.spec.nodal_mesh  # [W, H]
        cos2 = 1.0 - sin_lat**2
        boundary_layer = np.maximum(0.0, (sigma - 0.7) / 0.3)
        ka, ks = 1.0 / (40.0 * day), 1.0 / (4.0 * day)
        tensor = coords.horizontal.cos_lat
        values = {
            "kv": boundary_layer / day,  # [L, 1, 1]
            "kt": ka + (ks - ka) * boundary_layer * cos2**2,  # [L, W, H]
            "sigma": sigma,
            "sin2": sin_lat**2, "cos2": cos2,  # [W, H]
        }
        for name, value in values.items():
            self.register_buffer(name, torch.as_tensor(value, dtype=tensor.dtype, device=tensor.device),
                                 persistent=False)
        self.p0 = physics.nondimensionalize(1e5 * scales.units.pascal)
        self.t_min, self.t_max = 200.0 * kelvin, 315.0 * kelvin
        self.dty, self.dthz = 60.0 * kelvin, 10.0 * kelvin
        self.reference_temperature = reference_temperature * kelvin

    def equilibrium_temperature(self, surface_pressure: torch.Tensor) -> torch.Tensor:
        """``T_eq [..., L, W, H]`` from the nodal surface pressure ``[..., 1, W, H]`` (non-dimensional)."""
        ratio = self.sigma * surface_pressure / self.p0
        profile = self.t_max - self.dty * self.sin2 - self.dthz * torch.log(ratio) * self.cos2
        return torch.clamp(ratio**self.kappa * profile, min=self.t_min)

    def explicit_terms(self, state: State) -> State:
        grid = self.coords.horizontal
        diagnostic = primitive_equations.compute_diagnostic_state(state, self.coords)
        velocity = tuple(grid.to_modal(-self.kv * part / grid.cos_lat**2) for part in diagnostic.cos_lat_u)
        temperature = self.reference_temperature + diagnostic.temperature_variation
        surface_pressure = torch.exp(grid.to_nodal(state.log_surface_pressure))
        heating = -self.kt * (temperature - self.equilibrium_temperature(surface_pressure))
        tendency = State(vorticity=grid.curl_cos_lat(velocity), divergence=grid.div_cos_lat(velocity),
                         temperature_variation=grid.to_modal(heating),
                         log_surface_pressure=torch.zeros_like(state.log_surface_pressure),
                         tracers={name: torch.zeros_like(value) for name, value in state.tracers.items()},
                         sim_time=None if state.sim_time is None else 0.0)
        return grid.clip_wavenumbers(tendency)


def grid_spec(truncation: int, radius: float = 1.0) -> spherical_harmonic.GridSpec:
    """The quadratic Gaussian grid of triangular truncation ``T`` (T21: 64 x 32, T31: 96 x 48)."""
    return spherical_harmonic.GridSpec.construct(max_wavenumber=truncation,
                                                 gaussian_nodes=math.ceil((3 * truncation + 1) / 4),
                                                 radius=radius)


def gaussian_truncation(latitudes: np.ndarray, longitudes: np.ndarray) -> int:
    """The truncation whose quadratic Gaussian grid the coordinates (degrees) are, e.g. 31 for 96 x 48.

    Raises:
        DataError: the coordinates are not such a grid (Gaussian latitudes ascending, longitudes
            equally spaced from 0): the core's transforms need one.
    """
    latitudes, longitudes = np.asarray(latitudes, np.float64), np.asarray(longitudes, np.float64)
    nodes = latitudes.size // 2
    truncation = (4 * nodes - 1) // 3
    expected = grid_spec(truncation) if nodes >= 2 else None
    if expected is None or latitudes.size % 2 or expected.latitude_nodes != latitudes.size \
            or expected.longitude_nodes != longitudes.size \
            or not np.allclose(latitudes, np.rad2deg(expected.latitudes), atol=1e-3) \
            or not np.allclose(longitudes, np.rad2deg(expected.longitudes), atol=1e-3):
        raise DataError(f"hybrid: the grid ({latitudes.size} latitudes x {longitudes.size} longitudes) is "
                        "not a Gaussian grid of a triangular truncation (T21: 32 x 64, T31: 48 x 96, "
                        "latitudes ascending, longitudes from 0); simulate or regrid the truth onto one")
    return truncation


class DynamicalCore(nn.Module):
    """One hybrid step of the core: ``spec.substeps`` SIL3 steps of the forced primitive equations.

    Args:
        sigma: layer centres, ascending (top first) ``[L]``.
        orography: surface height, metres, on the core's grid (:func:`grid_spec`) ``[H, W]``;
            spectrally truncated to the core's modes.
        spec: the core's settings.
        dtype: float32 or float64 (gradient checks).
    """

    def __init__(self, sigma: Sequence[float], orography: np.ndarray, spec: CoreSpec = CoreSpec(),
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.spec = spec
        self.physics = units.SimUnits.from_si()
        grid = spherical_harmonic.Grid(grid_spec(spec.truncation, self.physics.radius), dtype=dtype)
        vertical = sigma_coordinates.SigmaLevels(sigma_coordinates.SigmaCoordinates(sigma_boundaries(sigma)),
                                                 dtype=dtype)
        self.coords = coordinate_systems.CoordinateSystem(grid, vertical)
        orography = np.asarray(orography, np.float64)
        shape = grid.nodal_shape[::-1]
        if orography.shape != shape or not np.all(np.isfinite(orography)):
            raise DataError(f"hybrid core: orography of shape {orography.shape} must be finite on the core's "
                            f"grid {shape} (latitude, longitude)")
        height = torch.as_tensor(orography.T * self.physics.nondimensionalize(1 * scales.units.meter),
                                 dtype=dtype)
        modal_orography = primitive_equations.truncated_modal_orography(height, self.coords)
        layers = len(sigma)
        kelvin = self.physics.nondimensionalize(1 * scales.units.degK)
        reference = np.full(layers, spec.reference_temperature * kelvin)
        self.equations = primitive_equations.PrimitiveEquations(reference, modal_orography, self.coords,
                                                                self.physics)
        self.forcing = HeldSuarez(self.coords, self.physics, spec.reference_temperature) \
            if spec.forcing == "held-suarez" else None
        self.time_step = self.physics.nondimensionalize(spec.time_step_minutes * scales.units.minute)
        equation = time_integration.compose_equations([self.equations, self.forcing]) \
            if self.forcing is not None else self.equations
        per_step = spec.filter_attenuation * spec.time_step_minutes / 60.0
        self._step = time_integration.step_with_filters(
            time_integration.imex_rk_sil3(equation, self.time_step),
            [time_integration.runge_kutta_step_filter(_exponential_filter(grid, per_step))])

    @property
    def grid(self) -> spherical_harmonic.Grid:
        return self.coords.horizontal

    def forward(self, state: State) -> State:
        """The state one hybrid interval (``spec.interval_hours``) later."""
        for _ in range(self.spec.substeps):
            state = self._step(state)
        return state


def _exponential_filter(grid: spherical_harmonic.Grid, attenuation: float):
    """Damp the highest total wavenumbers of vorticity, divergence and temperature by
    ``exp(-attenuation (k / K)^36)`` per step; log surface pressure is left alone.

    Orography forces surface pressure up to the truncation, and a run with full physics keeps that
    balanced small-scale structure (SPEEDY diffuses only the flow and temperature): filtering it here
    moves surface pressure by several hPa within the first hour of a forecast from such a state.
    """
    from dinosaur_torch import filtering

    scale = filtering.exponential_filter(grid, attenuation=attenuation, order=18)

    def apply(state: State) -> State:
        filtered = scale(state)
        return State(vorticity=filtered.vorticity, divergence=filtered.divergence,
                     temperature_variation=filtered.temperature_variation,
                     log_surface_pressure=state.log_surface_pressure, tracers=filtered.tracers,
                     sim_time=state.sim_time)

    return apply
