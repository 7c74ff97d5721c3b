"""The baselines of each task, built for the cases of a prediction from the truth store.

Each task is scored against the reference methods a model of that task has to beat (its
:attr:`~atmorep.tasks.Task.baselines`), each built by a function of :data:`BUILDERS` from a
:class:`Context` (the truth at the cases and at the other times the baselines need, and the
prediction's attributes):

========================  ==========================================================================
task                      baselines
========================  ==========================================================================
forecast                  persistence (truth at ``time``), trend (the least-squares slope of the
                          last ``CONTEXT_STEPS`` steps up to ``time``, extrapolated), first_guess
                          (the model's rule: the same trend, damped), climatology
interpolate               linear (in time, between the truth at ``time`` and at the first step
                          after the gap, ``time + max(prediction_timedelta) + time_step_hours``),
                          cubic (least squares through the given steps next to the gap, the
                          model's first guess), climatology
infill, reconstruct       spatial (each hidden point filled from the given points of the same time
                          and level, :func:`atmorep.numerics.first_guess.spatial_fill`, the model's
                          first guess of whole hidden columns), climatology
downscale                 bilinear, bicubic (the truth coarsened by ``coarsen_factor`` with
                          :func:`atmorep.evaluate.baseline_methods.coarsen` and upsampled back; the
                          model's first guess is bicubic within each box)
correct                   raw (the other model's values that the model corrected, read from the
                          store in the prediction's ``input`` attribute; also the model's first
                          guess), climatology
========================  ==========================================================================

The temporal baselines read the steps the model's box gives next to the predicted ones: a forecast
box ends at ``time`` (the last ``CONTEXT_STEPS`` steps are used), an interpolation box gives
``(box_time - P) / 2`` steps on each side of its ``P`` predicted steps (the attribute ``box``). A
truth store that holds only the cases' own steps leaves these (the task's ``history``) out, with a
warning.

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
from atmorep.evaluate import baseline_methods
from atmorep.evaluate.truth import LazyStore
from atmorep.numerics.interpolation import unwrapped_longitude
from atmorep.numerics.temporal_fit import CONTEXT_STEPS, TREND_DAMPING, temporal_weights
from atmorep.tasks import get_task


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
        mask: the predicted points ``(time, prediction_timedelta, latitude, longitude)`` of infill and
            reconstruct; None for the other tasks.
    """

    field: str
    truth: xr.DataArray
    known: xr.DataArray
    climatology: xr.DataArray | None
    attrs: dict
    mask: xr.DataArray | None = None


def _step(attrs: dict) -> np.timedelta64:
    return np.timedelta64(round(float(attrs["time_step_hours"]) * 3600e9), "ns")


