"""Encoder states of boxes: the representation a trained multiformer computes of a space-time box.

:class:`BoxEmbedder` reads boxes of a prepared store (normalised with the checkpoint's statistics),
shows the model every token (no target, so no first guess is needed; the tokens' auxiliary values
optionally overridden, as in ``atmorep infer --alpha``) and returns the states after an
encoder layer (:meth:`atmorep.model.multiformer.MultiFormer.encoder_states`), per field
``[B, L, nT, nH, nW, D]``: the input users' own probes start from. Boxes are given by their origins
(:class:`BoxOrigins`: the store's time index of the first step, the southernmost row, the westernmost
column; longitude wraps on a global grid), built from times and places by :func:`box_origins`.

:func:`embed` writes the states of a request (:class:`EmbedRequest`) into a zarr store, atomically:
one group per field (``xarray.open_zarr(OUT, group=FIELD)``) holding ``states``
``(box, level, token_time, token_latitude, token_longitude, dim)`` float32 with the coordinates
``time`` (box: its first step), ``token_start`` (box, token_time: the first step of each time token),
``latitude`` / ``longitude`` (box, token_*: the token centres, degrees), ``level``, ``row`` /
``column`` (box: the origin in the store's grid) and the scalar ``field``; the root's attributes name
the checkpoint, the store, the layer and the box.
"""

from __future__ import annotations

import contextlib
import datetime
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import xarray as xr
import zarr

from atmorep import __version__
from atmorep.batch import EPOCH, AlphaOverride, Batch, BatchMetadata
from atmorep.checkpoint import read_meta, resolve_checkpoint
from atmorep.data.store import BoxIndex, Store
from atmorep.errors import DataError
from atmorep.infer.box_origins import BoxOrigins, box_origins, check_origins
from atmorep.infer.predictor import BoxPredictor
from atmorep.infer.request import check_compatible
from atmorep.io import atomic_directory
from atmorep.model.multiformer import build_model
from atmorep.numerics.modes import VISIBLE
from atmorep.numerics.tokens import token_grid, tokenise_batch

__all__ = ["BoxEmbedder", "BoxOrigins", "BoxStates", "EmbedRequest", "box_origins", "embed", "embed_boxes"]

DIMS = ("box", "level", "token_time", "token_latitude", "token_longitude", "dim")


@dataclass(frozen=True)
class BoxStates:
    """The encoder states of B boxes and where the boxes lie.

    Attributes:
        states: field -> ``[B, L, nT, nH, nW, D]`` float32 on the CPU.
        origins: the boxes' origins in the store.
        time: ``[B, T]`` datetime64[s] of the box steps.
        latitude: ``[B, H]`` and longitude ``[B, W]``: the boxes' grid points, degrees.
        levels: field -> its level values.
        token_size: field -> ``(tt, th, tw)``.
        layer: the encoder layer (0-based) whose output the states are.
    """

    states: dict[str, torch.Tensor]
    origins: BoxOrigins
    time: np.ndarray
    latitude: np.ndarray
    longitude: np.ndarray
    levels: dict[str, tuple[float, ...]]
    token_size: dict[str, tuple[int, int, int]]
    layer: int

    def pooled(self, fields: Sequence[str] | None = None) -> torch.Tensor:
        """``[B, F * D]``: each field's states averaged over its tokens, fields concatenated in order."""
        names = list(self.states) if fields is None else list(fields)
        return torch.cat([self.states[name].flatten(1, 4).mean(dim=1) for name in names], dim=1)

    def dataset(self, field: str) -> xr.Dataset:
        """The states of one field with their coordinates (see the module docstring)."""
        tt, th, tw = self.token_size[field]
        b = self.time.shape[0]
        lat = self.latitude.reshape(b, -1, th).mean(axis=-1)  # [B, nH]
        radians = np.deg2rad(self.longitude.reshape(b, -1, tw))  # [B, nW, tw]
        lon = np.rad2deg(np.arctan2(np.sin(radians).mean(-1), np.cos(radians).mean(-1))) % 360.0
        states = xr.DataArray(self.states[field].numpy(), dims=DIMS,
                              attrs={"token_size": list(self.token_size[field]), "layer": self.layer,
                                     "description": "encoder states, every token visible"})
        coords = {"time": ("box", self.time[:, 0]),
                  "token_start": (("box", "token_time"), self.time[:, ::tt]),
                  "latitude": (("box", "token_latitude"), lat),
                  "longitude": (("box", "token_longitude"), lon),
                  "level": ("level", np.asarray(self.levels[field], dtype=np.float64)),
                  "row": ("box", self.origins.latitude), "column": ("box", self.origins.longitude),
                  "field": np.array(field, dtype=object)}
        return xr.Dataset({"states": states}, coords=coords)


