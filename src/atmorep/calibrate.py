"""Calibrate a checkpoint's ensemble spread on the predictions users get: tiled inference of held-out data.

Training ends with a fit of the spread factors on validation *boxes* (:mod:`atmorep.train.calibration`).
Tiled inference sees the ensemble differently: overlapping tiles are blended with weights that fade
out towards each tile's edge, where a box's errors are largest, and a task's geometry (a fixed infill
region, every token of a domain coarsened) is not a training box's. On the default corpus the
box-level fit leaves the tiled downscaling over-dispersed (spread/skill 1.23-1.40) and the infill of
u and v under-dispersed (0.69, 0.80).

:func:`calibrate` therefore runs each zero-shot task on a held-out store (the validation period,
never the test period) with the model's current factors, scores the predictions' spread/skill ratio
per field exactly as ``atmorep evaluate`` does, and divides the factors of that task's kind of first
guess (:func:`~atmorep.train.calibration.task_kinds`) by it. Blending is linear in the members, so a
factor ``c`` multiplies the blended ensemble's deviations from its mean by ``c`` and leaves the
ensemble mean alone: after the update the ratio on that store is one (up to the factor limits). The
checkpoint is rewritten atomically, its training state kept, and ``meta.json`` records the request and
the ratios before calibration.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from atmorep.checkpoint import (
    CALIBRATION,
    META,
    TRAIN_STATE,
    read_checkpoint,
    read_meta,
    read_train_state,
    resolve_checkpoint,
    write_checkpoint,
)
from atmorep.errors import DataError
from atmorep.infer.engine import infer
from atmorep.infer.lead_spread import LEAD_SPREAD, LeadSpread, smoothed_factors
from atmorep.infer.predictor import BoxPredictor
from atmorep.infer.request import InferenceRequest, Region, case_times
from atmorep.tasks import get_task
from atmorep.train.calibration import FACTOR_RANGE, set_spread, task_kinds

logger = logging.getLogger(__name__)



def default_tasks(with_input: bool) -> tuple[str, ...]:
    """The calibrated tasks; those that need another model's input (correct) only ``with_input``."""
    return tuple(task for task in task_kinds() if with_input or not get_task(task).required_options)


@dataclass(frozen=True)
class CalibrationRequest:
    """What to calibrate on.

    Attributes:
        checkpoint: a checkpoint directory or a run directory holding one (rewritten in place).
        data: a held-out prepared store (the validation period; never the data you will score).
        tasks: the zero-shot tasks to calibrate, each setting the factors of its kind of guess.
        every_hours: spacing of the cases' reference times.
        lead_hours: forecast only: the longest lead of a member rollout whose spread factors per lead are
            fitted and stored (:mod:`atmorep.infer.lead_spread`; default: none, the one-pass factors only).
        rollout_every_hours: spacing of that rollout's cases (default: ``every_hours``).
        infill_region: infill only: the region hidden (default: the inference default).
        input: correct only: another model's values paired with ``data`` (the default tasks leave
            correct out).
        batch_size: tiles per model call.
        device, precision: as for inference.
    """

    checkpoint: Path
    data: Path
    tasks: tuple[str, ...] = field(default_factory=lambda: default_tasks(with_input=False))
    every_hours: float = 24.0
    lead_hours: float | None = None
    rollout_every_hours: float | None = None
    infill_region: Region | None = None
    input: Path | None = None
    batch_size: int = 16
    device: str = "auto"
    precision: str = "auto"


@dataclass
class CalibrationResult:
    """The checkpoint written and, per task and field, the spread/skill ratio before calibration (after
    it, the ratio on the same store is one wherever the factors stay inside :data:`FACTOR_RANGE`)."""

    checkpoint: Path
    before: dict[str, dict[str, float]] = field(default_factory=dict)
    lead_spread: LeadSpread | None = None  # the factors per lead of a forecast rollout, if fitted


def _spread_skill(prediction: Path, truth: Path) -> dict[str, float]:
    """Per field the spread/skill ratio of a prediction store, as the evaluation's summary reports it."""
    import xarray as xr

    from atmorep.evaluate.run import one_shot_lead
    from atmorep.evaluate.scoring import score, summary_table

    scores = score(prediction, truth, baselines=False)  # the model's spread and error, nothing else
    with xr.open_zarr(prediction) as opened:
        lead = one_shot_lead(opened)
    table = summary_table(scores, lead)
    return {row["field"]: float(row["spread_skill"]) for row in table.to_dict("records")}


