"""Run a fine-tuned tail over a period (``atmorep infer --checkpoint TAIL``).

The coarse period is tiled with the backbone's box (:meth:`CoarsePeriod.tiling`); each time window's
boxes go through the backbone and the tail together. The downscaling tail writes a prediction store on
the fine grid (one case per window, its steps as ``prediction_timedelta``, task ``downscale``); the
observation tail writes a station store ``FIELD(time, member, station)`` with each station's latitude
and longitude. Both are written to a temporary sibling and renamed into place when complete.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from atmorep.data.observations import STATION
from atmorep.errors import DataError
from atmorep.io import atomic_directory
from atmorep.prediction_store import PredictionLayout, PredictionWriter
from atmorep.tails.coarse import BoxAt, CoarsePeriod
from atmorep.tails.finetune import features_of
from atmorep.tails.grid import GridPairs
from atmorep.tails.saved import LoadedTail, load_tail
from atmorep.tails.sites import SitePairs


@dataclass(frozen=True)
class TailRequest:
    """What to run: the tail checkpoint, the coarse store and period, the fine store or observation
    store whose grid or sites to predict on, and where to write."""

    checkpoint: Path
    coarse: Path
    target: Path
    output: Path
    start: str
    end: str
    backbone: Path | None = None
    device: str = "cpu"
    overwrite: bool = False
    boxes_per_call: int = 9


def apply_tail(request: TailRequest, progress: Callable[[int, int], None] | None = None) -> Path:
    """Run the tail of ``request`` and write its output; see the module docstring."""
    if request.output.exists() and not request.overwrite:
        raise DataError(f"output store '{request.output}' already exists (--overwrite replaces it)")
    loaded = load_tail(request.checkpoint, request.backbone, request.device)
    bounds = (np.datetime64(request.start, "s"), np.datetime64(request.end, "s"))
    coarse = CoarsePeriod(str(request.coarse), loaded.backbone, loaded.spec.fields, *bounds)
    pairs = loaded.recipe.pairs(loaded.spec, coarse, loaded.setup, truth=False, target=str(request.target))
    writer = _write_grid if isinstance(pairs, GridPairs) else _write_sites
    return writer(loaded, pairs, request, progress)


def _windows(coarse: CoarsePeriod) -> list[list[BoxAt]]:
    """The tiling's boxes grouped by their first step."""
    groups: dict[int, list[BoxAt]] = {}
    for box in coarse.tiling():
        groups.setdefault(box.t0, []).append(box)
    return [groups[t0] for t0 in sorted(groups)]


@torch.no_grad()
def _members(loaded: LoadedTail, pairs, boxes: list[BoxAt]):
    batch = pairs.batch(boxes, with_truth=False).to(loaded.backbone.device)
    if batch.guess.shape[0] == 0:
        return None, batch
    features = features_of(loaded.backbone, pairs.coarse, boxes)
    members, _ = loaded.tail.members(features, batch)
    return members.float().cpu(), batch


def _attrs(loaded: LoadedTail, request: TailRequest) -> dict:
    return {"tail": loaded.spec.name, "tail_checkpoint": str(request.checkpoint),
            "backbone_sha256": loaded.backbone.digest, "coarse": str(request.coarse),
            "tail_periods": json.dumps(loaded.meta["periods"])}


def _write_grid(loaded: LoadedTail, pairs: GridPairs, request: TailRequest,
                progress: Callable[[int, int], None] | None) -> Path:
    coarse, fine, targets = pairs.coarse, pairs.fine, loaded.spec.fields
    bt = coarse.backbone.box[0]
    fields: dict[str, list[float] | None] = {}
    for t in targets:
        if t.level is None:
            fields[t.field] = None
        else:
            fields.setdefault(t.field, []).append(t.level)
    fields = {name: None if levels is None else tuple(sorted(levels)) for name, levels in fields.items()}
    members = int(loaded.tail.head.weight.shape[0])
    layout = PredictionLayout(
        fields=fields, level_kind=coarse.store.level_kind.value if any(fields.values()) else "surface",
        prediction_timedelta=np.arange(bt) * np.timedelta64(1, "h"), members=members,
        latitude=fine.latitude, longitude=fine.longitude,
        attrs={"task": "downscale", "coarsen_factor": fine.factor, **_attrs(loaded, request)})
    windows = _windows(coarse)
    hf, wf, f = fine.latitude.size, fine.longitude.size, fine.factor
    with PredictionWriter(request.output, layout, overwrite=request.overwrite) as writer:
        for number, window in enumerate(windows):
            full = np.full((len(targets), members, bt, hf, wf), np.nan, np.float32)
            for start in range(0, len(window), request.boxes_per_call):
                boxes = window[start:start + request.boxes_per_call]
                values, _ = _members(loaded, pairs, boxes)
                grids = pairs.to_grid(values, boxes)  # [B, K, E, T, f H, f W]
                for box, grid in zip(boxes, grids, strict=True):
                    columns = (f * box.k0 + np.arange(grid.shape[-1])) % wf
                    full[:, :, :, f * box.i0:f * box.i0 + grid.shape[-2], columns] = grid
            writer.write(coarse.time[window[0].t0], _case(full, targets, fields))
            if progress:
                progress(number + 1, len(windows))
    return request.output


def _case(full: np.ndarray, targets, fields: dict) -> dict[str, np.ndarray]:
    """``[K, E, T, H, W]`` -> field -> ``[P, E, (L,) H, W]``."""
    case = {}
    for name, levels in fields.items():
        if levels is None:
            k = next(i for i, t in enumerate(targets) if t.field == name)
            case[name] = full[k].transpose(1, 0, 2, 3)
        else:
            index = [next(i for i, t in enumerate(targets) if t.field == name and t.level == level)
                     for level in levels]
            case[name] = full[index].transpose(2, 1, 0, 3, 4)
    return case


def _write_sites(loaded: LoadedTail, pairs: SitePairs, request: TailRequest,
                 progress: Callable[[int, int], None] | None) -> Path:
    coarse, sites, targets = pairs.coarse, pairs.sites, loaded.spec.fields
    members = int(loaded.tail.head.weight.shape[0])
    out = np.full((len(targets), coarse.time.size, members, sites.latitude.size), np.nan, np.float32)
    windows = _windows(coarse)
    for number, window in enumerate(windows):
        values, batch = _members(loaded, pairs, window)
        if values is not None:
            k, t, s = (batch.target[:, 0].cpu().numpy(), batch.extra["time"].cpu().numpy(),
                       batch.extra["station"].cpu().numpy())
            physical = values[:, :, 0].numpy() * pairs.std[k, None] + pairs.mean[k, None]  # [M, E]
            out[k, t, :, s] = physical
        if progress:
            progress(number + 1, len(windows))
    station = sites.stations
    data = {t.field: (("time", "member", STATION), out[k]) for k, t in enumerate(targets)}
    ds = xr.Dataset(data, coords={"time": coarse.time.astype("datetime64[ns]"), "member": np.arange(members),
                                  STATION: station, "latitude": (STATION, sites.latitude),
                                  "longitude": (STATION, sites.longitude)},
                    attrs={**_attrs(loaded, request), "observations": str(request.target),
                           "trained_stations": json.dumps(loaded.setup["stations"])})
    with atomic_directory(request.output, overwrite=request.overwrite) as tmp:
        ds.to_zarr(tmp, consolidated=True)
    return request.output
