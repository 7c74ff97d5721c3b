"""jcm forecasts of a simulated truth, started at chosen reference times and run to a chosen lead.

:func:`forecast_cases` re-runs the simulation recorded in a truth store (``atmorep data simulate``)
once through the period the cases need: every re-simulated output time up to the last reference time
is checked against the store, as in :mod:`atmorep.data.model_forecasts`. At each reference time it
starts a second SPEEDY model with other physics (those of
:class:`~atmorep.data.model_forecasts.ForecastSpec`, by default
:data:`~atmorep.data.model_forecasts.DEFAULT_PHYSICS`) from the truth's state, dynamics and physics
memory, integrates it ``lead_hours`` ahead and yields the case; then the truth goes on to the next
reference time. So the truth is integrated once, however many cases branch off it.

A case is a dataset of the chosen fields with dims ``(prediction_timedelta, [level], latitude,
longitude)``, leads ``step_hours .. lead_hours``, in the truth's units, levels and grid. Writing the
cases as a prediction store is :mod:`atmorep.evaluate.physics_baseline`'s job (this layer knows no
prediction store).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from atmorep.data.model_forecasts import DEFAULT_PHYSICS, _checked, forecast_physics, truth_spec
from atmorep.data.simulate import (
    SIGMA_LEVELS,
    Physics,
    SimulationSpec,
    _cf,
    _Integration,
    _intervals,
    _progress_bar,
)
from atmorep.errors import DataError
from atmorep.fields import FIELD_SPECS

_HOUR = np.timedelta64(1, "h")


@dataclass(frozen=True)
class CaseSpec:
    """Which forecasts to start from the truth, and how far to run them.

    Attributes:
        times: reference times (output times of the truth), datetime64[s], strictly increasing.
        lead_hours: the longest lead, a multiple of ``step_hours``.
        step_hours: hours between the written leads, a multiple of the truth's output interval; None
            takes the truth's output interval.
        physics: ``(group.parameter, value)`` of jcm's SPEEDY parameters that differ from the truth's.
        fields: the fields to write, among the truth's; None: all of them.
        levels: the sigma levels to write, among the truth's; None: all of them.
    """

    times: tuple[np.datetime64, ...]
    lead_hours: int
    step_hours: int | None = None
    physics: Physics = DEFAULT_PHYSICS
    fields: tuple[str, ...] | None = None
    levels: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        times = np.asarray(self.times, dtype="datetime64[s]").ravel()
        if not times.size or np.isnat(times).any() or (np.diff(times) <= np.timedelta64(0, "s")).any():
            raise DataError(f"forecast times: expected strictly increasing reference times, "
                            f"got {[str(t) for t in times]}")
        object.__setattr__(self, "times", tuple(times))
        for name in ("lead_hours", "step_hours"):
            value = getattr(self, name)
            if value is not None and (int(value) != value or value < 1):
                raise DataError(f"forecast {name}: expected a positive whole number of hours, got {value}")
        object.__setattr__(self, "physics", forecast_physics(self.physics))
        for name, kind in (("fields", str), ("levels", float)):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(map(kind, getattr(self, name))))


@dataclass(frozen=True)
class _Plan:
    """A :class:`CaseSpec` resolved against the truth's simulation spec."""

    spec: SimulationSpec
    indices: np.ndarray  # [I] output-time index of each reference time
    step_hours: int
    steps: int  # leads per case
    fields: tuple[str, ...]
    levels: list[int]  # indices into the model's levels (SIGMA_LEVELS), ascending

    @property
    def leads(self) -> np.ndarray:
        """``[P]`` timedelta64[ns]: ``step_hours .. lead_hours``."""
        return (np.arange(1, self.steps + 1) * self.step_hours * _HOUR).astype("timedelta64[ns]")

    @property
    def level_values(self) -> tuple[float, ...]:
        """The sigma levels written, ascending."""
        return tuple(float(SIGMA_LEVELS[index]) for index in self.levels)