def calibrate(request: CalibrationRequest) -> CalibrationResult:
    """Fit the spread factors of a checkpoint on tiled predictions of a held-out store (module doc)."""
    unknown = [task for task in request.tasks if task not in task_kinds()]
    if unknown or not request.tasks:
        raise DataError(f"calibrate: tasks must be among {list(task_kinds())}, got {list(request.tasks)}")
    if request.rollout_every_hours is not None and not request.rollout_every_hours > 0:
        raise DataError(f"calibrate: the spacing of the rollout's cases must be positive, got "
                        f"{request.rollout_every_hours} h")
    if not request.every_hours > 0:
        raise DataError(f"calibrate: the spacing of the cases must be positive, got {request.every_hours} h")
    checkpoint = resolve_checkpoint(request.checkpoint)
    step = read_meta(checkpoint).get("step")
    predictor = BoxPredictor.from_checkpoint(checkpoint, request.device, request.precision)
    if not predictor.config.model.first_guess:
        raise DataError(f"checkpoint '{checkpoint}': its model predicts without a first guess and has no "
                        f"spread factors to calibrate")
    model = predictor.model
    result = CalibrationResult(checkpoint)
    with tempfile.TemporaryDirectory(prefix="atmorep-calibrate-") as scratch:
        for task in request.tasks:
            output = Path(scratch) / f"{task}.zarr"
            per_lead = get_task(task).rolls_out and request.lead_hours is not None  # the tail at one pass,
            lead_hours = None if per_lead else request.lead_hours  # then factors per lead of a rollout
            times = case_times(request.data, task, predictor.config, request.every_hours, lead_hours)
            if not times:
                raise DataError(f"calibrate: '{request.data}' is too short for one {task} case of the "
                                f"model's box; calibrate on a longer held-out period")
            inference = InferenceRequest(
                checkpoint, request.data, output, task=task, times=times,
                **get_task(task).pick({"lead_hours": lead_hours,
                                       "infill_region": request.infill_region, "input": request.input}),
                rollout="mean", batch_size=request.batch_size, device=request.device,
                precision=request.precision, overwrite=True)
            infer(inference, predictor=predictor)
            ratios = _spread_skill(output, request.data)
            result.before[task] = ratios
            factors = {name: tail.spread.clone() for name, tail in model.tails.items()}
            for name, ratio in ratios.items():
                if math.isfinite(ratio) and ratio > 0:
                    kind = task_kinds()[task]
                    factors[name][:, kind] = (factors[name][:, kind] / ratio).clamp(*FACTOR_RANGE)
            set_spread(model, factors)
            logger.info("%s: spread/skill %s before calibration", task,
                        ", ".join(f"{name} {ratio:.3g}" for name, ratio in ratios.items()))
            if per_lead:
                result.lead_spread = _fit_lead_spread(request, checkpoint, predictor, Path(scratch))
    if read_meta(checkpoint).get("step") != step:
        raise DataError(f"checkpoint '{checkpoint}' was rewritten (step {step} -> "
                        f"{read_meta(checkpoint).get('step')}) while it was calibrated; calibrate it again")
    _write(checkpoint, model.state_dict(), request, result)
    return result


