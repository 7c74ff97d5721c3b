"""The baselines of each task, built for the cases of a prediction from the truth store.

Each task is scored against the reference methods a model of that task has to beat
(:data:`BASELINES`), each built by a function of :data:`BUILDERS` from a :class:`Context` (the
truth at the cases and at the other times the baselines need, and the prediction's attributes):

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
[level], latitude, longitude)``, lazy. The times a baseline needs besides the valid times (the
reference times, the interpolation end points) are given by :func:`needed_times`; the truth is read
once at all of them and the baselines select from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import xarray as xr

from atmorep.errors import DataError
from atmorep.evaluate import baselines

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
        field: the field scored.
        truth: the truth at the cases, ``(time, prediction_timedelta, [level], latitude, longitude)``.
        known: the truth at every time read, ``(time, [level], latitude, longitude)``: the valid
            times and the :func:`needed_times`.
        climatology: the climatology at the truth's coordinates; None without a climatology source.
        attrs: the prediction's attributes (``task``, ``time_step_hours``, ``coarsen_factor`` ...).
    """

    field: str
    truth: xr.DataArray
    known: xr.DataArray
    climatology: xr.DataArray | None
    attrs: dict


def _gap(leads: np.ndarray, attrs: dict) -> np.timedelta64:
    """From the reference time to the first known step after the interpolated ones."""
    step = np.timedelta64(round(float(attrs["time_step_hours"]) * 3600e9), "ns")
    return leads.max() + step


def needed_times(task: str, times: np.ndarray, leads: np.ndarray, attrs: dict) -> dict[str, np.ndarray]:
    """The times the baselines of ``task`` need besides the valid times, by role (for messages).

    Args:
        task: the prediction's task.
        times: the reference times of the cases ``[I]``, datetime64[ns].
        leads: the predicted steps ``[P]``, timedelta64[ns].
        attrs: the prediction's attributes.
    """
    needed = {}
    if "persistence" in BASELINES[task]:
        needed["reference time"] = times
    if "linear" in BASELINES[task]:
        needed["interpolation end point"] = np.concatenate([times, times + _gap(leads, attrs)])
    return needed


def _persistence(context: Context) -> xr.DataArray:
    truth = context.truth
    return baselines.persistence(context.known, truth["time"].values, truth["prediction_timedelta"].values)


def _linear(context: Context) -> xr.DataArray:
    """``x(t0) + lead / gap * (x(t0 + gap) - x(t0))`` for every case at once."""
    starts, leads = context.truth["time"].values, context.truth["prediction_timedelta"].values
    gap = _gap(leads, context.attrs)
    if not gap > np.timedelta64(0, "ns") or (leads < np.timedelta64(0, "ns")).any() or leads.max() > gap:
        raise DataError(f"linear interpolation needs leads within [0, {gap}], got {leads}")
    fraction = xr.DataArray(leads / gap, dims="prediction_timedelta",
                            coords={"prediction_timedelta": leads})  # [P], 0 at t0, 1 at t1
    start = context.known.sel(time=starts)
    end = context.known.sel(time=starts + gap).assign_coords(time=starts)
    return (start + fraction * (end - start)).transpose("time", "prediction_timedelta", ...)


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