def plan(truth: Path, cases: CaseSpec) -> _Plan:
    """Check ``cases`` against the truth store's simulation; DataError naming what does not fit."""
    spec = truth_spec(truth)
    interval = spec.output_interval_hours
    step = cases.step_hours or interval
    if step % interval:
        raise DataError(f"forecast step_hours: {step} h is not a multiple of the truth's output interval "
                        f"({interval} h)")
    if cases.lead_hours % step:
        raise DataError(f"forecast lead_hours: {cases.lead_hours} h is not a multiple of the lead step "
                        f"({step} h)")
    times = np.asarray(cases.times, dtype="datetime64[s]")
    offsets = (times - np.datetime64(spec.start, "s")) / np.timedelta64(spec.interval_seconds, "s")
    outside = (offsets < 0) | (offsets > spec.frames - 1) | (offsets != np.round(offsets))
    if outside.any():
        last = spec.times(spec.frames - 1, 1)[0].astype("datetime64[s]")
        raise DataError(f"forecast time {times[outside][0]} is not an output time of the truth "
                        f"({np.datetime64(spec.start, 's')} .. {last} every {interval} h)")
    fields = cases.fields or spec.fields
    unknown = [name for name in fields if name not in spec.fields]
    if unknown or len(set(fields)) != len(fields):
        raise DataError(f"forecast fields: {unknown or list(fields)} are not distinct fields of the truth "
                        f"(available: {list(spec.fields)})")
    levels = cases.levels or spec.levels
    missing = [level for level in levels if not np.isclose(spec.levels, level).any()]
    if missing:
        raise DataError(f"forecast levels: {missing} are not levels of the truth (available: "
                        f"{sorted(spec.levels)})")
    model_levels = sorted(int(np.flatnonzero(np.isclose(SIGMA_LEVELS, level))[0]) for level in levels)
    indices = np.round(offsets).astype(int)
    return _Plan(spec, indices, step, cases.lead_hours // step, tuple(fields), model_levels)


def forecast_cases(truth: Path, cases: CaseSpec, *, progress: bool = True) -> Iterator[
        tuple[np.datetime64, xr.Dataset]]:
    """Yield ``(reference time, forecast)`` for each case of ``cases``, in time order.

    Args:
        truth: a complete store of ``atmorep data simulate``.
        cases: the reference times, lead, physics, fields and levels.
        progress: show a progress bar of simulated days.

    Yields:
        The reference time (datetime64[s]) and the forecast: each field ``[P, (L), H, W]`` float32,
        ``prediction_timedelta`` ``step_hours .. lead_hours``, the truth's units, levels and grid.

    Raises:
        DataError: ``truth`` is not a complete simulation store, the cases do not fit it
            (:func:`plan`), or the re-simulation does not reproduce the truth store.
    """
    truth = Path(truth)
    resolved = plan(truth, cases)
    spec = resolved.spec
    stored = xr.open_zarr(truth, consolidated=True)
    origin = str(spec.origin())
    run = _Integration(spec.resolution, origin, sst_offset=spec.sst_offset)
    other = _Integration(spec.resolution, origin, cases.physics, sst_offset=spec.sst_offset)
    day = 86400 / spec.interval_seconds  # output intervals per day
    cases_days = len(resolved.indices) * cases.lead_hours / 24
    total = spec.spinup_days + (resolved.indices[-1] + 1) / day + cases_days
    with _progress_bar(progress, total, 0.0) as advance:
        spinup = _intervals(spec, "spinup_days")
        if spinup:
            run.advance(spinup, spec.interval_seconds, ())
        advance(spec.spinup_days)
        run.perturb(spec.seed, spec.perturbation)
        done, longest = 0, max(1, _intervals(spec, "chunk_days"))  # truth times produced, chunk limit
        for index in resolved.indices:
            while done <= index:  # the truth up to and including the reference time, checked
                count = min(longest, index + 1 - done)
                _checked(run, spec, done, count, stored)
                done += count
                advance(count / day)
            other.take_state(run)
            start = spec.times(int(index), 1)[0]
            yield start.astype("datetime64[s]"), _forecast(other, resolved, start)
            advance(cases.lead_hours / 24)


def _forecast(model: _Integration, resolved: _Plan, start: np.datetime64) -> xr.Dataset:
    """Integrate ``model`` from ``start`` to the longest lead; the leads as a dataset."""
    seconds = resolved.step_hours * 3600
    times, values = model.advance(resolved.steps, seconds, resolved.fields)
    leads = resolved.leads
    if not np.array_equal(times, start + leads):
        raise RuntimeError(f"forecast times {times[[0, -1]]} differ from the expected "
                           f"{(start + leads)[[0, -1]]}")
    variables = {}
    for name in resolved.fields:
        if FIELD_SPECS[name].surface:  # [P, W, H] -> [P, H, W]
            variables[name] = (("prediction_timedelta", "latitude", "longitude"),
                               values[name].transpose(0, 2, 1), _cf(name))
        else:  # [P, L, W, H] -> [P, L', H, W]
            variables[name] = (("prediction_timedelta", "level", "latitude", "longitude"),
                               values[name][:, resolved.levels].transpose(0, 1, 3, 2), _cf(name))
    coords = {"prediction_timedelta": leads, "level": np.asarray(resolved.level_values, np.float64),
              "latitude": model.latitudes, "longitude": model.longitudes}
    return xr.Dataset(variables, coords=coords)


__all__ = ["CaseSpec", "forecast_cases", "plan"]