class BoxEmbedder:
    """A model and a store it may read: the encoder states of any boxes of the store.

    Args:
        predictor: the model with its configuration and statistics.
        store: a prepared store whose fields, levels and grid fit the model.
        checkpoint: where the model came from (for messages and attributes).
        meta: the checkpoint's ``meta.json`` (its level kind and grid spacing are checked).
        alpha: overrides of the tokens' auxiliary values (:class:`~atmorep.batch.AlphaOverride`), e.g.
            ``year``, ``day_of_year`` and ``hour`` set to constants to hide the clock from the model.

    Raises:
        DataError: the store lacks a field or level of the model, or its grid differs.
    """

    def __init__(self, predictor: BoxPredictor, store: Store, checkpoint: Path, meta: dict,
                 alpha: Sequence[AlphaOverride] = ()):
        self.predictor, self.store, self.checkpoint, self.meta = predictor, store, Path(checkpoint), meta
        self.alpha = tuple(alpha)
        self.config = predictor.config
        self.level_indices = check_compatible(store, self.config, meta, self.checkpoint)
        self._memory: dict[str, np.ndarray] = {}

    def preload(self) -> BoxEmbedder:
        """Hold the model's fields of the whole store in memory (per field ``[L, T, H, W]`` float32,
        physical units: 4 bytes times that many points), so that many boxes are cut from it instead of
        read chunk by chunk; returns itself."""
        store, shape = self.store, (self.store.time.size, self.store.latitude.size, self.store.longitude.size)
        self._memory = {name: store.read_box(name, BoxIndex(0, 0, 0), shape, 1, self.level_indices[name])
                        for name in self.predictor.levels}
        return self

    def _raw(self, name: str, index: BoxIndex) -> np.ndarray:
        """Field ``name``'s box at ``index``, ``[L, T, H, W]`` physical units."""
        if not self._memory:
            return self.store.read_box(name, index, self.box, self.config.data.time_step,
                                       self.level_indices[name])
        (t, h, w), step = self.box, self.config.data.time_step
        columns = (index.longitude + np.arange(w)) % self.store.longitude.size
        values = self._memory[name][:, index.time:index.time + (t - 1) * step + 1:step,
                                    index.latitude:index.latitude + h]
        return values[..., columns]

    @classmethod
    def open(cls, checkpoint: str | Path, data: str | Path, device: str = "cpu", precision: str = "float32",
             alpha: Sequence[str] = ()) -> BoxEmbedder:
        """The model of a checkpoint (or run directory) on the store ``data``; ``alpha`` as in
        ``atmorep infer --alpha`` (``"hour=0"`` sets, ``"day_of_year+=182"`` shifts)."""
        overrides = tuple(AlphaOverride.parse(text) for text in alpha)
        directory = resolve_checkpoint(checkpoint)
        predictor = BoxPredictor.from_checkpoint(directory, device, precision)
        return cls(predictor, Store(data), directory, read_meta(directory), overrides)

    def randomised(self, seed: int = 0) -> BoxEmbedder:
        """The control: the same architecture, statistics and store with freshly initialised weights
        (``seed``; the global random state is untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(self.config)
        predictor = BoxPredictor(model, self.config, self.predictor.statistics, self.predictor.device,
                                 self.predictor.autocast_dtype)
        return self._copy(predictor, {**self.meta, "random_seed": int(seed)}, self.alpha)

    def with_alpha(self, alpha: Sequence[AlphaOverride]) -> BoxEmbedder:
        """The same model and store with other overrides of the tokens' auxiliary values."""
        return self._copy(self.predictor, self.meta, tuple(alpha))

    def _copy(self, predictor: BoxPredictor, meta: dict, alpha: tuple[AlphaOverride, ...]) -> BoxEmbedder:
        copy = BoxEmbedder(predictor, self.store, self.checkpoint, meta, alpha)
        copy._memory = self._memory  # the fields held in memory are shared, not copied
        return copy

    @property
    def box(self) -> tuple[int, int, int]:
        """``(T, H, W)`` grid points of a box."""
        return tuple(self.config.data.box.shape)

    @property
    def layers(self) -> int:
        return int(self.config.model.encoder_layers)

    def origins(self, times: Sequence[np.datetime64], places: Sequence[tuple[float, float]] | None = None,
                all_tiles: bool = False) -> BoxOrigins:
        """The origins of boxes starting at ``times`` at ``places`` (see :func:`box_origins`)."""
        return box_origins(self.store, times, self.box, self.config.data.time_step, places, all_tiles)

    def read(self, origins: BoxOrigins) -> Batch:
        """The boxes ``[B, L, T, H, W]`` per field, normalised; DataError for a box holding NaN."""
        store, step, levels = self.store, self.config.data.time_step, self.predictor.levels
        check_origins(store, origins, self.box, step)
        values: dict[str, list[torch.Tensor]] = {name: [] for name in levels}
        times, lats, lons = [], [], []
        for t, row, column in zip(origins.time, origins.latitude, origins.longitude):
            index = BoxIndex(int(t), int(row), int(column))
            for name in levels:
                raw = self._raw(name, index)  # [L, T, H, W]
                if not np.isfinite(raw).all():
                    raise DataError(f"store '{store.path}': field '{name}' holds NaN or inf in the box from "
                                    f"{store.time[int(t)]} at row {int(row)}, column {int(column)}")
                values[name].append(torch.from_numpy(np.ascontiguousarray(raw)))
            time, lat, lon = store.box_coordinates(index, self.box, step)
            times.append((time - EPOCH).astype(np.int64))
            lats.append(lat)
            lons.append(lon)
        fields = self.predictor.statistics.normalise_fields(
            {name: torch.stack(v) for name, v in values.items()}, levels)
        metadata = BatchMetadata(torch.from_numpy(np.stack(times)), torch.from_numpy(np.stack(lats)),
                                 torch.from_numpy(np.stack(lons)), levels, store.level_kind, store.resolution)
        return Batch(fields, metadata)

    def _layer(self, layer: int) -> int:
        if not -self.layers <= layer < self.layers:
            raise DataError(f"encoder layer {layer} does not exist: the model of '{self.checkpoint}' has "
                            f"{self.layers} (0..{self.layers - 1}, or -1 for the last)")
        return layer % self.layers

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype, device = self.predictor.autocast_dtype, self.predictor.device
        return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)

    @torch.inference_mode()
    def encode(self, batch: Batch, layer: int = -1) -> dict[str, torch.Tensor]:
        """Field -> ``[B, L, nT, nH, nW, D]`` float32 (CPU): the states after encoder layer ``layer`` of
        normalised boxes, every token visible, with this embedder's alpha overrides."""
        layer = self._layer(layer)
        model, device = self.predictor.model, self.predictor.device
        batch = replace(batch, metadata=replace(batch.metadata, alpha=self.alpha))
        tokens, alpha = tokenise_batch(batch.to(device), self.predictor.fields)  # [B, L, nT, nH, nW, D_f]
        modes = {name: torch.full(value.shape[:5], VISIBLE, dtype=torch.int8, device=device)
                 for name, value in tokens.items()}
        with self._autocast():
            encoded = model.encoder_states(tokens, modes, alpha)[layer]  # field -> [B, N, D]
        return {name: states.to(torch.float32).cpu().reshape(*tokens[name].shape[:5], -1)
                for name, states in encoded.items()}  # [B, N, D] -> [B, L, nT, nH, nW, D]

    def states(self, origins: BoxOrigins, layer: int = -1, batch_size: int = 16) -> BoxStates:
        """The encoder states of the boxes at ``origins``, ``batch_size`` boxes per model call (the
        result does not depend on it)."""
        if batch_size < 1:
            raise DataError(f"batch size must be at least 1, got {batch_size}")
        layer = self._layer(layer)
        parts, times, lats, lons = [], [], [], []
        for start in range(0, len(origins), batch_size):
            batch = self.read(origins.take(slice(start, start + batch_size)))
            parts.append(self.encode(batch, layer))
            times.append(batch.metadata.datetimes())
            lats.append(batch.metadata.latitude.numpy())
            lons.append(batch.metadata.longitude.numpy())
        if not parts:
            raise DataError("no box to embed")
        states = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
        token_size = {f.name: tuple(f.token_size) for f in self.config.fields}
        return BoxStates(states, origins, np.concatenate(times), np.concatenate(lats), np.concatenate(lons),
                         dict(self.predictor.levels), token_size, layer)


