"""Another model's forecasts of a simulated truth: the input of model correction on the default corpus.

:func:`simulate_forecasts` re-runs the simulation recorded in a truth store (``atmorep data simulate``;
the run is deterministic, and every re-simulated output time is checked against the store) and, every
``every_hours``, starts a second SPEEDY model with other physics parameters from the truth's state (its
dynamics and physics memory) and integrates it ``every_hours`` ahead. The forecasts are written as a
store of the truth's layout, times, fields and levels: output time ``i`` holds the forecast started at
the last initialisation before it, so every time is covered once, with leads ``1 .. every_hours``
hours (coordinate ``lead_hours`` along ``time``; the first time is the truth itself, lead 0). The store
attribute ``atmorep_forecast`` records the forecast spec and the truth's simulation spec.

Such a store pairs one to one with the truth (same times and grid): training reads it beside the
truth (``data.guide``), inference takes it as the input of the ``correct`` task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from atmorep.data.simulate import (
    COMPLETE_ATTR,
    SPEC_ATTR,
    Physics,
    SimulationSpec,
    _chunk,
    _Integration,
    _intervals,
    _progress_bar,
    _quiet_zarr,
    physics_parameters,
)
from atmorep.errors import DataError
from atmorep.io import atomic_directory

FORECAST_ATTR = "atmorep_forecast"
LEAD = "lead_hours"
# the default "other model" of the quickstart's model correction: stronger surface drag, faster
# convection and shallow convection than the truth's SPEEDY defaults (cds 0.001, cdl 0.0024, trcnv 6 h,
# trshc 6 h)
DEFAULT_PHYSICS: Physics = (("surface_flux.cds", 0.003), ("surface_flux.cdl", 0.006),
                            ("convection.trcnv", 3.0), ("vertical_diffusion.trshc", 3.0))


def forecast_physics(physics: Physics) -> Physics:
    """``physics`` as ``(name, float)`` pairs, checked: at least one, every name a SPEEDY parameter."""
    physics = tuple((str(name), float(value)) for name, value in physics)
    if not physics:
        raise DataError("forecast physics: give at least one parameter that differs from the truth's, or "
                        "the forecasts are the truth")
    physics_parameters(physics)  # names are checked
    return physics


@dataclass(frozen=True)
class ForecastSpec:
    """Which forecasts of the truth to make.

    Attributes:
        every_hours: hours between initialisations, and the longest lead (a multiple of the truth's
            output interval).
        physics: ``(group.parameter, value)`` of jcm's SPEEDY parameters that differ from the truth's.
    """

    every_hours: int = 12
    physics: Physics = DEFAULT_PHYSICS

    def __post_init__(self) -> None:
        if int(self.every_hours) != self.every_hours or self.every_hours < 1:
            raise DataError(f"forecast every_hours: expected a positive integer, got {self.every_hours}")
        object.__setattr__(self, "physics", forecast_physics(self.physics))

    def to_dict(self) -> dict[str, Any]:
        return {"every_hours": int(self.every_hours), "physics": [list(item) for item in self.physics]}


def truth_spec(truth: Path) -> SimulationSpec:
    """The simulation spec recorded in a complete truth store; DataError otherwise."""
    import zarr

    try:
        attrs = zarr.open_group(truth, mode="r", use_consolidated=False).attrs
        spec = SimulationSpec.from_dict(json.loads(attrs[SPEC_ATTR]))
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise DataError(f"{truth}: not a store of 'atmorep data simulate' (no readable '{SPEC_ATTR}' "
                        "attribute); forecasts start from the states of a simulation it made") from error
    if attrs.get(COMPLETE_ATTR) is not True:
        raise DataError(f"{truth}: the simulation is not complete; finish it with atmorep data simulate "
                        "first")
    return spec


def simulate_forecasts(truth: Path, out: Path, forecast: ForecastSpec, *, progress: bool = True,
                       overwrite: bool = False) -> Path:
    """Write the forecasts of ``forecast`` started from the truth simulation in ``truth`` to ``out``.

    Raises:
        DataError: ``truth`` is not a complete simulation store, the initialisation interval is not a
            multiple of its output interval, ``out`` exists (without ``overwrite``), or the
            re-simulation does not reproduce the truth store.
    """
    truth, out = Path(truth), Path(out)
    spec = truth_spec(truth)
    steps = forecast.every_hours * 3600 / spec.interval_seconds
    if steps != int(steps):
        raise DataError(f"forecast every_hours: {forecast.every_hours} h is not a multiple of the truth's "
                        f"output interval ({spec.output_interval_hours} h)")
    if out.exists() and not overwrite:
        raise DataError(f"output '{out}' already exists (use --overwrite to replace it)")
    steps = int(steps)
    stored = xr.open_zarr(truth, consolidated=True)
    origin = str(spec.origin())
    run = _Integration(spec.resolution, origin, sst_offset=spec.sst_offset)
    other = _Integration(spec.resolution, origin, forecast.physics, sst_offset=spec.sst_offset)
    attrs = {FORECAST_ATTR: json.dumps({**forecast.to_dict(), "truth": spec.to_dict()}),
             "title": f"forecasts of the simulation {truth.name} by SPEEDY with other physics",
             "source": f"{stored.attrs.get('source', 'jcm')}; physics changed: "
                       + ", ".join(f"{name}={value:g}" for name, value in forecast.physics)}
    with _progress_bar(progress, spec.spinup_days + 2 * spec.days, 0.0) as advance, \
            atomic_directory(out, overwrite=overwrite) as tmp:
        spinup = _intervals(spec, "spinup_days")
        if spinup:
            run.advance(spinup, spec.interval_seconds, ())
        advance(spec.spinup_days)
        run.perturb(spec.seed, spec.perturbation)
        first = _checked(run, spec, 0, 1, stored)  # the first output time: the truth, lead 0
        _write(tmp, first.assign_coords({LEAD: ("time", np.zeros(1, np.int64))}), attrs, new=True)
        done = 1
        while done < spec.frames:
            count = min(steps, spec.frames - done)
            other.take_state(run)
            guess = _chunk(other, spec, done, count)
            leads = (np.arange(1, count + 1) * spec.output_interval_hours).astype(np.int64)
            _write(tmp, guess.assign_coords({LEAD: ("time", leads)}), attrs, new=False)
            _checked(run, spec, done, count, stored)
            done += count
            advance(2 * count * spec.interval_seconds / 86400)
    return out


def _checked(run: _Integration, spec: SimulationSpec, first: int, count: int,
             stored: xr.Dataset) -> xr.Dataset:
    """Advance the truth ``count`` output times and check them against the store."""
    chunk = _chunk(run, spec, first, count)
    for name in spec.fields:
        expected = stored[name].isel(time=slice(first, first + count)).values
        if not np.array_equal(chunk[name].values, expected, equal_nan=True):
            raise DataError(f"re-simulating the truth does not reproduce its '{name}' at "
                            f"{str(chunk.time.values[0])[:16]} (another jcm version or platform?); "
                            "simulate the truth again on this machine")
    return chunk


def _write(path: Path, chunk: xr.Dataset, attrs: dict[str, Any], *, new: bool) -> None:
    kept = {key: value for key, value in chunk.attrs.items() if key != SPEC_ATTR}  # not a simulation store
    chunk = chunk.drop_attrs().assign_attrs({**kept, **attrs, COMPLETE_ATTR: True})
    with _quiet_zarr():
        if new:
            encoding: dict[str, dict] = {name: {"chunks": (1, *var.shape[1:])}
                                         for name, var in chunk.data_vars.items()}
            encoding["time"] = {"units": f"hours since {str(chunk.time.values[0])[:19]}", "dtype": "int64",
                                "calendar": "proleptic_gregorian"}
            chunk.to_zarr(path, mode="w", encoding=encoding, consolidated=True, zarr_format=3)
        else:
            chunk.to_zarr(path, append_dim="time", consolidated=True)


__all__ = ["DEFAULT_PHYSICS", "FORECAST_ATTR", "ForecastSpec", "LEAD", "simulate_forecasts", "truth_spec"]
