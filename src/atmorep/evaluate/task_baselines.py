"""The baselines of each task, built for the cases of a prediction from the truth store.

Each task is scored against the reference methods a model of that task has to beat
(:data:`BASELINES`), each built by a function of :data:`BUILDERS` from a :class:`Context` (the
truth store, the truth at the cases and the prediction's attributes):

========================  ==========================================================================
task                      baselines
========================  ==========================================================================
forecast                  persistence (truth at ``time``), climatology
interpolate               linear (in time, between the truth at ``time`` and at the first step
                          after the gap, ``time + max(prediction_timedelta) + time_step_hours``),
                          climatology
infill, reconstruct       persistence (truth at the window start ``time``), climatology
downscale                 bilinear, bicubic (the truth coarsened by ``coarsen_factor`` with
                          :func:`atmorep.evaluate.baselines.coarsen` and upsampled back)
========================  ==========================================================================

Every baseline comes in the layout of the truth of the cases, ``(time, prediction_timedelta,
[level], latitude, longitude)``, lazy; the truth store is read only at the reference times and
interpolation end points it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import xarray as xr

from atmorep.evaluate import baselines
from atmorep.evaluate.truth import LazyStore

BASELINES: dict[str, tuple[str, ...]] = {  # the reference methods of each task, by builder name
    "forecast": ("persistence", "climatology"),
    "interpolate": ("linear", "climatology"),
    "infill": ("persistence", "climatology"),
    "reconstruct": ("persistence", "climatology"),
    "downscale": ("bilinear", "bicubic"),
}
REQUIRED_ATTRS: dict[str, tuple[str, ...]] = {"interpolate": ("time_step_hours",),
                                               "downscale": ("coarsen_factor",)}


@dataclass(frozen=True)
class Context:
    """What a baseline builder needs.

    Attributes:
        store: the truth store.
        field: the field scored.
        truth: the truth at the cases, ``(time, prediction_timedelta, [level], latitude, longitude)``.
        climatology: the climatology at the truth's coordinates; None without a climatology source.
        attrs: the prediction's attributes (``task``, ``time_step_hours``, ``coarsen_factor`` ...).
    """

    store: LazyStore
    field: str
    truth: xr.DataArray
    climatology: xr.DataArray | None
    attrs: dict


def _persistence(context: Context) -> xr.DataArray:
    truth = context.truth
    start = context.store.read(context.field, truth["time"].values, truth, "reference time")
    return baselines.persistence(start, truth["time"].values, truth["prediction_timedelta"].values)


def _linear(context: Context) -> xr.DataArray:
    truth, leads = context.truth, context.truth["prediction_timedelta"].values
    step = np.timedelta64(round(float(context.attrs["time_step_hours"]) * 3600e9), "ns")
    starts = truth["time"].values
    ends = starts + leads.max() + step  # the first known step after the gap
    known = context.store.read(context.field, np.unique(np.concatenate([starts, ends])), truth,
                               "interpolation end point")
    cases = [baselines.linear_interpolation(known, start, end, start + leads)
             .assign_coords(time=leads).rename(time="prediction_timedelta")
             for start, end in zip(starts, ends)]
    return xr.concat(cases, dim=pd.Index(starts, name="time"))


def _upsampled(context: Context, method: baselines.Method) -> xr.DataArray:
    longitude = context.truth["longitude"].values
    unwrapped = baselines.unwrapped_longitude(longitude)  # increasing across 0/360
    truth = context.truth.assign_coords(longitude=unwrapped)
    coarse = baselines.coarsen(truth, int(context.attrs["coarsen_factor"]))
    fine = baselines.upsample(coarse, truth["latitude"].values, unwrapped, method)
    return fine.assign_coords(longitude=longitude)


BUILDERS: dict[str, Callable[[Context], xr.DataArray | None]] = {
    "persistence": _persistence,
    "linear": _linear,
    "climatology": lambda context: context.climatology,  # None without a climatology source
    "bilinear": partial(_upsampled, method="bilinear"),
    "bicubic": partial(_upsampled, method="bicubic"),
}