def _interpolation_context(leads: np.ndarray, attrs: dict) -> int:
    """Steps an interpolation box gives on each side of its predicted ones."""
    return max(1, (int(attrs["box"][0]) - leads.size) // 2)


def _gap(leads: np.ndarray, attrs: dict) -> np.timedelta64:
    """From the reference time to the first known step after the interpolated ones."""
    return leads.max() + _step(attrs)


def baseline_times(method: str, times: np.ndarray, leads: np.ndarray, attrs: dict) -> dict[str, np.ndarray]:
    """The times baseline ``method`` needs besides the valid times, by role (for messages).

    Args:
        method: a baseline name of :data:`BUILDERS`.
        times: the reference times of the cases ``[I]``, datetime64[ns].
        leads: the predicted steps ``[P]``, timedelta64[ns].
        attrs: the prediction's attributes.
    """
    if method == "persistence":
        return {"reference time": times}
    if method in ("trend", "first_guess"):
        return {"steps before the initialisation": np.concatenate(
            [times - k * _step(attrs) for k in range(CONTEXT_STEPS)])}
    if method == "linear":
        return {"interpolation end point": np.concatenate([times, times + _gap(leads, attrs)])}
    if method == "cubic":
        context, gap, step = _interpolation_context(leads, attrs), _gap(leads, attrs), _step(attrs)
        return {"steps next to the gap": np.concatenate(
            [times - k * step for k in range(context)] + [times + gap + k * step for k in range(context)])}
    return {}


def needed_times(task: str, times: np.ndarray, leads: np.ndarray, attrs: dict,
                 methods: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The times the baselines ``methods`` (default: all of ``task``'s) need besides the valid times."""
    needed: dict[str, np.ndarray] = {}
    for method in get_task(task).baselines if methods is None else methods:
        for role, wanted in baseline_times(method, times, leads, attrs).items():
            needed[role] = np.union1d(needed[role], wanted) if role in needed else wanted
    return needed


def _persistence(context: Context) -> xr.DataArray:
    truth = context.truth
    return baseline_methods.persistence(context.known, truth["time"].values,
                                        truth["prediction_timedelta"].values)


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


def _weighted_steps(context: Context, weights: np.ndarray, offsets: np.ndarray) -> xr.DataArray:
    """``sum_k weights[p, k] * truth(time + offsets[k])`` for every case and lead ``p``."""
    starts, leads = context.truth["time"].values, context.truth["prediction_timedelta"].values
    steps = [context.known.sel(time=starts + offset).assign_coords(time=starts) for offset in offsets]
    stacked = xr.concat(steps, dim="context")  # (context, time, [level], latitude, longitude)
    coefficients = xr.DataArray(weights, dims=("prediction_timedelta", "context"),
                                coords={"prediction_timedelta": leads})
    return xr.dot(coefficients, stacked, dim="context").transpose("time", "prediction_timedelta", ...)


def _lead_steps(leads: np.ndarray, attrs: dict) -> np.ndarray:
    steps = leads / _step(attrs)
    if (steps < 1).any() or not np.allclose(steps, np.round(steps)):
        raise DataError(f"a temporal baseline needs leads that are positive multiples of the time step, "
                        f"got {leads}")
    return np.round(steps).astype(int)


def _trend(context: Context, damping: float) -> xr.DataArray:
    """The (damped) trend of the last ``CONTEXT_STEPS`` steps up to the initialisation, every lead."""
    leads = _lead_steps(context.truth["prediction_timedelta"].values, context.attrs)
    pattern = (True,) * CONTEXT_STEPS + (False,) * int(leads.max())
    weights, _ = temporal_weights(pattern, damping=damping)
    rows = weights[CONTEXT_STEPS - 1 + leads, :CONTEXT_STEPS]  # [P, C]
    offsets = (np.arange(CONTEXT_STEPS) - (CONTEXT_STEPS - 1)) * _step(context.attrs)
    return _weighted_steps(context, rows, offsets)


def _cubic(context: Context) -> xr.DataArray:
    """Least squares in time through the steps next to the gap, as the model's first guess."""
    attrs, leads = context.attrs, context.truth["prediction_timedelta"].values
    steps, side = _lead_steps(leads, attrs), _interpolation_context(leads, attrs)
    after = int(round(_gap(leads, attrs) / _step(attrs)))
    pattern = np.zeros(2 * side + after - 1, dtype=bool)  # step 0: time - (side - 1) steps
    given = np.r_[np.arange(side), side - 1 + after + np.arange(side)]
    pattern[given] = True
    weights, _ = temporal_weights(tuple(bool(v) for v in pattern))
    rows = weights[side - 1 + steps][:, given]  # [P, 2 * side]
    offsets = (given - (side - 1)) * _step(attrs)
    return _weighted_steps(context, rows, offsets)


def _spatial(context: Context) -> xr.DataArray:
    """Each hidden point filled from the given points of the same case, lead and level."""
    import torch  # the fill is the model's own (numerics.first_guess); evaluation loads torch here only

    from atmorep.numerics.first_guess import spatial_fill

    def fill(values: np.ndarray, hidden: np.ndarray) -> np.ndarray:
        shape = values.shape
        flat = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64).reshape(-1, *shape[-2:]))
        known = torch.from_numpy(~np.broadcast_to(hidden, shape).reshape(flat.shape))
        return spatial_fill(flat, known).numpy().reshape(shape)

    truth = context.truth
    hidden = context.mask.broadcast_like(truth.isel({d: 0 for d in truth.dims if d not in context.mask.dims}))
    grid = ["latitude", "longitude"]
    truth, hidden = (a.chunk(dict.fromkeys(grid, -1)) if a.chunks else a for a in (truth, hidden))
    return xr.apply_ufunc(fill, truth, hidden.astype(bool), input_core_dims=[grid, grid],
                          output_core_dims=[grid], dask="parallelized", output_dtypes=[np.float64])


def _upsampled(context: Context, method: baseline_methods.Method) -> xr.DataArray:
    longitude = context.truth["longitude"].values
    unwrapped = unwrapped_longitude(longitude)  # increasing across 0/360
    truth = context.truth.assign_coords(longitude=unwrapped)
    coarse = baseline_methods.coarsen(truth, int(context.attrs["coarsen_factor"]))
    fine = baseline_methods.upsample(coarse, truth["latitude"].values, unwrapped, method)
    return fine.assign_coords(longitude=longitude)


def _raw(context: Context) -> xr.DataArray:
    """The other model's values at the cases: what a correction started from."""
    if "input" not in context.attrs:
        raise DataError("the prediction has no attribute 'input' (the store of the other model's values that "
                        "it corrected)")
    return LazyStore(context.attrs["input"], "correction input").cases(context.field, context.truth)


BUILDERS: dict[str, Callable[[Context], xr.DataArray | None]] = {
    "raw": _raw,
    "persistence": _persistence,
    "trend": partial(_trend, damping=1.0),
    "first_guess": partial(_trend, damping=TREND_DAMPING),
    "linear": _linear,
    "cubic": _cubic,
    "spatial": _spatial,
    "climatology": lambda context: context.climatology,  # None without a climatology source
    "bilinear": partial(_upsampled, method="bilinear"),
    "bicubic": partial(_upsampled, method="bicubic"),
}
