"""Zero-shot inference over a region or the globe: read, tile, predict, blend, roll out, write.

For every case (a reference time) :class:`DomainRunner` reads the task's window of every field on
the domain from the store (only the steps the task may see: a forecast never reads past its
initialisation), normalises it with the checkpoint's statistics and applies the model tile by tile
(:func:`atmorep.infer.tiling.run_tiled`): overlapping boxes, batched, blended with smooth weights,
ensemble members kept. Forecasts past the box's one-shot lead roll out
(:mod:`atmorep.infer.rollout`): each member continues on its own output (``rollout="members"``) or
the ensemble mean is continued (``"mean"``). The result is de-normalised and written case by case
to a prediction store in the WeatherBench-2 layout (:mod:`atmorep.prediction_store`), atomically.

A window holding NaN or inf is an error naming the field and time: the model needs complete inputs.
"""

from __future__ import annotations

import json
import logging
import time as clock
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from atmorep.batch import EPOCH, BatchMetadata
from atmorep.checkpoint import calibration_label, read_meta
from atmorep.data.store import BoxIndex, Store
from atmorep.errors import DataError
from atmorep.infer.lead_spread import LeadSpread, apply_lead_spread
from atmorep.infer.predictor import BoxPredictor, token_modes
from atmorep.infer.request import (
    InferencePlan,
    InferenceRequest,
    alpha_overrides,
    check_request,
    coarsen_factor,
    inference_task,
    plan_inference,
)
from atmorep.infer.rollout import rollout
from atmorep.infer.tiling import TilePlan, extract, run_tiled
from atmorep.prediction_store import PredictionLayout, PredictionWriter
from atmorep.runtime import derive_seed
from atmorep.tasks.infill import region_points

logger = logging.getLogger(__name__)

TARGET_STREAM = 0x74617267  # key of the per-case target-mask streams derived from the request seed

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class InferenceResult:
    """What an inference run did.

    Attributes:
        output: the prediction store written.
        task: the task.
        cases: reference times predicted.
        domain_passes: model passes over the whole domain (cases x rollout steps).
        tiles: tiles fed to the model (a member rollout feeds E windows per tile).
        seconds: wall-clock time of the prediction loop (reading, model, blending, writing).
    """

    output: Path
    task: str
    cases: int
    domain_passes: int
    tiles: int
    seconds: float

    @property
    def tiles_per_second(self) -> float:
        return self.tiles / self.seconds if self.seconds > 0 else float("nan")

    @property
    def fields_per_second(self) -> float:
        """Whole-domain predictions (all fields of one model pass) per second."""
        return self.domain_passes / self.seconds if self.seconds > 0 else float("nan")


class ModelInput:
    """Another model's store read in place of the data store (model correction): same grid, its own time
    axis and levels, checked against the data store."""

    def __init__(self, store: Store, data: Store, predictor: BoxPredictor) -> None:
        self.store, self.data = store, data
        store.check_pairs_with(data, "input", axes=("latitude", "longitude"))  # its times are looked up
        self.levels = {f.name: store.level_indices(f.name, f.levels) for f in predictor.fields}

    def position(self, start: int, steps: int, time_step: int) -> int:
        """The input store's index of the data store's window ``start`` (DataError unless it holds every
        step of the window, at the same spacing)."""
        wanted = self.data.time[start:start + steps * time_step:time_step]
        index = np.searchsorted(self.store.time, wanted)
        found = (index < self.store.time.size) & (self.store.time[np.minimum(index, self.store.time.size - 1)]
                                                  == wanted)
        if not found.all():
            raise DataError(f"input '{self.store.path}' has no data at {wanted[~found][0]}; the correction "
                            "input's times must cover every case's window")
        if steps > 1 and not (np.diff(index) == time_step).all():
            raise DataError(f"input '{self.store.path}': the window from {wanted[0]} is not {time_step} "
                            "step(s) apart in its time axis; give it the data store's time steps")
        return int(index[0])


