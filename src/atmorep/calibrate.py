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
        lead_hours: forecast only: the lead to calibrate (default: the box's one-shot lead).
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
            times = case_times(request.data, task, predictor.config, request.every_hours, request.lead_hours)
            if not times:
                raise DataError(f"calibrate: '{request.data}' is too short for one {task} case of the "
                                f"model's box; calibrate on a longer held-out period")
            inference = InferenceRequest(
                checkpoint, request.data, output, task=task, times=times,
                **get_task(task).pick({"lead_hours": request.lead_hours,
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
    if read_meta(checkpoint).get("step") != step:
        raise DataError(f"checkpoint '{checkpoint}' was rewritten (step {step} -> "
                        f"{read_meta(checkpoint).get('step')}) while it was calibrated; calibrate it again")
    _write(checkpoint, model.state_dict(), request, result)
    return result


def _write(checkpoint: Path, weights: dict[str, torch.Tensor], request: CalibrationRequest,
           result: CalibrationResult) -> None:
    """Rewrite the checkpoint with the new factors (atomically, its training state kept)."""
    contents = read_checkpoint(checkpoint)
    spread = {name: value.cpu() for name, value in weights.items() if name.endswith(".spread")}
    record = {**_settings(request), "spread_skill_before": result.before}
    meta = {**contents.meta, CALIBRATION: record}
    train_state = read_train_state(checkpoint) if (checkpoint / TRAIN_STATE).is_file() else None
    write_checkpoint(checkpoint, replace(contents, weights={**contents.weights, **spread}, meta=meta),
                     train_state)
    logger.info("wrote the calibrated spread factors to '%s' (%s)", checkpoint, META)


def _settings(request: CalibrationRequest) -> dict:
    """What a calibration depends on, as ``meta.json`` records it."""
    region = None if request.infill_region is None else [float(v) for v in request.infill_region]
    return {"data": str(request.data), "tasks": list(request.tasks),
            "every_hours": float(request.every_hours), "lead_hours": request.lead_hours,
            "infill_region": region}


def is_calibrated(request: CalibrationRequest) -> bool:
    """Whether the request's checkpoint was calibrated with these settings since training last wrote it."""
    record = read_meta(resolve_checkpoint(request.checkpoint)).get(CALIBRATION) or {}
    return {key: record.get(key) for key in _settings(request)} == _settings(request)