def _fit_lead_spread(request: CalibrationRequest, checkpoint: Path, predictor: BoxPredictor,
                     scratch: Path) -> LeadSpread | None:
    """Spread factors per field, level and lead of a member rollout to ``request.lead_hours``
    (:mod:`atmorep.infer.lead_spread`), with the tail's factors as just calibrated; None when the lead
    needs no rollout."""
    import xarray as xr

    from atmorep.evaluate.scoring import score

    every = request.rollout_every_hours or request.every_hours
    times = case_times(request.data, "forecast", predictor.config, every, request.lead_hours)
    if not times:
        raise DataError(f"calibrate: '{request.data}' is too short for one forecast case to "
                        f"{request.lead_hours:g} h; calibrate with a shorter --lead-hours or a longer period")
    output = scratch / "forecast-rollout.zarr"
    inference = InferenceRequest(checkpoint, request.data, output, task="forecast", times=times,
                                 lead_hours=request.lead_hours, rollout="members",
                                 batch_size=request.batch_size, device=request.device,
                                 precision=request.precision, overwrite=True)
    infer(inference, predictor=predictor)
    with xr.open_zarr(output) as opened:
        rolled = int(opened.attrs.get("one_shot_lead_hours", 0)) < request.lead_hours
        applied = bool(opened.attrs.get("lead_spread"))
    if not rolled:
        return None
    table = score(output, request.data, baselines=False).table
    rows = table[(table["method"] == "model") & (table["metric"] == "spread_skill")]
    leads = np.sort(rows["lead"].unique())
    previous = LeadSpread.from_meta(read_meta(checkpoint)) if applied else None
    factors = {}
    for name, part in rows.groupby("field", sort=False):
        ratios = _by_level(part, predictor.levels[name], leads)  # [L, P]
        count = ratios.shape[0]
        old = (previous.table([name], {name: count}, leads).numpy() if previous is not None
               else np.ones((count, leads.size)))
        # ratios measured on members already scaled by the old factors: the new factor is old / ratio
        factors[name] = np.clip(old * smoothed_factors(ratios), *FACTOR_RANGE)
    fitted = LeadSpread(tuple(float(v) for v in leads), factors, "members")
    for name, values in factors.items():
        logger.info("forecast %s: spread factors per lead %s", name,
                    ", ".join(f"{lead:g} h {values[:, i].mean():.3g}" for i, lead in enumerate(leads)
                              if i in (0, leads.size // 4, leads.size // 2, leads.size - 1)))
    return fitted


def _by_level(rows, levels: tuple[float, ...], leads: np.ndarray) -> np.ndarray:
    """``[L, P]`` spread/skill ratios of one field in the model's level order (one row for a surface
    field) at ``leads`` (NaN where not scored)."""
    table = rows.assign(level=rows["level"].fillna(levels[0] if len(levels) == 1 else np.nan))
    pivot = table.pivot_table(index="level", columns="lead", values="value").reindex(columns=leads)
    result = np.full((len(levels), leads.size), np.nan)
    for i, level in enumerate(levels):
        match = np.isclose(pivot.index.to_numpy(dtype=float), level, rtol=1e-5, atol=1e-6)
        if match.any():
            result[i] = pivot.to_numpy()[np.argmax(match)]
    return result


def _write(checkpoint: Path, weights: dict[str, torch.Tensor], request: CalibrationRequest,
           result: CalibrationResult) -> None:
    """Rewrite the checkpoint with the new factors (atomically, its training state kept)."""
    contents = read_checkpoint(checkpoint)
    spread = {name: value.cpu() for name, value in weights.items() if name.endswith(".spread")}
    record = {**_settings(request), "spread_skill_before": result.before}
    meta = {key: value for key, value in contents.meta.items() if key != LEAD_SPREAD}  # refitted or gone
    meta[CALIBRATION] = record
    if result.lead_spread is not None:
        meta[LEAD_SPREAD] = result.lead_spread.to_meta()
    train_state = read_train_state(checkpoint) if (checkpoint / TRAIN_STATE).is_file() else None
    write_checkpoint(checkpoint, replace(contents, weights={**contents.weights, **spread}, meta=meta),
                     train_state)
    logger.info("wrote the calibrated spread factors to '%s' (%s)", checkpoint, META)


def _settings(request: CalibrationRequest) -> dict:
    """What a calibration depends on, as ``meta.json`` records it."""
    region = None if request.infill_region is None else [float(v) for v in request.infill_region]
    return {"data": str(request.data), "tasks": list(request.tasks),
            "every_hours": float(request.every_hours), "lead_hours": request.lead_hours,
            "rollout_every_hours": request.rollout_every_hours,
            "infill_region": region}


def is_calibrated(request: CalibrationRequest) -> bool:
    """Whether the request's checkpoint was calibrated with these settings since training last wrote it."""
    record = read_meta(resolve_checkpoint(request.checkpoint)).get(CALIBRATION) or {}
    return {key: record.get(key) for key in _settings(request)} == _settings(request)