class DomainRunner:
    """Applies a predictor to the cases of a plan on its domain."""

    def __init__(self, predictor: BoxPredictor, store: Store, plan: InferencePlan, request: InferenceRequest,
                 lead_spread: LeadSpread | None = None):
        self.predictor, self.store, self.plan, self.request = predictor, store, plan, request
        fitted = lead_spread is not None and lead_spread.rollout == request.rollout
        self.lead_spread = lead_spread if fitted else None  # factors of another rollout mode do not apply
        self.source = None if request.input is None else ModelInput(Store(request.input), store, predictor)
        self.task = inference_task(request.task)
        self.names = [f.name for f in predictor.fields]
        self.level_values = predictor.levels  # field -> the model's levels
        self.levels = [len(self.level_values[n]) for n in self.names]
        self.level_kind, self.resolution = store.level_kind, store.resolution
        self.predicted = list(predictor.predicted)
        tile_lat, tile_lon = plan.tiles.tile_coordinates(plan.domain.latitude, plan.domain.longitude)
        self.tile_lat, self.tile_lon = tile_lat, tile_lon  # [K, H], [K, W]
        self.tiles_run = 0
        first = predictor.fields[0]
        self.token_size = tuple(first.token_size)
        self.factor = coarsen_factor(request, predictor.config)
        self.alpha = alpha_overrides(request)
        self.ratio = 0.5 if request.ratio is None else request.ratio
        self.region = (region_points(plan.domain.latitude, plan.domain.longitude, request.infill_region)
                       if request.infill_region is not None else None)

    def read_window(self, start: int, steps: int) -> Tensor:
        """``[C, T, H, W]`` normalised: the first ``steps`` window steps of every field, zeros after; read
        from the request's ``input`` store where it has one (model correction)."""
        plan, store, levels = self.plan, self.store, self.plan.level_indices
        time_step = self.predictor.config.data.time_step
        if self.source is not None:
            store, levels = self.source.store, self.source.levels
            start = self.source.position(start, steps, time_step)
        h, w = plan.domain.shape
        index = BoxIndex(time=int(start), latitude=plan.domain.lat_start, longitude=plan.domain.lon_start)
        channels = []
        for name in self.names:
            values = store.read_box(name, index, (steps, h, w), time_step, levels[name])  # [L, steps, H, W]
            if not np.isfinite(values).all():
                when = store.time[start]
                raise DataError(f"store '{store.path}': field '{name}' holds NaN or inf in the window from "
                                f"{when}; inference needs complete inputs")
            field = torch.from_numpy(np.ascontiguousarray(values))[None]  # [1, L, steps, H, W]
            normal = self.predictor.statistics.normalise_fields({name: field}, self.level_values)[name]
            channels.append(normal[0])
        window = torch.cat(channels, dim=0)  # [C, steps, H, W]
        missing = plan.layout.window - steps
        return torch.nn.functional.pad(window, (0, 0, 0, 0, 0, missing)) if missing else window

    def apply(self, window: Tensor, tile_points: Tensor, seconds: Tensor) -> Tensor:
        """One model pass over the domain.

        Args:
            window: ``[S, C, T, H, W]`` normalised input; ``S`` is 1, or E (member rollout: member e
                of the output comes from window e).
            tile_points: ``[K, T, H, W]`` bool target points of every tile (``extract`` of the
                domain's point mask).
            seconds: ``[T]`` int64 times of the window steps.

        Returns:
            ``[E, Cp, P, H, W]``: the predicted fields' channels at the layout's predicted steps.
        """
        plan, predictor = self.plan, self.predictor
        steps = list(plan.layout.predicted)

        def on_tiles(tiles: Tensor, index: Tensor) -> Tensor:
            b, s = tiles.shape[:2]
            x = tiles.reshape(b * s, *tiles.shape[2:])  # [b * S, C, T, H, W]
            inputs = dict(zip(self.names, x.split(self.levels, dim=1)))
            pts = tile_points[index].repeat_interleave(s, dim=0)  # [b * S, T, H, W]
            modes = {f.name: token_modes(pts, f.token_size, n, plan.layout.mode)
                     for f, n in zip(predictor.fields, self.levels)}
            meta = BatchMetadata(time=seconds[None].expand(b * s, -1), levels=self.level_values,
                                 latitude=self.tile_lat[index].repeat_interleave(s, dim=0),
                                 longitude=self.tile_lon[index].repeat_interleave(s, dim=0),
                                 level_kind=self.level_kind, resolution=self.resolution, alpha=self.alpha)
            if s == 1:
                out = predictor.predict(inputs, modes, meta, self.factor)  # field -> [b, E, L, T, H, W]
            else:  # member e of window e only: field -> [b * S, 1, L, T, H, W]
                out = predictor.predict(inputs, modes, meta, self.factor, member=torch.arange(s).repeat(b))
            stacked = torch.cat([out[n] for n in self.predicted], dim=2)[:, :, :, steps].cpu()
            self.tiles_run += b * s
            return stacked if s == 1 else stacked.reshape(b, s, *stacked.shape[2:])  # [b, E, Cp, P, H, W]

        return run_tiled(on_tiles, window, plan.tiles, self.request.batch_size)

    def case(self, number: int) -> tuple[Tensor, Tensor | None]:
        """The prediction ``[E, Cp, P, H, W]`` (normalised) of case ``number`` and its point mask
        ``[P, H, W]`` (infill and reconstruct only)."""
        plan, layout = self.plan, self.plan.layout
        start = int(plan.starts[number])
        seconds = self._seconds(start)
        generator = torch.Generator().manual_seed(derive_seed(self.request.seed, TARGET_STREAM, number))
        points = self.task.target_points(layout, plan.domain.shape, region=self.region, ratio=self.ratio,
                                         token_size=self.token_size, generator=generator)  # [T, H, W]
        tile_points = extract(points, plan.tiles)  # [K, T, H, W]
        window = self.read_window(start, layout.read_steps)  # [C, T, H, W]
        if self.task.rolls_out:
            return self._forecast(window, tile_points, seconds), None
        out = self.apply(self.task.model_input(window, self.factor)[None], tile_points, seconds)
        if not layout.with_mask:
            return out, None
        mask = points[list(layout.predicted)]  # [P, H, W]
        truth = self._predicted_channels(window)[:, list(layout.predicted)]  # [Cp, P, H, W]
        return torch.where(mask, out, truth[None].to(out.dtype)), mask

    def _forecast(self, window: Tensor, tile_points: Tensor, seconds: Tensor) -> Tensor:
        """``[E, Cp, P, H, W]``: one pass, or a rollout of the visible steps past the box's lead."""
        plan, layout = self.plan, self.plan.layout
        if plan.rollout_steps == 1:
            return self.apply(window[None], tile_points, seconds)[:, :, : plan.leads.size]
        shift = int(plan.step / np.timedelta64(1, "s")) * layout.steps_per_pass
        by_member = self.request.rollout == "members"
        members: list[Tensor] = []

        def step(state: Tensor) -> Tensor:  # state [S, C, T - k, H, W] -> forecast [S, C, k, H, W]
            padded = torch.nn.functional.pad(state, (0, 0, 0, 0, 0, layout.steps_per_pass))  # [S, C, T, H, W]
            source = padded[:1] if not members else padded  # the member windows start identical
            out = self.apply(source, tile_points, seconds + len(members) * shift)  # [E, C, k, H, W]
            members.append(out)
            return out if by_member else out.mean(dim=0, keepdim=True)

        visible = window[None, :, : layout.reference + 1]  # [1, C, T - k, H, W]
        initial = visible.expand(self.predictor.members, *visible.shape[1:]) if by_member else visible
        for _ in rollout(step, initial, plan.rollout_steps):
            pass
        out = torch.cat(members, dim=2)[:, :, : plan.leads.size]  # [E, C, P, H, W]
        if self.lead_spread is None:
            return out
        counts = {name: len(self.level_values[name]) for name in self.predicted}
        hours = plan.leads * (plan.step / np.timedelta64(1, "h"))
        factors = self.lead_spread.table(self.predicted, counts, hours)  # [C, P]
        return apply_lead_spread(out, factors)

    def _seconds(self, start: int) -> Tensor:
        """``[T]`` int64 times of the window steps (may run past the store's end for a forecast)."""
        times = self.store.time[start] + self.plan.step * np.arange(self.plan.layout.window)
        return torch.as_tensor((times - EPOCH).astype("timedelta64[s]").astype(np.int64))

    def _predicted_channels(self, window: Tensor) -> Tensor:
        parts = window.split(self.levels, dim=0)
        return torch.cat([p for n, p in zip(self.names, parts) if n in self.predicted], dim=0)

    def physical(self, out: Tensor) -> dict[str, np.ndarray]:
        """Per predicted field ``[P, E, L, H, W]`` (``[P, E, H, W]`` for surface fields) in physical units."""
        counts = [len(self.level_values[n]) for n in self.predicted]
        result = {}
        for name, part in zip(self.predicted, out.split(counts, dim=1)):  # [E, L, P, H, W]
            values = self.predictor.statistics.denormalise_fields({name: part}, self.level_values)[name]
            values = values.permute(2, 0, 1, 3, 4).numpy().astype(np.float32)  # [P, E, L, H, W]
            result[name] = values[:, :, 0] if self.store.is_surface(name) else values
        return result


