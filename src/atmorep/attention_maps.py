"""Attention maps of one box: which tokens, and which coupled fields, each field attends to.

:func:`attention_maps` places one box of the model around a point of a store (the centre of a
region, or the grid's south-west corner), runs the model on it as inference does for a task
(forecast by default) while :func:`atmorep.model.attention.record_attention` records every attention
module, and writes into the output directory, atomically:

* ``attention.zarr``: one variable per module and head group, the weights ``(head, query, key)``
  (rows sum to one), named ``<module>.<group>``, e.g. ``fields.t.encoder.1.attention.u``; query and
  key dims are a field's tokens (``query_<field>``, ``key_<field>``) flattened in (level, time,
  latitude, longitude) order, whose grid is in the variable's attributes; and ``coupling``
  ``(layer, field, source)``: per encoder layer the share of each field's attention output that comes
  from its own tokens (``source = field``) and from each coupled field, the mean over the field's
  tokens of ``|share_g| / sum_g' |share_g'|`` (:meth:`~atmorep.model.attention.GroupedAttention.inspect`);
  NaN where a field is not coupled with a source;
* ``figures/coupling.png``: the coupling matrix of every encoder layer;
* ``figures/heads_<field>.png``: for one query token of a field (the box centre, last time token,
  first level), the weights of every head of the last encoder layer over the tokens of each source,
  summed over levels and time tokens and drawn on the box's token grid.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from atmorep.checkpoint import read_meta, resolve_checkpoint
from atmorep.data.store import Store
from atmorep.errors import DataError
from atmorep.infer.engine import DomainRunner
from atmorep.infer.predictor import BoxPredictor
from atmorep.infer.request import InferenceRequest, Region, plan_inference
from atmorep.io import atomic_directory
from atmorep.model.attention import SELF, AttentionRecord, record_attention
from atmorep.numerics.tokens import token_grid

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttentionRequest:
    """Attention maps of one box.

    Attributes:
        checkpoint: a checkpoint or run directory.
        data: a prepared store holding the box's inputs.
        output: the directory to write.
        time: the reference time of the box (as in ``atmorep infer``).
        region: ``(lat_min, lat_max, lon_min, lon_max)``: the box is centred on it; None: the grid's
            south-west corner.
        task: the task whose inputs the box gets (``forecast``, ``interpolate``, ``downscale``, ...).
        infill_region: the region an ``infill`` hides.
        query_field: the field whose heads are drawn (default: the first).
        overwrite: replace an existing output.
    """

    checkpoint: Path
    data: Path
    output: Path
    time: np.datetime64
    region: Region | None = None
    task: str = "forecast"
    infill_region: Region | None = None
    query_field: str | None = None
    overwrite: bool = False


@dataclass
class AttentionResult:
    """What was written: the store, the figures and the coupling matrix ``(layer, field, source)``."""

    output: Path
    coupling: xr.DataArray
    figures: list[Path] = field(default_factory=list)


def box_region(store: Store, region: Region | None, box: tuple[int, int]) -> Region:
    """The latitude-longitude rectangle of exactly one box of ``box = (H, W)`` points of the store's grid,
    centred on ``region`` (on the south-west corner of the grid without one)."""
    lat, lon = store.latitude, store.longitude
    h, w = box
    if lat.size < h or lon.size < w:
        raise DataError(f"store '{store.path}' has {lat.size} x {lon.size} grid points, fewer than the "
                        f"model's box of {h} x {w}")
    if region is None:
        row, column = 0, 0
    else:
        lat_min, lat_max, lon_min, lon_max = (float(v) for v in region)
        centre_lat = 0.5 * (lat_min + lat_max)
        centre_lon = (lon_min + 0.5 * ((lon_max - lon_min) % 360.0)) % 360.0
        row = int(np.clip(np.argmin(np.abs(lat - centre_lat)) - h // 2, 0, lat.size - h))
        distance = np.abs((lon - centre_lon + 180.0) % 360.0 - 180.0)
        column = int(np.argmin(distance) - w // 2) % lon.size
    east = lon[(column + w - 1) % lon.size]
    return float(lat[row]), float(lat[row + h - 1]), float(lon[column]), float(east)


def _token_dims(config, levels: dict[str, int]) -> dict[str, tuple[int, int, int, int]]:
    """Per field its token grid ``(L, nT, nH, nW)``."""
    return {f.name: (levels[f.name], *token_grid(config.data.box.shape, f.token_size, f.name))
            for f in config.fields}


def _source_field(module: str, group: str) -> str:
    """The field whose tokens a group's keys are: its own for ``self`` and the decoder's encoder group."""
    return module.split(".")[1] if group in (SELF, "encoder") else group


def _maps_dataset(maps: dict[str, list[AttentionRecord]], grids: dict[str, tuple[int, ...]]) -> xr.Dataset:
    variables = {}
    for module, records in maps.items():
        query = module.split(".")[1]
        for group, weights in records[0].weights.items():
            key = _source_field(module, group)
            values = weights[0].float().cpu().numpy()  # [h, Nq, Nk]
            variables[f"{module}.{group}"] = xr.DataArray(
                values, dims=(f"head_{values.shape[0]}", f"query_{query}", f"key_{key}"),
                attrs={"query_grid": list(grids[query]), "key_grid": list(grids[key]),
                       "token_order": "level, time, latitude, longitude"})
    return xr.Dataset(variables)


def coupling_matrix(maps: dict[str, list[AttentionRecord]], fields: list[str], layers: int) -> xr.DataArray:
    """``(layer, field, source)``: the mean share of each field's encoder attention output per source."""
    values = np.full((layers, len(fields), len(fields)), np.nan)
    for k in range(layers):
        for i, name in enumerate(fields):
            record = maps[f"fields.{name}.encoder.{k}.attention"][0]
            sizes = {_source_field(f"fields.{name}", g): c.double() for g, c in record.contribution.items()}
            total = sum(sizes.values()).clamp(min=1e-300)  # [B, Nq]
            for source, size in sizes.items():
                values[k, i, fields.index(source)] = float((size / total).mean())
    return xr.DataArray(values, dims=("layer", "field", "source"),
                        coords={"layer": np.arange(layers), "field": np.array(fields, dtype=object),
                                "source": np.array(fields, dtype=object)},
                        attrs={"description": "share of a field's attention output from each source"})


