"""A physics-model baseline: jcm forecasts of a simulated truth, written as a prediction store.

:func:`write_physics_forecasts` runs :func:`atmorep.data.physics_forecasts.forecast_cases` (SPEEDY with
other physics, started from the truth's states at the reference times and run to the longest lead)
and writes the cases with :class:`atmorep.prediction_store.PredictionWriter` in the layout ``atmorep
infer --task forecast`` writes: one member, leads ``step_hours .. lead_hours``, the attributes
``task = "forecast"`` and ``time_step_hours`` that ``atmorep evaluate`` needs, and
``atmorep_physics_forecast`` (JSON: physics, leads and the truth's simulation spec). Given a prepared
store (``like``, e.g. the test store the model is scored on), the fields and levels are that store's,
and its grid is checked against the truth's. Scored with ``atmorep evaluate --reference jcm=OUT``,
the store is the baseline a learned model has to beat at every lead.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import xarray as xr

from atmorep.data.physics_forecasts import CaseSpec, forecast_cases, plan
from atmorep.data.store import Store
from atmorep.errors import DataError
from atmorep.evaluate.truth import open_store
from atmorep.prediction_store import PredictionLayout, PredictionWriter

logger = logging.getLogger(__name__)

ATTR = "atmorep_physics_forecast"


def _like(cases: CaseSpec, like: Path, truth: Path, grid: xr.Dataset) -> CaseSpec:
    """``cases`` with the fields and levels of the prepared store ``like``, its grid and values checked."""
    store = Store(like)
    fields = cases.fields or store.fields
    for name in fields:
        store.require_field(name)
        if store.transform(name):
            raise DataError(f"prepared store '{like}': field '{name}' holds transformed values "
                            f"({store.transform(name)}); forecasts are written in physical units")
    for axis in ("latitude", "longitude"):
        ours, theirs = getattr(store, axis), grid[axis].values
        if ours.shape != theirs.shape or not np.allclose(ours, theirs, atol=1e-6, rtol=0.0):
            raise DataError(f"prepared store '{like}' has other {axis} values than the truth simulation "
                            f"'{truth}'; prepare the store from that simulation without regridding")
    levels = tuple(float(level) for level in store.level) if len(store.level) else None
    return replace(cases, fields=tuple(fields), levels=cases.levels or levels)


def write_physics_forecasts(truth: str | Path, out: str | Path, cases: CaseSpec, *,
                            like: str | Path | None = None, overwrite: bool = False,
                            progress: bool = True) -> Path:
    """Write jcm's forecasts of the simulation in ``truth`` as the prediction store ``out``.

    Args:
        truth: a complete store of ``atmorep data simulate`` (the raw simulation, not a prepared store).
        out: the prediction store to write; it appears only when complete.
        cases: reference times, longest lead, lead step, physics, fields and levels.
        like: a prepared store of the same simulation whose fields and levels to write (None: the
            truth's, or those of ``cases``).
        overwrite: replace an existing ``out``.
        progress: show a progress bar of simulated days.

    Returns:
        ``out``.

    Raises:
        DataError: ``out`` exists (without ``overwrite``), the cases do not fit the truth, ``like`` is
            not a store of the truth's grid, or the re-simulation does not reproduce the truth.
    """
    truth, out = Path(truth), Path(out)
    resolved = plan(truth, cases)  # the truth is a simulation store: checked before it is opened
    grid = open_store(truth, "truth simulation")
    if like is not None:
        cases = _like(cases, Path(like), truth, grid)
        resolved = plan(truth, cases)
    levels = resolved.level_values
    surface = {name for name in resolved.fields if "level" not in grid[name].dims}
    record = {"physics": [list(item) for item in cases.physics], "lead_hours": int(cases.lead_hours),
              "step_hours": resolved.step_hours, "truth": resolved.spec.to_dict()}
    layout = PredictionLayout(
        fields={name: None if name in surface else levels for name in resolved.fields}, level_kind="sigma",
        prediction_timedelta=resolved.leads, members=1, latitude=grid["latitude"].values,
        longitude=grid["longitude"].values,
        attrs={"task": "forecast", "time_step_hours": float(resolved.step_hours), "truth": str(truth),
               **({"data": str(like)} if like is not None else {}),
               "title": f"jcm forecasts of the simulation {truth.name} by SPEEDY with other physics",
               "physics": ", ".join(f"{name}={value:g}" for name, value in cases.physics),
               ATTR: json.dumps(record)})
    with PredictionWriter(out, layout, overwrite=overwrite) as writer:
        for time, case in forecast_cases(truth, cases, progress=progress):
            writer.write(time, {name: case[name].values[:, None] for name in resolved.fields})  # [P, 1, ...]
    logger.info("%s: %d jcm forecasts to %d h", out, writer.cases, cases.lead_hours)
    return out


__all__ = ["ATTR", "write_physics_forecasts"]
