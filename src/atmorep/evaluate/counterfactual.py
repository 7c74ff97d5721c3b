"""A counterfactual prediction against the factual one: how other auxiliary conditions move it.

A counterfactual store is a prediction made with ``atmorep infer --alpha ...`` (its attribute ``alpha``
names the overrides); the factual store is the same request without them. Both must hold the same
task, cases, lead times, grid and fields. :func:`compare_counterfactual` reports, per field, level and
lead, the shift of the ensemble mean (area-weighted mean of counterfactual minus factual over cases and
points; over the predicted points only where the store has a target mask, as infill has), the RMS of
that difference and the factual ensemble's spread for scale; and writes the mean difference maps
(over cases, at the first level and lead) as a figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from atmorep.errors import DataError
from atmorep.evaluate.metrics import latitude_weights
from atmorep.evaluate.scoring import predicted_levels
from atmorep.io import atomic_directory
from atmorep.prediction_store import MASK, open_prediction

COLUMNS = ("field", "level", "lead", "shift", "rms_difference", "factual_spread")


@dataclass(frozen=True)
class CounterfactualResult:
    """The comparison table (:data:`COLUMNS`), the overrides compared and what was written."""

    table: pd.DataFrame
    alpha: tuple[str, ...]
    output: Path


def _check_pair(counterfactual: xr.Dataset, factual: xr.Dataset, names: tuple[str, str]) -> list[str]:
    """The fields both hold; DataError naming what does not pair."""
    if not counterfactual.attrs.get("alpha"):
        raise DataError(f"prediction '{names[0]}' has no 'alpha' attribute: it is not a counterfactual "
                        "(make one with atmorep infer --alpha NAME=VALUE)")
    if counterfactual.attrs.get("task") != factual.attrs.get("task"):
        raise DataError(f"predictions '{names[0]}' and '{names[1]}' are of tasks "
                        f"{counterfactual.attrs.get('task')!r} and {factual.attrs.get('task')!r}")
    for coordinate in ("time", "prediction_timedelta", "latitude", "longitude", "level"):
        ours, theirs = (data[coordinate].values if coordinate in data.coords else None
                        for data in (counterfactual, factual))
        if (ours is None) != (theirs is None) or (ours is not None and not np.array_equal(ours, theirs)):
            raise DataError(f"predictions '{names[0]}' and '{names[1]}' differ in '{coordinate}'; compare "
                            "the same request with and without --alpha")
    fields = [str(v) for v in counterfactual.data_vars if v != MASK and v in factual.data_vars]
    if not fields:
        raise DataError(f"predictions '{names[0]}' and '{names[1]}' share no field")
    return fields


def _rows(field: str, counter: xr.DataArray, fact: xr.DataArray, mask: xr.DataArray | None) -> list[dict]:
    difference = counter.mean("member") - fact.mean("member")  # (time, lead, [level], lat, lon)
    spread = fact.std("member", ddof=1) if fact.sizes.get("member", 1) > 1 else xr.zeros_like(difference)
    dims = ["time", "latitude", "longitude"]
    weights = latitude_weights(difference["latitude"])
    if mask is not None:  # only the predicted points: the rest of an infill store is the same input in both
        weights = weights * mask.astype(np.float64)  # (time, lead, lat, lon)

    def mean(values):
        return values.weighted(weights).mean(dims, skipna=False)

    shift = mean(difference)
    rms = np.sqrt(mean(difference ** 2))
    scale = np.sqrt(mean(spread ** 2))
    frame = xr.Dataset({"shift": shift, "rms_difference": rms, "factual_spread": scale}).to_dataframe()
    frame = frame.reset_index()
    rows = []
    for record in frame.to_dict("records"):
        lead = pd.Timedelta(record["prediction_timedelta"]) / pd.Timedelta(hours=1)
        rows.append({"field": field, "level": record.get("level", np.nan), "lead": float(lead),
                     **{key: float(record[key]) for key in ("shift", "rms_difference", "factual_spread")}})
    return rows


def _plot_differences(maps: dict[str, xr.DataArray], alpha: tuple[str, ...], path: Path) -> None:
    figure = Figure(figsize=(4.2 * len(maps), 3.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(maps), squeeze=False)[0]
    for ax, (field, values) in zip(axes, maps.items()):
        limit = float(np.nanmax(np.abs(values.values))) or 1.0
        image = ax.pcolormesh(values["longitude"].values, values["latitude"].values, values.values,
                              cmap="RdBu_r", vmin=-limit, vmax=limit, shading="nearest")
        figure.colorbar(image, ax=ax, shrink=0.8)
        ax.set_title(f"{field}: counterfactual - factual", fontsize=9)
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
    figure.suptitle(", ".join(alpha), fontsize=9)
    figure.savefig(path, dpi=100)


def compare_counterfactual(counterfactual: str | Path, factual: str | Path, output: str | Path,
                           overwrite: bool = True) -> CounterfactualResult:
    """Compare a counterfactual prediction store with its factual twin (see the module docstring).

    Writes ``counterfactual.csv`` and ``figures/counterfactual_difference.png`` into ``output``.
    """
    counter, fact = open_prediction(counterfactual), open_prediction(factual)
    fields = _check_pair(counter, fact, (str(counterfactual), str(factual)))
    mask = fact[MASK].astype(bool) if MASK in fact else None
    rows, maps = [], {}
    for field in fields:
        mine, theirs = counter[field], fact[field]
        if "level" in mine.dims:  # the levels this field is predicted at
            present = predicted_levels(mine)
            mine, theirs = mine.isel(level=present), theirs.isel(level=present)
        rows += _rows(field, mine, theirs, mask)
        first = {d: 0 for d in ("prediction_timedelta", "level") if d in mine.dims}
        difference = mine.isel(first).mean("member") - theirs.isel(first).mean("member")
        if mask is not None:
            difference = difference.where(mask.isel({d: 0 for d in first if d in mask.dims}))
        maps[field] = difference.mean("time").compute()
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    alpha = tuple(str(a) for a in counter.attrs["alpha"])
    output = Path(output)
    with atomic_directory(output, overwrite=overwrite) as tmp:
        tmp.mkdir(parents=True)
        table.to_csv(tmp / "counterfactual.csv", index=False)
        (tmp / "figures").mkdir()
        _plot_differences(maps, alpha, tmp / "figures" / "counterfactual_difference.png")
    return CounterfactualResult(table, alpha, output)
