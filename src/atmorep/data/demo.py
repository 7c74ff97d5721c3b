"""A sampling demonstration: draw batches and show what they hold (``atmorep data sample``)."""

from __future__ import annotations

import time

from rich.table import Table

from atmorep.config import BoxConfig, DataConfig, FieldConfig
from atmorep.data.dataset import BoxDataset, make_loader
from atmorep.data.store import Store


def sample_demo(
    stores: list[str],
    fields: list[str] | None,
    box: tuple[int, int, int],
    boxes_per_window: int,
    batches: int,
    workers: int,
    seed: int,
) -> Table:
    """Draw ``batches`` batches and tabulate their boxes, value ranges and the sampling speed."""
    names = fields or list(Store(stores[0]).fields)
    data = DataConfig(
        box=BoxConfig(time=box[0], latitude=box[1], longitude=box[2]),
        boxes_per_window=boxes_per_window,
        num_workers=workers,
    )
    dataset = BoxDataset(stores, [FieldConfig(name=n, token_size=(1, 1, 1)) for n in names], data, seed=seed)
    table = Table(title=f"{batches} batches of {data.batch_size} boxes {box} (time, lat, lon)")
    for column in ("batch", "first time", "box centres (lat, lon)", "fields: shape, normalised min..max"):
        table.add_column(column)
    start = time.perf_counter()
    for index, batch in enumerate(make_loader(dataset, workers)):
        if index == batches:
            break
        meta = batch.metadata
        centres = ", ".join(
            f"({lat:.0f}, {lon:.0f})"
            for lat, lon in zip(
                meta.latitude.mean(1).tolist(), meta.longitude[:, meta.longitude.shape[1] // 2].tolist()
            )
        )
        values = "; ".join(
            f"{k} {tuple(v.shape)} {v.min():.2f}..{v.max():.2f}" for k, v in batch.fields.items()
        )
        table.add_row(str(index), str(meta.datetimes()[0, 0]), centres, values)
    elapsed = time.perf_counter() - start
    table.caption = f"{batches * data.batch_size / elapsed:.1f} samples/s"
    return table