def embed_boxes(checkpoint: str | Path, data: str | Path, times: Sequence[np.datetime64],
                places: Sequence[tuple[float, float]] | None = None, all_tiles: bool = False,
                layer: int = -1, device: str = "cpu", precision: str = "float32",
                batch_size: int = 16, alpha: Sequence[str] = ()) -> BoxStates:
    """The encoder states of the boxes starting at ``times`` at ``places`` (or on every tile).

    Args:
        checkpoint: a checkpoint or run directory.
        data: a prepared store the model fits.
        times: the boxes' first times (steps of the store).
        places: ``(latitude, longitude)`` degrees each box is centred on (see :func:`box_origins`).
        all_tiles: instead of places, the tiles that cover the store's grid without overlap where it
            divides into boxes (see :func:`box_origins`).
        layer: the encoder layer (-1: the last).
        device, precision: as in ``atmorep infer``.
        batch_size: boxes per model call.
        alpha: overrides of the tokens' auxiliary values, e.g. ``("hour=0",)``.

    Returns:
        The :class:`BoxStates`, boxes time-major (all places of the first time first).
    """
    embedder = BoxEmbedder.open(checkpoint, data, device, precision, alpha)
    return embedder.states(embedder.origins(times, places, all_tiles), layer, batch_size)


@dataclass(frozen=True)
class EmbedRequest:
    """An ``atmorep embed`` run: the arguments of :func:`embed_boxes`, the output and ``overwrite``."""

    checkpoint: Path
    data: Path
    output: Path
    times: tuple[np.datetime64, ...]
    places: tuple[tuple[float, float], ...] = ()
    all_tiles: bool = False
    layer: int = -1
    batch_size: int = 16
    device: str = "auto"
    precision: str = "auto"
    alpha: tuple[str, ...] = ()
    overwrite: bool = False


