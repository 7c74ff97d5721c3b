"""What an inference run is asked to do, checked against the checkpoint and the data before any work.

:class:`InferenceRequest` holds the user's choices; :func:`plan_inference` checks them against the
model and the store and returns an :class:`InferencePlan`: the domain (global, or a regional block of
the store's grid), the store steps of every case, the lead times and the tile plan. Every mismatch is
a one-line :class:`~atmorep.errors.DataError` raised before anything is computed or written:

* a checkpoint whose fields, levels, level kind or grid spacing the store does not match;
* a requested time whose window the store does not cover, or times not on the store's steps;
* a lead time the model cannot reach (not a positive multiple of its step, or a rollout that would
  need fields the model does not predict);
* a region smaller than the model's box.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from atmorep.batch import AlphaOverride, BatchError
from atmorep.config import RunConfig
from atmorep.data.store import Store
from atmorep.errors import DataError
from atmorep.infer.tiling import Overlap, TilePlan
from atmorep.numerics.longitude import is_global_longitude
from atmorep.numerics.modes import COARSENED
from atmorep.tasks import CaseLayout, MaskingError, Task, get_task, inference_tasks
from atmorep.tasks.infill import Region

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceRequest:
    """An inference run.

    Attributes:
        checkpoint: a checkpoint directory (``<run_dir>/checkpoint``).
        data: a prepared store holding the inputs (and the truth, for evaluation).
        output: the prediction store to write (zarr, WeatherBench-2 layout).
        task: one of ``forecast``, ``interpolate``, ``infill``, ``reconstruct``, ``downscale``.
        times: the reference times of the cases (each task's module in :mod:`atmorep.tasks` says where
            its window lies).
        lead_hours: forecast only: the longest lead time; default the box's one-shot lead. Leads past
            it are reached by rollout.
        region: ``(lat_min, lat_max, lon_min, lon_max)`` degrees; None for the whole grid.
        infill_region: infill only: the rectangle to hide and fill.
        ratio: reconstruct only: the hidden fraction of token-sized blocks (default 0.5).
        coarsen_factor: downscale only: block size of the coarse input (default: the first
            field's ``masking.coarsen_factor``).
        input: correct only: a prepared store of another model's values (a forecast) on the grid of
            ``data``, whose times cover the cases' windows; the model is given these and predicts the
            truth.
        overlap: minimum tile overlap, points or box fraction (see :mod:`atmorep.infer.tiling`).
        batch_size: tiles per model call; results do not depend on it.
        rollout: ``"members"`` continues each ensemble member on its own output (spread grows with lead,
            E times the compute of later steps); ``"mean"`` continues the ensemble mean.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``. precision: ``auto``, ``float32``, ``bfloat16``.
        seed: seed of the reconstruct masks.
        alpha: overrides of the tokens' auxiliary values, ``"year=1950"`` (set) or ``"day_of_year+=182"``
            (shift); see :class:`atmorep.batch.AlphaOverride`. Recorded in the output's attributes.
        overwrite: replace an existing output.
    """

    checkpoint: Path
    data: Path
    output: Path
    task: str = "forecast"
    times: tuple[np.datetime64, ...] = ()
    lead_hours: float | None = None
    region: Region | None = None
    infill_region: Region | None = None
    ratio: float | None = None
    coarsen_factor: int | None = None
    input: Path | None = None
    overlap: Overlap = 0.5
    batch_size: int = 8
    rollout: Literal["members", "mean"] = "members"
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    alpha: tuple[str, ...] = ()
    overwrite: bool = False


@dataclass(frozen=True)
class Domain:
    """A block of the store's grid: rows ``lat_start .. lat_start + H - 1``, columns from ``lon_start``
    (wrapping past the last column), ``W`` of them."""

    lat_start: int
    lon_start: int
    latitude: np.ndarray
    longitude: np.ndarray
    periodic: bool

    @property
    def shape(self) -> tuple[int, int]:
        return self.latitude.size, self.longitude.size


@dataclass(frozen=True)
class InferencePlan:
    """A checked request: what is read and computed for every case.

    Attributes:
        layout: the task's window layout.
        domain: the grid block predicted.
        tiles: the tile plan over the domain.
        starts: ``[I]`` store index of the first window step of every case.
        times: ``[I]`` datetime64[s] reference times.
        step: time between box steps (``numpy.timedelta64``, seconds).
        rollout_steps: forecast steps per case (1 without rollout).
        leads: ``[P]`` offsets written, in box steps.
        level_indices: per field, the store's level indices of the model's levels.
    """

    layout: CaseLayout
    domain: Domain
    tiles: TilePlan
    starts: np.ndarray
    times: np.ndarray
    step: np.timedelta64
    rollout_steps: int
    leads: np.ndarray
    level_indices: dict[str, list[int]] = field(default_factory=dict)


def check_compatible(store: Store, config: RunConfig, meta: dict, checkpoint: Path,
                     finer: bool = False) -> dict[str, list[int]]:
    """The store's level indices of every model field; DataError if the store cannot feed the model
    (``finer``: a grid finer than the model's is fed to it as it is, a zero-shot use)."""
    indices = {}
    for f in config.fields:
        if f.name not in store.fields:
            raise DataError(f"checkpoint '{checkpoint}' needs field '{f.name}', store '{store.path}' has "
                            f"{list(store.fields)}")
        levels = list(f.levels) if f.levels is not None else None
        try:
            indices[f.name] = store.level_indices(f.name, levels)
        except DataError:
            raise DataError(f"checkpoint '{checkpoint}' needs field '{f.name}' at levels {levels}, store "
                            f"'{store.path}' has {list(store.field_levels(f.name))}") from None
    kind = meta.get("level_kind")
    if kind and any(not store.is_surface(f.name) for f in config.fields) and kind != store.level_kind.value:
        raise DataError(f"checkpoint '{checkpoint}' was trained on {kind} levels, store '{store.path}' has "
                        f"{store.level_kind.value} levels")
    resolution = meta.get("resolution")
    finer_store = finer and resolution and store.resolution < resolution
    if resolution and not finer_store and not np.isclose(resolution, store.resolution, rtol=0.02):
        raise DataError(f"checkpoint '{checkpoint}' was trained on a {resolution:.4g} degree grid, store "
                        f"'{store.path}' has {store.resolution:.4g} degrees; regrid the data first")
    return indices


def domain_of(store: Store, region: Region | None, box: tuple[int, int]) -> Domain:
    """The grid block of ``region`` (the whole grid for None); DataError if it is smaller than ``box``."""
    lat, lon = store.latitude, store.longitude
    global_lon = is_global_longitude(lon)
    if region is None:
        domain = Domain(0, 0, lat, lon, global_lon)
    else:
        lat_min, lat_max, lon_min, lon_max = (float(v) for v in region)
        rows = np.flatnonzero((lat >= lat_min) & (lat <= lat_max))
        whole = global_lon and lon_max - lon_min >= 360.0
        if whole:
            columns = np.arange(lon.size)
        else:
            offset = (lon - lon_min) % 360.0  # distance east of the western edge
            columns = np.flatnonzero(offset <= (lon_max - lon_min) % 360.0 + 1e-9)
            columns = columns[np.argsort(offset[columns], kind="stable")]
        if rows.size == 0 or columns.size == 0:
            raise DataError(f"region {tuple(region)} holds no grid point of store '{store.path}'")
        domain = Domain(int(rows[0]), int(columns[0]), lat[rows], lon[columns], whole)
    h, w = domain.shape
    if h < box[0] or w < box[1]:
        where = tuple(region) if region else "the whole grid"
        raise DataError(f"region {where} covers {h} x {w} grid points of store "
                        f"'{store.path}', smaller than the model's box of {box[0]} x {box[1]} points; "
                        "choose a larger region")
    return domain


def case_starts(store: Store, times: Sequence[np.datetime64], layout: CaseLayout,
                time_step: int) -> tuple[np.ndarray, np.ndarray]:
    """Store indices of the window start of every case, checked against the store's time axis (the
    steps the task reads, ``layout.read_steps``, must all be in the store)."""
    axis = store.time
    window_end = layout.read_steps - 1  # the last window step read
    if len(times) == 0:
        raise DataError("no reference time given (e.g. --time 2002-01-05T00 or --start/--end)")
    wanted = np.asarray([np.datetime64(t, "s") for t in times])
    if np.any(np.diff(wanted) <= np.timedelta64(0, "s")):
        raise DataError("the requested times must be strictly increasing and distinct")
    index = np.searchsorted(axis, wanted)
    first, last = axis[0], axis[-1]
    for t, i in zip(wanted, index):
        if i >= axis.size or axis[i] != t:
            raise DataError(f"time {t} is not a time step of store '{store.path}' (which covers {first} .. "
                            f"{last})")
        start, end = i - layout.reference * time_step, i + (window_end - layout.reference) * time_step
        if start < 0 or end >= axis.size:
            need = (t - (axis[1] - axis[0]) * layout.reference * time_step,
                    t + (axis[1] - axis[0]) * (window_end - layout.reference) * time_step)
            raise DataError(f"time {t}: task '{layout.task}' needs the store's steps from {need[0]} to "
                            f"{need[1]}, store '{store.path}' covers {first} .. {last}")
    starts = index - layout.reference * time_step
    _check_regular(store, starts, layout.window, time_step)
    return starts.astype(np.int64), wanted


def _check_regular(store: Store, starts: np.ndarray, window: int, time_step: int) -> None:
    axis = store.time
    spacing = axis[1] - axis[0]
    for s in starts:
        steps = np.diff(axis[s:s + (window - 1) * time_step + 1])
        if steps.size and np.any(steps != spacing):
            raise DataError(f"store '{store.path}': irregular time steps in the window from {axis[s]}")


def lead_steps(request: InferenceRequest, layout: CaseLayout, step: np.timedelta64,
               config: RunConfig) -> tuple[int, np.ndarray]:
    """Rollout steps and written offsets (box steps) of the request."""
    if not inference_task(request.task).rolls_out:
        return 1, layout.offsets
    hours = step / np.timedelta64(1, "h")
    if request.lead_hours is None:
        return 1, layout.offsets
    steps = request.lead_hours / hours
    if not np.isfinite(steps) or request.lead_hours <= 0 or not np.isclose(steps, round(steps)):
        raise DataError(f"lead time {request.lead_hours:g} h is not reachable: the model steps by "
                        f"{hours:g} h, expected a positive multiple of {hours:g} h")
    total = int(round(steps))
    rollout = -(-total // layout.steps_per_pass)
    if rollout > 1 and any(not f.predicted for f in config.fields):
        inputs = [f.name for f in config.fields if not f.predicted]
        raise DataError(f"lead time {request.lead_hours:g} h needs rollout beyond the box's "
                        f"{layout.steps_per_pass * hours:g} h, but the model does not predict its input "
                        f"fields "
                        f"{inputs}")
    return rollout, np.arange(1, total + 1, dtype=np.int64)


TASK_OPTIONS = ("lead_hours", "infill_region", "ratio", "coarsen_factor", "input")  # each taken by some tasks


def inference_task(name: str) -> Task:
    """The registered inference task ``name``; DataError for an unknown one or a training-only one."""
    known = inference_tasks()
    if name not in known:
        raise DataError(f"unknown inference task '{name}'; expected one of {list(known)}")
    try:
        return get_task(name)
    except MaskingError as error:
        raise DataError(str(error)) from None


def _check_task_options(request: InferenceRequest, task: Task) -> None:
    """DataError for an option given to a task that does not take it, or out of range."""
    for option in TASK_OPTIONS:
        if getattr(request, option) is not None and option not in task.options:
            takers = [name for name in inference_tasks() if option in get_task(name).options]
            raise DataError(f"option {option} is for task {' or '.join(repr(t) for t in takers)}, not for "
                            f"'{request.task}'")
    if request.coarsen_factor is not None and request.coarsen_factor < 1:
        raise DataError(f"coarsen_factor must be at least 1, got {request.coarsen_factor}")
    if request.ratio is not None and not 0.0 < request.ratio <= 1.0:
        raise DataError(f"ratio must lie in (0, 1], got {request.ratio}")
    if request.rollout not in ("members", "mean"):
        raise DataError(f"rollout must be 'members' or 'mean', got '{request.rollout}'")
    if request.batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {request.batch_size}")
    if request.seed < 0:
        raise DataError(f"seed must be non-negative, got {request.seed}")


def coarsen_factor(request: InferenceRequest, config: RunConfig) -> int:
    """The block size of a coarse input: the request's, or the first field's ``masking.coarsen_factor``."""
    factor = request.coarsen_factor
    return config.fields[0].masking.coarsen_factor if factor is None else int(factor)


def alpha_overrides(request: InferenceRequest) -> tuple[AlphaOverride, ...]:
    """The request's alpha overrides, parsed (DataError naming a bad one)."""
    try:
        return tuple(AlphaOverride.parse(text) for text in request.alpha)
    except BatchError as error:
        raise DataError(str(error)) from None


def check_request(request: InferenceRequest) -> None:
    """DataError for a request that is wrong whatever the model and the data: an unknown task, an option
    out of range or given to a task that does not take it, an infill without its region."""
    task = inference_task(request.task)
    _check_task_options(request, task)
    alpha_overrides(request)
    for option in task.required_options:
        if getattr(request, option) is None:
            flag = "--" + option.replace("_", "-")
            raise DataError(f"task '{request.task}' needs the option {option} ({flag} on the command line)")


def plan_inference(request: InferenceRequest, store: Store, config: RunConfig, meta: dict) -> InferencePlan:
    """Check a request against the model and the store (see the module docstring)."""
    check_request(request)
    levels = check_compatible(store, config, meta, request.checkpoint,
                              finer=inference_task(request.task).finer_grids)
    layout = inference_task(request.task).layout(config)
    box = tuple(config.data.box.shape)
    domain = domain_of(store, request.region, (box[1], box[2]))
    task = inference_task(request.task)
    align = coarsen_factor(request, config) if task.mode == COARSENED else 1  # tiles on the coarse blocks
    tiles = TilePlan.for_shape(domain.shape, (box[1], box[2]), request.overlap, periodic=domain.periodic,
                               align=align)
    time_step = config.data.time_step
    if store.time.size < 2:
        raise DataError(f"store '{store.path}' holds fewer than two time steps")
    step = (store.time[1] - store.time[0]) * time_step
    starts, times = case_starts(store, request.times, layout, time_step)
    rollout, leads = lead_steps(request, layout, step, config)
    logger.info("%s: %d cases on a %d x %d domain in %d tiles, %d rollout step(s)", request.task, len(starts),
                *domain.shape, tiles.count, rollout)
    return InferencePlan(layout, domain, tiles, starts, times, step, rollout, leads, levels)


def reference_times(times: Sequence[str] = (), start: str | None = None, end: str | None = None,
                    every: str = "24h") -> tuple[np.datetime64, ...]:
    """Reference times from a list and/or a range ``start .. end`` (inclusive) by ``every``.

    Args:
        times: ISO times, e.g. ``"2002-01-05T00"``.
        start, end: the range's ends (both or neither).
        every: the range's spacing, e.g. ``"12h"``, ``"1D"``.
    """
    import pandas as pd

    try:
        chosen = [np.datetime64(pd.Timestamp(t).to_datetime64(), "s") for t in times]
        if (start is None) != (end is None):
            raise DataError("give both --start and --end for a range of times")
        if start is not None:
            step = pd.Timedelta(every)
            if step <= pd.Timedelta(0):
                raise DataError(f"--every must be a positive duration, got '{every}'")
            chosen += [np.datetime64(t, "s") for t in pd.date_range(start, end, freq=step).to_numpy()]
    except (ValueError, TypeError) as error:
        raise DataError(f"cannot read the requested times: {error}") from None
    return tuple(np.unique(np.asarray(chosen, dtype="datetime64[s]")))


def case_times(store: str | Path, task: str, config: RunConfig, every_hours: float,
               lead_hours: float | None = None) -> tuple[np.datetime64, ...]:
    """Reference times every ``every_hours`` from the first one whose window and verifying truth lie
    inside ``store`` (a forecast's truth reaches ``lead_hours`` after its reference; tasks without leads
    ignore it)."""
    axis = Store(store).time
    chosen = inference_task(task)
    layout = chosen.layout(config)
    lead_hours = chosen.pick({"lead_hours": lead_hours}).get("lead_hours")
    spacing = (axis[1] - axis[0]) * config.data.time_step
    after = lead_hours if lead_hours is not None else (
        (layout.window - 1 - layout.reference) * (spacing / np.timedelta64(1, "h")))
    first = axis[0] + layout.reference * spacing
    last = axis[-1] - np.timedelta64(int(after * 3600), "s")
    every = np.timedelta64(int(every_hours * 3600), "s")
    times = np.arange(first, last + np.timedelta64(1, "s"), every)
    return tuple(times[np.isin(times, axis)])