def _plot_coupling(coupling: xr.DataArray, path: Path) -> None:
    layers, fields = coupling.sizes["layer"], list(coupling["field"].values)
    figure = Figure(figsize=(3.2 * layers + 0.6, 3.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, layers, squeeze=False)[0]
    for k, ax in enumerate(axes):
        matrix = coupling.isel(layer=k).values
        image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
        for (i, j), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="w" if value < 0.6 else "k")
        ax.set_xticks(range(len(fields)), fields)
        ax.set_yticks(range(len(fields)), fields)
        ax.set_xlabel("source")
        ax.set_ylabel("field")
        ax.set_title(f"encoder layer {k}")
    figure.colorbar(image, ax=list(axes), shrink=0.8, label="share of attention output")
    figure.savefig(path, dpi=100)


def _plot_heads(maps: dict[str, list[AttentionRecord]], name: str, layer: int,
                grids: dict[str, tuple[int, ...]], path: Path) -> None:
    """Every head of field ``name``'s encoder layer ``layer`` for its centre token, on the token grid."""
    record = maps[f"fields.{name}.encoder.{layer}.attention"][0]
    levels, times, rows, columns = grids[name]
    query = np.ravel_multi_index((0, times - 1, rows // 2, columns // 2), grids[name])
    panels = [(group, head, weights[0, head, query].float().cpu().numpy())
              for group, weights in record.weights.items() for head in range(weights.shape[1])]
    figure = Figure(figsize=(2.6 * len(panels), 2.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (group, head, row) in zip(axes, panels):
        source = _source_field(f"fields.{name}", group)
        grid = row.reshape(grids[source]).sum(axis=(0, 1))  # [nH, nW]: over levels and time tokens
        ax.imshow(grid, origin="lower", cmap="magma")
        if grids[source][2:] == (rows, columns):
            ax.plot(columns // 2, rows // 2, "c+", markersize=10)  # where the query token lies
        ax.set_title(f"{name} -> {source}, head {head}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle(f"field {name}, encoder layer {layer}: the centre token's attention", fontsize=9)
    figure.savefig(path, dpi=100)


def attention_maps(request: AttentionRequest) -> AttentionResult:
    """Record and write the attention maps of one box (see the module docstring)."""
    checkpoint = resolve_checkpoint(request.checkpoint)
    predictor = BoxPredictor.from_checkpoint(checkpoint, "cpu", "float32")
    config, store = predictor.config, Store(request.data)
    names = [f.name for f in config.fields]
    query_field = request.query_field or names[0]
    if query_field not in names:
        raise DataError(f"--field {query_field}: the model's fields are {names}")
    box = tuple(config.data.box.shape)
    region = box_region(store, request.region, (box[1], box[2]))
    inference = InferenceRequest(checkpoint, request.data, request.output, task=request.task,
                                 times=(np.datetime64(request.time, "s"),), region=region,
                                 infill_region=request.infill_region, batch_size=1, device="cpu",
                                 precision="float32")
    plan = plan_inference(inference, store, config, read_meta(checkpoint))
    runner = DomainRunner(predictor, store, plan, inference)
    with torch.no_grad(), record_attention(predictor.model) as maps:
        runner.case(0)
    levels = {name: len(predictor.levels[name]) for name in names}
    grids = _token_dims(config, levels)
    coupling = coupling_matrix(maps, names, config.model.encoder_layers)
    dataset = _maps_dataset(maps, grids).assign(coupling=coupling)
    dataset.attrs = {"checkpoint": str(checkpoint), "data": str(request.data), "task": request.task,
                     "time": str(plan.times[0]), "box_region": json.dumps(region)}
    result = AttentionResult(Path(request.output), coupling)
    with atomic_directory(Path(request.output), overwrite=request.overwrite) as tmp:
        dataset.to_zarr(tmp / "attention.zarr", mode="w", consolidated=True, zarr_format=3)
        (tmp / "figures").mkdir()
        _plot_coupling(coupling, tmp / "figures" / "coupling.png")
        _plot_heads(maps, query_field, config.model.encoder_layers - 1, grids,
                    tmp / "figures" / f"heads_{query_field}.png")
    result.figures = [result.output / "figures" / "coupling.png",
                      result.output / "figures" / f"heads_{query_field}.png"]
    logger.info("attention maps of the box %s at %s: %s", region, plan.times[0], result.output)
    return result
