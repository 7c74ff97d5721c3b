"""Other prediction stores of the same cases, scored beside the model as named methods.

``atmorep evaluate PRED --reference jcm=PATH`` scores the prediction store at ``PATH`` (e.g. jcm's
forecasts, :mod:`atmorep.evaluate.physics_baseline`, or another model's output) as the method
``jcm``, with the metrics of the model: RMSE, MAE, bias and ACC of its ensemble mean, the fair CRPS
of its members (the MAE for one member) and, for two members or more, spread and spread/skill.

A reference is scored at the prediction's cases and at every lead both stores hold; leads of the
prediction that the reference lacks are left out for it (logged). It must hold every case time,
field, level and grid point of the prediction; what it lacks is a one-line :class:`DataError`
that names it. :func:`open_references` checks the names and opens the stores,
:func:`reference_members` gives one field of one reference on the prediction's coordinates.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from atmorep.errors import DataError
from atmorep.evaluate.metrics import SPATIAL_DIMS as SPATIAL
from atmorep.evaluate.task_baselines import BUILDERS
from atmorep.evaluate.truth import match_coordinates
from atmorep.prediction_store import MASK, open_prediction

logger = logging.getLogger(__name__)

RESERVED = ("model", "truth", *BUILDERS)  # names the tables already use
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.+-]*")


@dataclass(frozen=True)
class Reference:
    """A reference prediction store, opened lazily.

    Attributes:
        name: the method name in the tables.
        path: the store, for messages.
        dataset: its fields ``(time, prediction_timedelta, member, [level], latitude, longitude)``,
            ``time`` and ``prediction_timedelta`` in nanoseconds.
    """

    name: str
    path: str
    dataset: xr.Dataset

    @property
    def label(self) -> str:
        return f"reference '{self.name}' ('{self.path}')"


def check_name(name: str) -> str:
    """``name`` if it can name a method; DataError otherwise."""
    if not _NAME.fullmatch(name) or name in RESERVED:
        raise DataError(f"reference name '{name}': expected a name that starts with a letter and is not one "
                        f"of the built-in methods {list(RESERVED)}")
    return name


def open_references(references: Mapping[str, str | Path | xr.Dataset] | None) -> dict[str, Reference]:
    """The reference stores by name, opened and with their names checked."""
    opened = {}
    for name, source in (references or {}).items():
        path = "<dataset>" if isinstance(source, xr.Dataset) else str(source)
        data = source if isinstance(source, xr.Dataset) else open_prediction(source)
        data = data.drop_vars(["valid_time", MASK], errors="ignore")
        data = data.assign_coords(time=data["time"].values.astype("datetime64[ns]"),
                                  prediction_timedelta=data["prediction_timedelta"].values.astype(
                                      "timedelta64[ns]"))
        opened[check_name(str(name))] = Reference(str(name), path, data)
    return opened


def reference_members(reference: Reference, field: str, model: xr.DataArray) -> xr.DataArray | None:
    """One field of ``reference`` at the cases, levels and grid of ``model``, and the leads both hold.

    Args:
        reference: the opened store.
        field: the field.
        model: the prediction's members ``(time, prediction_timedelta, member, [level], latitude,
            longitude)``.

    Returns:
        ``(time, prediction_timedelta', member, [level], latitude, longitude)`` with ``model``'s
        coordinates, lazy; ``prediction_timedelta'`` the shared leads.

    Raises:
        DataError: the reference lacks the field, a case time, a level or a grid point of the
            prediction, or shares no lead with it.
    """
    data = reference.dataset
    if field not in data.data_vars:
        raise DataError(f"{reference.label} has no field '{field}' "
                        f"(available: {list(map(str, data.data_vars))})")
    members = data[field]
    if "member" not in members.dims:
        members = members.expand_dims(member=[0])
    times = _positions(data["time"].values, model["time"].values, reference, "case time")
    offsets = model["prediction_timedelta"].values
    lead_index, leads = _shared_leads(data["prediction_timedelta"].values, offsets, reference)
    indexers: dict[str, np.ndarray] = {"time": times, "prediction_timedelta": lead_index}
    if ("level" in members.dims) != ("level" in model.dims):
        raise DataError(f"{reference.label}: field '{field}' has dims {list(members.dims)}, but the "
                        f"prediction's has {'' if 'level' in model.dims else 'no '}level")
    for dim in [d for d in ("level", *SPATIAL) if d in model.dims]:
        indexers[dim] = match_coordinates(members[dim].values, model[dim].values, dim,
                                          f"{reference.label}: field '{field}'")
    members = members.isel(indexers).transpose("time", "prediction_timedelta", "member", ...)
    coords = {"time": model["time"].values, "prediction_timedelta": leads,
              **{d: model[d].values for d in ("level", *SPATIAL) if d in model.dims}}
    members = members.assign_coords(coords).drop_vars(
        [c for c in members.coords if c not in (*coords, "member")])
    _check_levels(members, reference, field)
    return members


def _positions(available: np.ndarray, wanted: np.ndarray, reference: Reference, what: str) -> np.ndarray:
    index = pd.DatetimeIndex(available).get_indexer(pd.DatetimeIndex(wanted))
    if (index < 0).any():
        missing = pd.DatetimeIndex(wanted)[index < 0]
        raise DataError(f"{reference.label} has no {what} {missing[0]} ({missing.size} of {len(wanted)} "
                        "of the prediction's missing)")
    return index


def _shared_leads(available: np.ndarray, wanted: np.ndarray,
                  reference: Reference) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``available`` of the leads in ``wanted``, and those leads."""
    hours = lambda values: [f"{value / np.timedelta64(1, 'h'):g}" for value in values]  # noqa: E731
    shared = np.isin(wanted, available)
    if not shared.any():
        raise DataError(f"{reference.label} has no lead of the prediction's ({', '.join(hours(wanted))} h); "
                        f"it has {', '.join(hours(available))} h")
    if not shared.all():
        logger.warning("%s lacks the leads %s h of the prediction: scored at the other %d", reference.label,
                       ", ".join(hours(wanted[~shared])), int(shared.sum()))
    leads = wanted[shared]
    return np.array([int(np.flatnonzero(available == lead)[0]) for lead in leads]), leads


def _check_levels(members: xr.DataArray, reference: Reference, field: str) -> None:
    """DataError if the field is NaN everywhere at one of the levels in the reference's first case."""
    if "level" not in members.dims:
        return
    first = members.isel(time=0, prediction_timedelta=0, member=0)
    empty = ~np.asarray(first.notnull().any(SPATIAL).values)
    if empty.any():
        raise DataError(f"{reference.label}: field '{field}' has no values at level "
                        f"{members['level'].values[empty][0]:g} of the prediction")


__all__ = ["RESERVED", "Reference", "check_name", "open_references", "reference_members"]