def write_states(states: BoxStates, output: str | Path, attrs: dict, overwrite: bool = False) -> Path:
    """Write the states into the zarr store ``output`` (one group per field), atomically."""
    output = Path(output)
    with atomic_directory(output, overwrite=overwrite) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        root.attrs.update({**attrs, "fields": list(states.states), "layer": states.layer,
                           "boxes": len(states.origins)})
        for name in states.states:
            states.dataset(name).to_zarr(tmp, group=name, mode="w", consolidated=False, zarr_format=3)
        zarr.consolidate_metadata(str(tmp))
    return output


def embed(request: EmbedRequest) -> BoxStates:
    """Compute the states of a request and write them to ``request.output``; returns them."""
    if request.output.exists() and not request.overwrite:
        raise FileExistsError(f"'{request.output}' already exists (pass --overwrite to replace it)")
    embedder = BoxEmbedder.open(request.checkpoint, request.data, request.device, request.precision,
                                request.alpha)
    origins = embedder.origins(request.times, request.places or None, request.all_tiles)
    states = embedder.states(origins, request.layer, request.batch_size)
    config = embedder.config
    attrs = {"checkpoint": str(embedder.checkpoint.resolve()), "checkpoint_step": embedder.meta.get("step"),
             "data": str(Path(request.data).resolve()), "box": list(embedder.box),
             "time_step": int(config.data.time_step), "dim": int(config.model.dim),
             "token_grid": json.dumps({f.name: token_grid(embedder.box, f.token_size, f.name)
                                       for f in config.fields}),
             "normalised": "inputs normalised with the checkpoint's statistics",
             "alpha": [str(override) for override in embedder.alpha],
             "atmorep_version": __version__,
             "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    write_states(states, request.output, attrs, request.overwrite)
    return states
