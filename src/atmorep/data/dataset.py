"""A PyTorch ``IterableDataset`` of normalised space-time boxes, yielding validated ``Batch`` objects.

Use it with ``DataLoader(dataset, batch_size=None, num_workers=n)``: each item is a whole batch.
Worker ``w`` of ``n`` produces the global batch indices ``start + w, start + w + n, ...`` (global
index = epoch * batches_per_epoch + batch), and the data loader returns them in index order,
so the stream of batches is the same for any number of workers (see ``atmorep.data.sampler`` for the seeding).

NaN policy (``data.nan_policy``): ``"skip"`` (default) discards a box that holds any NaN or inf in
any field and draws a replacement from the same stream (deterministically), raising a DataError if
``max_redraws`` boxes in a row are bad; ``"error"`` raises at the first bad box. Batches therefore
never hold NaN. The number of skipped boxes is counted in ``Batch.extras["skipped_boxes"]``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from atmorep.batch import EPOCH, GUIDE, Batch, BatchMetadata
from atmorep.config import DataConfig, FieldConfig
from atmorep.data.sampler import BoxSampler, SampledBox
from atmorep.data.statistics import Statistics
from atmorep.data.store import Store
from atmorep.errors import DataError


@dataclass
class SamplerState:
    """Where a stream stands: the next batch index of an epoch. Saved in training checkpoints."""

    epoch: int = 0
    next_batch: int = 0

    def advance(self, batches: int, batches_per_epoch: int) -> None:
        total = self.next_batch + batches
        self.epoch += total // batches_per_epoch
        self.next_batch = total % batches_per_epoch

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "next_batch": self.next_batch}


class BoxDataset(IterableDataset):
    """Boxes of the given fields from prepared stores, normalised with the stores' (or given) statistics.

    Args:
        paths: prepared stores.
        fields: field configurations (name and levels are used here).
        data: box size, boxes per window, windows per batch, NaN policy, epoch length.
        seed: stream seed. rank: the distributed rank (its own stream).
        state: where to start (epoch and batch index).
        statistics: normalisation statistics (default: each field's from the first store it is read from).
        field_paths: per field, its own stores, one per store of ``paths`` in the same order, with the
            same time steps and grid (``data.field_stores``); other fields are read from ``paths``.
        guide_paths: another model's stores of the fields, one per store of ``paths`` (``data.guide``):
            each box's values from them are in the batch's extras (:meth:`atmorep.batch.Batch.guide`),
            normalised like the box.
    """

    def __init__(
        self,
        paths: Sequence[str],
        fields: Sequence[FieldConfig],
        data: DataConfig,
        *,
        seed: int = 0,
        rank: int = 0,
        state: SamplerState | None = None,
        statistics: Statistics | None = None,
        field_paths: Mapping[str, Sequence[str]] | None = None,
        guide_paths: Sequence[str] | None = None,
    ):
        super().__init__()
        self.stores = [Store(p) for p in paths]
        self.fields = list(fields)
        self.data = data
        self.state = state or SamplerState()
        self.field_stores = self._field_stores(dict(field_paths or {}))
        self.guide = [Store(p) for p in guide_paths or ()]
        if self.guide:
            self._check_pairs(self.guide, "data.guide")
        self.sampler = BoxSampler(
            self.stores,
            data.box.shape,
            boxes_per_window=data.boxes_per_window,
            windows_per_batch=data.windows_per_batch,
            time_step=data.time_step,
            seed=seed,
            rank=rank,
        )
        self.level_index = [
            {f.name: self.field_stores[f.name][k].level_indices(f.name, f.levels) for f in self.fields}
            for k in range(len(self.stores))
        ]
        self.guide_level_index = [{f.name: store.level_indices(f.name, f.levels) for f in self.fields}
                                  for store in self.guide]
        self.levels = {
            f.name: tuple(self.field_stores[f.name][0].field_levels(f.name)[i]
                          for i in self.level_index[0][f.name])
            for f in self.fields
        }
        self._check_guide_levels()
        self.statistics = statistics or Statistics(
            {f.name: self.field_stores[f.name][0].statistics[f.name] for f in self.fields})
        self._scales = self._normalisation()

    def _field_stores(self, field_paths: dict[str, Sequence[str]]) -> dict[str, list[Store]]:
        """Per field the stores it is read from, checked to pair with ``self.stores`` step by step."""
        names = [f.name for f in self.fields]
        unknown = sorted(set(field_paths) - set(names))
        if unknown:
            raise DataError(f"data.field_stores names {unknown}, which are not fields of the run ({names})")
        stores = {name: self.stores for name in names}
        for name, paths in field_paths.items():
            stores[name] = [Store(p) for p in paths]
            self._check_pairs(stores[name], f"data.field_stores.{name}")
        return stores

    def _check_guide_levels(self) -> None:
        for store, indices in zip(self.guide, self.guide_level_index):
            for name, levels in self.levels.items():
                own = tuple(store.field_levels(name)[i] for i in indices[name])
                if len(own) != len(levels) or not np.allclose(own, levels):
                    raise DataError(f"data.guide: store '{store.path}' has the levels {list(own)} of "
                                    f"'{name}', the run reads {list(levels)}; give the other model's values "
                                    "on the same levels")

    def _check_pairs(self, stores: Sequence[Store], key: str) -> None:
        if len(stores) != len(self.stores):
            raise DataError(f"{key}: {len(stores)} stores for the {len(self.stores)} stores of the split; "
                            "give one per store, in the same order")
        for own, main in zip(stores, self.stores):
            own.check_pairs_with(main, key)

    def _normalisation(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        scales = {}
        for f in self.fields:
            mean, std = self.statistics[f.name].select(self.levels[f.name], f.name)
            shape = (-1, 1, 1, 1)  # broadcast over [L, T, H, W]
            scales[f.name] = (mean.reshape(shape).astype(np.float32), std.reshape(shape).astype(np.float32))
        return scales

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        per_epoch = self.data.batches_per_epoch
        index = self.state.epoch * per_epoch + self.state.next_batch + worker  # global batch index
        while True:
            yield self.make_batch(*divmod(index, per_epoch))
            index += workers

    def make_batch(self, epoch: int, batch: int) -> Batch:
        """Batch ``batch`` of epoch ``epoch`` (deterministic)."""
        rng = self.sampler.generator(epoch, batch)
        boxes, values, skipped = [], {}, 0
        for box in self.sampler.iter_batch(rng):
            for attempt in range(self.data.max_redraws + 1):
                read = self._read(box)
                if read is not None:
                    break
                if self.data.nan_policy == "error" or attempt == self.data.max_redraws:
                    raise DataError(
                        f"store '{self.stores[box.store].path}': box at time index {box.index.time}, "
                        f"latitude row {box.index.latitude}, longitude column {box.index.longitude} "
                        f"holds NaN (nan_policy={self.data.nan_policy}, {attempt} redraws)"
                    )
                skipped += 1
                box = self.sampler.draw_box(rng, box.store, box.index.member, box.index.time)
            boxes.append(box)
            for name, value in read.items():
                values.setdefault(name, []).append(value)
        stacked = {name: torch.from_numpy(np.stack(v)) for name, v in values.items()}  # [B, L, T, H, W]
        fields = {f.name: stacked.pop(f.name) for f in self.fields}
        return Batch(
            fields,
            self._metadata(boxes),
            normalised=True,
            extras={"skipped_boxes": torch.full((len(boxes),), skipped, dtype=torch.int64), **stacked},
        )

    def _read(self, box: SampledBox) -> dict[str, np.ndarray] | None:
        """Normalised ``[L, T, H, W]`` per field (and per field its guide's, keyed ``GUIDE + name``), or None
        if any value is not finite."""
        sources = [(f.name, self.field_stores[f.name][box.store], self.level_index[box.store][f.name], f.name)
                   for f in self.fields]
        if self.guide:
            sources += [(GUIDE + f.name, self.guide[box.store], self.guide_level_index[box.store][f.name],
                         f.name) for f in self.fields]
        out = {}
        for key, store, levels, name in sources:
            raw = store.read_box(name, box.index, self.data.box.shape, self.data.time_step, levels)
            if not np.isfinite(raw).all():
                return None
            mean, std = self._scales[name]
            out[key] = (raw - mean) / std
        return out

    def _metadata(self, boxes: list[SampledBox]) -> BatchMetadata:
        times, lats, lons = [], [], []
        for box in boxes:
            time, lat, lon = self.stores[box.store].box_coordinates(
                box.index, self.data.box.shape, self.data.time_step
            )
            times.append((time - EPOCH).astype(np.int64))
            lats.append(lat)
            lons.append(lon)
        store = self.stores[0]
        return BatchMetadata(
            time=torch.from_numpy(np.stack(times)),
            latitude=torch.from_numpy(np.stack(lats)),
            longitude=torch.from_numpy(np.stack(lons)),
            levels=self.levels,
            level_kind=store.level_kind,
            resolution=store.resolution,
        )


def make_loader(dataset: BoxDataset, num_workers: int = 0) -> DataLoader:
    """A data loader that passes whole batches through (``batch_size=None``).

    Workers are forked, unless JAX is loaded in this process (the simulator ran in it, as in the
    quickstart): forking a multithreaded JAX process can deadlock, so workers are then started
    with ``forkserver``.
    """
    context = "forkserver" if num_workers > 0 and "jax" in sys.modules else None
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        prefetch_factor=2 if num_workers > 0 else None,
        multiprocessing_context=context,
    )