def seam_attrs(tiles: TilePlan, config) -> dict:
    """Where token and tile boundaries lie on the domain (attributes ``seams_latitude`` and
    ``seams_longitude``: indices ``i`` of boundaries between points ``i - 1`` and ``i``, ``periodic``),
    so that evaluation can measure blockiness."""
    result = {"periodic": bool(tiles.periodic)}
    axes = {"latitude": (0, tiles.latitude_origins), "longitude": (1, tiles.longitude_origins)}
    for axis, (index, origins) in axes.items():
        size, box = tiles.grid_shape[index], tiles.box[index]
        sizes = {f.token_size[1 + index] for f in config.fields}
        seams = {(origin + k * token) % size for origin in origins for token in sizes
                 for k in range(box // token + 1)}
        periodic = tiles.periodic and axis == "longitude"
        result[f"seams_{axis}"] = sorted(int(i) for i in seams if periodic or 0 < i < size)
    return result


def prediction_layout(runner: DomainRunner, request: InferenceRequest, plan: InferencePlan,
                      meta: dict) -> PredictionLayout:
    """The output store's layout and attributes of a run."""
    predictor, store = runner.predictor, runner.store
    hours = plan.step / np.timedelta64(1, "h")
    attrs = {
        "title": f"atmorep {request.task}", "task": request.task, "checkpoint": str(request.checkpoint),
        "checkpoint_step": int(meta.get("step", -1)), "checkpoint_calibration": calibration_label(meta),
        "data": str(request.data),
        "time_step_hours": float(hours), "box": list(predictor.config.data.box.shape),
        "tile_overlap": list(plan.tiles.overlap), "batch_size": int(request.batch_size),
        "config": json.dumps(predictor.config.model_dump(mode="json")),
    }
    attrs |= seam_attrs(plan.tiles, predictor.config)
    transforms = {name: transform for name in predictor.predicted if (transform := store.transform(name))}
    if transforms:
        attrs["transforms"] = json.dumps(transforms)
    region = request.infill_region
    resolved = {"coarsen_factor": int(runner.factor), "ratio": float(runner.ratio),
                "input": None if request.input is None else str(request.input),
                "rollout": request.rollout,
                "lead_spread": runner.lead_spread is not None and plan.rollout_steps > 1,
                "one_shot_lead_hours": float(plan.layout.steps_per_pass * hours),
                "infill_region": None if region is None else [float(v) for v in region]}
    attrs |= {name: resolved[name] for name in runner.task.output_attrs}
    if runner.alpha:
        attrs["alpha"] = [str(override) for override in runner.alpha]  # a counterfactual
    fields = {n: None if store.is_surface(n) else tuple(runner.level_values[n]) for n in predictor.predicted}
    return PredictionLayout(
        fields=fields, level_kind=store.level_kind.value, prediction_timedelta=plan.leads * plan.step,
        members=predictor.members, latitude=plan.domain.latitude, longitude=plan.domain.longitude,
        attrs=attrs, with_mask=plan.layout.with_mask)


def infer(request: InferenceRequest, progress: Progress | None = None,
          predictor: BoxPredictor | None = None) -> InferenceResult:
    """Run a checked inference request and write its prediction store.

    Args:
        request: what to predict, where and when.
        progress: called as ``progress(done, total)`` after every case.
        predictor: an already loaded model (default: loaded from ``request.checkpoint``).

    Returns:
        What was done, with timings.
    """

    check_request(request)
    meta = read_meta(request.checkpoint)
    store = Store(request.data)
    if predictor is None:
        predictor = BoxPredictor.from_checkpoint(request.checkpoint, request.device, request.precision)
    plan = plan_inference(request, store, predictor.config, meta)
    runner = DomainRunner(predictor, store, plan, request, LeadSpread.from_meta(meta))
    began = clock.perf_counter()
    with PredictionWriter(request.output, prediction_layout(runner, request, plan, meta),
                          overwrite=request.overwrite) as writer:
        for number, reference in enumerate(plan.times):
            out, mask = runner.case(number)
            writer.write(reference, runner.physical(out), None if mask is None else mask.numpy())
            if progress is not None:
                progress(number + 1, len(plan.times))
    seconds = clock.perf_counter() - began
    result = InferenceResult(Path(request.output), request.task, len(plan.times),
                             len(plan.times) * plan.rollout_steps, runner.tiles_run, seconds)
    logger.info("%s: %d cases in %.1f s (%.1f tiles/s)", request.task, result.cases, seconds,
                result.tiles_per_second)
    return result
