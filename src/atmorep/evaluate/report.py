"""Evaluation reports: score tables and figures in one Markdown file with its PNG figures.

:func:`write_report` turns the scores of one or more tasks (:class:`atmorep.evaluate.scoring.Scores`
or anything with its three tables) and a few mapped cases (:class:`MapCase`, picked from a prediction
store by :func:`map_case`) into ``report.md`` and ``figures/*.png``:

- the run's settings as a table (checkpoint, data, times ...);
- per task and field, the model against every baseline: RMSE, MAE, bias, ACC, CRPS, spread and
  spread/skill per lead time, averaged over the field's levels;
- RMSE against lead time, spread against RMSE, rank histograms and zonal power spectra, one panel
  per field; maps of truth, prediction (ensemble mean), error and spread, one figure per case.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with an Agg canvas: no display, no
change to pyplot's backend and nothing left open in pyplot. Everything is drawn in a hidden staging
directory first; then ``figures/`` is swapped in and ``report.md`` is replaced by an atomic rename,
so a failure leaves the previous report (or none), never a half-written one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

import atmorep
from atmorep.errors import DataError
from atmorep.evaluate.climatology import valid_times
from atmorep.fields import field_spec
from atmorep.io import atomic_write_text

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from atmorep.evaluate.scoring import Scores

log = logging.getLogger(__name__)

REPORT, FIGURES = "report.md", "figures"
METHODS = ("model", "persistence", "climatology", "linear", "bilinear", "bicubic")  # table order
METRICS = {"rmse": "RMSE", "mae": "MAE", "bias": "bias", "acc": "ACC", "crps": "CRPS", "spread": "spread",
           "spread_skill": "spread/skill"}
COLUMNS = {"table": ("task", "field", "level", "lead", "method", "metric", "value"),
           "rank_histogram": ("task", "field", "level", "lead", "rank", "frequency"),
           "spectra": ("task", "field", "level", "lead", "method", "wavenumber", "power")}
MAX_TABLE_LEADS = 8  # lead times listed per table; the figures show all
MAX_CURVES = 3  # lead times drawn in a rank-histogram or spectrum panel
MISSING = "–"  # a score not computed for that method
READING = ("Scores are means over the cases and the area (cos-latitude weights), then over the levels "
           f"of the field. `{MISSING}`: not computed for that method. CRPS of a deterministic baseline "
           "is its MAE; spread/skill is corrected for the ensemble size (1: calibrated, below 1: "
           "over-confident).")


@dataclass(frozen=True)
class MapCase:
    """One case to map: one field, level and lead time on a (regional or global) grid.

    Attributes:
        task: the task of the prediction (the report section the map goes to).
        field: ERA5 short name.
        level: the level value, None for a surface field.
        lead_hours: the lead time (``prediction_timedelta``) in hours.
        time: the valid time (reference time + lead time).
        latitude: ``[H]`` degrees north.
        longitude: ``[W]`` degrees east, increasing modulo 360.
        truth: ``[H, W]`` the truth at the valid time.
        prediction: ``[H, W]`` the ensemble mean.
        spread: ``[H, W]`` the ensemble standard deviation (E - 1 in the denominator; NaN for E = 1).
        units: the field's units.
    """

    task: str
    field: str
    level: float | None
    lead_hours: float
    time: np.datetime64
    latitude: np.ndarray
    longitude: np.ndarray
    truth: np.ndarray
    prediction: np.ndarray
    spread: np.ndarray
    units: str = ""

    def __post_init__(self) -> None:
        shape = (np.size(self.latitude), np.size(self.longitude))
        for name in ("truth", "prediction", "spread"):
            got = np.shape(getattr(self, name))
            if got != shape:
                raise DataError(f"MapCase of '{self.field}': {name} has shape {got}, expected (latitude, "
                                f"longitude) = {shape}")


def _variable(data: xr.Dataset, field: str, what: str) -> xr.DataArray:
    if field not in data.data_vars:
        raise DataError(f"{what} has no variable '{field}' (available: {list(data.data_vars)})")
    return data[field]


def _at_level(data: xr.DataArray, level: float | None, what: str) -> xr.DataArray:
    """``data`` at ``level`` (matched to 1e-6), or unchanged for a surface field and level None."""
    if "level" not in data.dims:
        if level is not None:
            raise DataError(f"{what} variable '{data.name}' has no level dim, got level={level}")
        return data
    available = np.asarray(data["level"].values, dtype=np.float64)
    matches = [] if level is None else np.flatnonzero(np.isclose(available, level, rtol=0, atol=1e-6))
    if len(matches) == 0:
        raise DataError(f"{what} variable '{data.name}' has levels {available.tolist()}, got level={level}")
    return data.isel(level=int(matches[0]))


def _on_grid(truth: xr.DataArray, latitude: np.ndarray, longitude: np.ndarray) -> np.ndarray:
    """The truth ``[H, W]`` at the given points (longitudes compared modulo 360)."""
    available = np.asarray(truth["longitude"].values, dtype=np.float64)
    wanted = (longitude - available.min()) % 360.0 + available.min()  # into the truth's convention
    try:
        picked = truth.sel(latitude=latitude, longitude=wanted, method="nearest", tolerance=1e-4)
    except KeyError as error:
        raise DataError(f"truth '{truth.name}' lacks grid points of the prediction ({error})") from None
    return np.asarray(picked.transpose("latitude", "longitude").values, dtype=np.float64)


def _truth_case(truth: xr.Dataset, field: str, level: float | None, valid: np.datetime64,
                latitude: np.ndarray, longitude: np.ndarray) -> np.ndarray:
    """The truth ``[H, W]`` of ``field`` at the valid time, level and points of a case."""
    target = _variable(truth, field, "truth")
    if "member" in target.dims:
        raise DataError(f"truth variable '{field}' holds an ensemble (dim 'member'); select one member first")
    if valid not in np.asarray(target["time"].values, dtype="datetime64[ns]"):
        raise DataError(f"truth variable '{field}' has no data at the valid time {valid}")
    return _on_grid(_at_level(target.sel(time=valid), level, "truth"), latitude, longitude)


def map_case(prediction: xr.Dataset, truth: xr.Dataset, field: str, level: float | None = None,
             lead_index: int = 0, time_index: int = 0) -> MapCase:
    """Pick one case from a prediction store and the truth at its valid time.

    Args:
        prediction: a prediction store (``field [I, P, E, (L,) H, W]``, attribute ``task``).
        truth: a prepared store opened with xarray (``field [T, (L,) H, W]``), holding the
            prediction's grid points (a regional prediction may wrap past 360 degrees).
        field: the field to map.
        level: its level value; None for a surface field.
        lead_index: index along ``prediction_timedelta``.
        time_index: index along ``time`` (the case).

    Returns:
        The case: ensemble mean and spread over ``member``, truth at ``time + prediction_timedelta``.
        Only that case is read from lazily opened stores.
    """
    indexers = {"time": time_index, "prediction_timedelta": lead_index}
    for dim, index in indexers.items():
        if not 0 <= index < prediction.sizes.get(dim, 0):
            raise DataError(f"prediction has {prediction.sizes.get(dim, 0)} steps along '{dim}', "
                            f"got index {index}")
    forecast = _at_level(_variable(prediction, field, "prediction").isel(indexers), level, "prediction")
    if "member" not in forecast.dims:
        raise DataError(f"prediction variable '{field}' has no dim 'member', got {list(forecast.dims)}")
    members = np.asarray(forecast.transpose("member", "latitude", "longitude").values, np.float64)  # E, H, W
    latitude, longitude = (np.asarray(forecast[d].values, np.float64) for d in ("latitude", "longitude"))
    valid = np.datetime64(valid_times(prediction).isel(indexers).values, "ns")
    lead = prediction["prediction_timedelta"].values[lead_index] / np.timedelta64(1, "h")
    return MapCase(task=str(prediction.attrs.get("task", "prediction")), field=field, level=level,
                   lead_hours=float(lead), time=valid, latitude=latitude, longitude=longitude,
                   truth=_truth_case(truth, field, level, valid, latitude, longitude),
                   prediction=members.mean(0), units=str(forecast.attrs.get("units", "")),
                   spread=members.std(0, ddof=1) if len(members) > 1 else np.full(members.shape[1:], np.nan))


# --- tables -------------------------------------------------------------------------------------------

def _frame(scores: Any, kind: str, where: str) -> pd.DataFrame:
    """One of the three tables of ``scores``, its columns checked (an empty table may have none)."""
    frame = getattr(scores, kind, None)
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{where}.{kind} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in COLUMNS[kind] if c not in frame.columns]
    if missing and len(frame):
        raise DataError(f"{where}.{kind} lacks the columns {missing}, expected {list(COLUMNS[kind])}")
    frame = frame.reindex(columns=COLUMNS[kind]) if missing else frame
    return frame.astype({"task": str, "field": str, "level": np.float64, "lead": np.float64})


@dataclass(frozen=True)
class _Section:
    task: str
    frames: dict[str, pd.DataFrame]
    maps: tuple[MapCase, ...] = ()


def _ordered(values: Iterable, first: Sequence = ()) -> list:
    """Unique ``values``, those in ``first`` in its order, then the others in order of appearance."""
    unique = list(pd.unique(pd.Series(list(values), dtype=object)))
    return [v for v in first if v in unique] + [v for v in unique if v not in first]


def _sections(scores: Mapping[str, Scores] | Scores, maps: Sequence[MapCase]) -> list[_Section]:
    """One section per task: keyed as given, or split by the ``task`` column of a single Scores."""
    if isinstance(scores, Mapping):
        sections = []
        for task, item in scores.items():
            frames = {kind: _frame(item, kind, f"scores[{task!r}]") for kind in COLUMNS}
            held = _ordered(pd.concat([f["task"] for f in frames.values()]))
            if len(held) > 1:
                raise DataError(f"scores[{task!r}] holds the tasks {held}: pass one Scores per task")
            sections.append(_Section(str(task), frames))
    else:
        frames = {kind: _frame(scores, kind, "scores") for kind in COLUMNS}
        tasks = _ordered(pd.concat([f["task"] for f in frames.values()]))
        sections = [_Section(t, {k: f[f["task"] == t] for k, f in frames.items()}) for t in tasks]
    tasks = [s.task for s in sections] + _ordered(case.task for case in maps)
    by_task = {s.task: s.frames for s in sections}
    empty = {kind: pd.DataFrame(columns=columns) for kind, columns in COLUMNS.items()}
    return [_Section(t, by_task.get(t, empty), tuple(c for c in maps if c.task == t))
            for t in _ordered(tasks)]


def _level_mean(frame: pd.DataFrame, keys: list[str], value: str) -> pd.Series:
    """Mean of ``value`` over levels per ``keys``; NaN propagates, levels without any value are ignored."""
    present = frame[frame["level"].isin(frame.loc[frame[value].notna(), "level"].unique())]
    frame = present if len(present) else frame
    return frame.groupby(keys, sort=True)[value].agg(lambda v: float(np.mean(v.to_numpy(np.float64))))


def _picked(values: Sequence[float], count: int) -> list[float]:
    """At most ``count`` of the sorted ``values``, evenly spaced, first and last included."""
    if len(values) <= count:
        return list(values)
    return [values[i] for i in np.unique(np.round(np.linspace(0, len(values) - 1, count)).astype(int))]


def _number(value: float | None) -> str:
    return MISSING if value is None else "NaN" if np.isnan(value) else f"{value:.4g}"


def _cell(value: object) -> str:
    if isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (Mapping, list, tuple)):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric_from: int) -> list[str]:
    rule = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    return ["| " + " | ".join(row) + " |" for row in (header, rule, *rows)]


def _units(field: str, squared: bool = False) -> str:
    units = field_spec(field).units
    return units if not squared else f"({units})²" if " " in units else f"{units}²"


def _field_table(frame: pd.DataFrame) -> list[str]:
    """Rows (lead, method) by metric columns for one field, averaged over its levels."""
    means = _level_mean(frame, ["lead", "method", "metric"], "value").to_dict()
    metrics = _ordered(frame["metric"], tuple(METRICS))
    methods = _ordered(frame["method"], METHODS)
    leads = sorted(frame["lead"].unique())
    shown = _picked(leads, MAX_TABLE_LEADS)
    rows = []
    for lead in shown:
        for method in methods:
            values = [means.get((lead, method, metric)) for metric in metrics]
            if any(v is not None for v in values):
                rows.append([f"{lead:g}", method, *(_number(v) for v in values)])
    header = ["lead (h)", "method", *(METRICS.get(m, m) for m in metrics)]
    note = [] if len(shown) == len(leads) else [f"{len(shown)} of {len(leads)} lead times shown.", ""]
    return [*_markdown_table(header, rows, numeric_from=2), "", *note]


def _level_note(frame: pd.DataFrame) -> list[str]:
    levels = sorted(frame.loc[frame["value"].notna(), "level"].dropna().unique())
    listed = ", ".join(f"{level:g}" for level in levels)
    if not levels:
        return []
    return [f"Level {listed}." if len(levels) == 1 else f"Mean over levels {listed}.", ""]


def _score_lines(table: pd.DataFrame) -> list[str]:
    lines = ["### Scores", ""] + (["No scores.", ""] if table.empty else [])
    for field in _ordered(table["field"]):
        rows = table[table["field"] == field]
        lines += [f"#### {field} [{_units(field)}]", "", *_level_note(rows), *_field_table(rows)]
    return lines


# --- figures ------------------------------------------------------------------------------------------

def _save(figure: Figure, path: Path) -> None:
    figure.savefig(path, dpi=100)
    figure.clear()  # never registered with pyplot: nothing to close there


def _panels(frame: pd.DataFrame, path: Path, draw: Callable[[Axes, pd.DataFrame, str], None]) -> bool:
    """One panel per field of ``frame``, drawn by ``draw(axes, rows, field)``; False if nothing to draw."""
    fields = _ordered(frame["field"])
    if not fields:
        return False
    columns = min(len(fields), 3)
    rows = -(-len(fields) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()  # [rows * columns]
    for ax, field in zip(axes, fields):
        draw(ax, frame[frame["field"] == field], field)
        ax.set_title(field)
    for extra in axes[len(fields):]:
        extra.set_visible(False)
    _save(figure, path)
    return True


def _draw_skill(ax: Axes, rows: pd.DataFrame, field: str) -> None:
    means = _level_mean(rows, ["method", "lead"], "value")
    for method in _ordered(means.index.get_level_values("method"), METHODS):
        ax.plot(means.loc[method].index, means.loc[method].to_numpy(), marker="o", label=method)
    ax.set(xlabel="lead time (h)", ylabel=f"RMSE [{_units(field)}]")
    ax.legend(fontsize="small")


def plot_skill(table: pd.DataFrame, path: Path) -> bool:
    """RMSE against lead time, one line per method, one panel per field. False: nothing to draw."""
    return _panels(table[table["metric"] == "rmse"], path, _draw_skill)


def _draw_spread_skill(ax: Axes, rows: pd.DataFrame, field: str) -> None:
    means = _level_mean(rows, ["metric", "lead"], "value")
    leads = means.loc["rmse"].index.intersection(means.loc["spread"].index)
    rmse, spread = means.loc["rmse"][leads].to_numpy(), means.loc["spread"][leads].to_numpy()
    ax.plot(rmse, spread, color="0.7", lw=0.8, zorder=0)
    points = ax.scatter(rmse, spread, c=np.asarray(leads), cmap="viridis", zorder=1)
    finite = np.concatenate([rmse, spread])[np.isfinite(np.concatenate([rmse, spread]))]
    top = 1.1 * finite.max() if finite.size and finite.max() > 0 else 1.0
    ax.plot([0, top], [0, top], "k--", lw=0.8, label="1:1")
    ax.set(xlim=(0, top), ylim=(0, top), xlabel=f"RMSE [{_units(field)}]", ylabel=f"spread [{_units(field)}]")
    ax.legend(fontsize="small", loc="upper left")
    ax.figure.colorbar(points, ax=ax, label="lead time (h)")


def plot_spread_skill(table: pd.DataFrame, path: Path) -> bool:
    """The model's spread against its RMSE, one point per lead time, with the 1:1 line."""
    model = table[(table["method"] == "model") & table["metric"].isin(["rmse", "spread"])]
    both = model.groupby("field")["metric"].transform("nunique") == 2
    return _panels(model[both], path, _draw_spread_skill)


def _draw_rank_histogram(ax: Axes, rows: pd.DataFrame, field: str) -> None:
    means = _level_mean(rows, ["lead", "rank"], "frequency")
    for lead in _picked(sorted(rows["lead"].unique()), MAX_CURVES):
        ax.plot(means.loc[lead].index, means.loc[lead].to_numpy(), marker="o", drawstyle="steps-mid",
                label=f"{lead:g} h")
    ax.axhline(1.0 / (rows["rank"].max() + 1), color="k", ls="--", lw=0.8, label="flat")
    ax.set(xlabel="rank of the truth among the members", ylabel="frequency", ylim=(0, None))
    ax.legend(fontsize="small")


def plot_rank_histograms(frame: pd.DataFrame, path: Path) -> bool:
    """Rank histograms (mean over levels) for up to three lead times, with the flat line 1/(E+1)."""
    return _panels(frame, path, _draw_rank_histogram)


def _draw_spectrum(ax: Axes, rows: pd.DataFrame, field: str) -> None:
    means = _level_mean(rows, ["lead", "method", "wavenumber"], "power")
    drawn = set(means.index.droplevel("wavenumber"))
    for index, lead in enumerate(_picked(sorted(rows["lead"].unique()), MAX_CURVES)):
        for method, style in (("model", "-"), ("truth", "--")):
            if (lead, method) in drawn:
                curve = means.loc[(lead, method)]
                ax.plot(curve.index, curve.to_numpy(), ls=style, color=f"C{index}",
                        label=f"{method} {lead:g} h")
    ax.set(xscale="log", yscale="log", xlabel="zonal wavenumber", ylabel=f"power [{_units(field, True)}]")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize="small")


def plot_spectra(frame: pd.DataFrame, path: Path) -> bool:
    """Zonal power spectra of the model (solid) and the truth (dashed), log-log, wavenumbers >= 1."""
    return _panels(frame[frame["wavenumber"] > 0], path, _draw_spectrum)


def _edges(centres: np.ndarray, low: float = -np.inf, high: float = np.inf) -> np.ndarray:
    """Cell edges ``[N + 1]`` around increasing ``centres [N]`` (a cell of 1 degree for one point)."""
    if centres.size == 1:
        return np.clip(centres[0] + np.array([-0.5, 0.5]), low, high)
    middles = (centres[1:] + centres[:-1]) / 2
    return np.clip(np.concatenate([[2 * centres[0] - middles[0]], middles, [2 * centres[-1] - middles[-1]]]),
                   low, high)


def _limits(*arrays: np.ndarray, symmetric: bool = False) -> tuple[float, float]:
    values = np.concatenate([np.ravel(a) for a in arrays])
    values = values[np.isfinite(values)]
    if symmetric:
        extent = float(np.abs(values).max()) if values.size else 0.0
        return (-extent, extent) if extent > 0 else (-1.0, 1.0)
    if not values.size:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    return (low, high) if high > low else (low - 0.5, high + 0.5)


def _map_panels(case: MapCase) -> tuple[tuple[str, np.ndarray, str, tuple[float, float]], ...]:
    """(title, values [H, W], colour map, colour limits) of the four panels of a map."""
    error = case.prediction - case.truth
    shared = _limits(case.truth, case.prediction)
    return (("truth", case.truth, "viridis", shared),
            ("prediction (ensemble mean)", case.prediction, "viridis", shared),
            ("error (prediction − truth)", error, "RdBu_r", _limits(error, symmetric=True)),
            ("spread", case.spread, "magma", (0.0, _limits(case.spread)[1])))


def plot_map(case: MapCase, path: Path) -> bool:
    """Truth, prediction (shared colour scale), error (diverging, centred on 0) and spread side by side."""
    longitude = case.longitude[0] + np.mod(case.longitude - case.longitude[0], 360.0)  # increasing past 360
    lon_edges, lat_edges = _edges(longitude), _edges(np.asarray(case.latitude, np.float64), -90.0, 90.0)
    ratio = (lat_edges[-1] - lat_edges[0]) / max(lon_edges[-1] - lon_edges[0], 1e-6)
    figure = Figure(figsize=(16, 1.4 + 4 * float(np.clip(ratio, 0.3, 1.5))), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 4, sharex=True, sharey=True)
    for index, (ax, (label, values, cmap, (low, high))) in enumerate(zip(axes, _map_panels(case))):
        mesh = ax.pcolormesh(lon_edges, lat_edges, values, cmap=cmap, vmin=low, vmax=high)
        if not np.isfinite(values).any():
            ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes)
        ax.set(title=label, xlabel="longitude (°E)")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x % 360:g}"))
        if index != 1:  # truth and prediction share one colour bar
            figure.colorbar(mesh, ax=list(axes[:2]) if index == 0 else ax, orientation="horizontal",
                            label=case.units)
    axes[0].set_ylabel("latitude (°N)")
    figure.suptitle(_map_caption(case))
    _save(figure, path)
    return True


def _map_caption(case: MapCase) -> str:
    level = "" if case.level is None else f" at level {case.level:g}"
    time = np.datetime_as_string(np.datetime64(case.time, "m"))
    return f"{case.field}{level}, valid {time}, lead {case.lead_hours:g} h"


# --- the report ---------------------------------------------------------------------------------------

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "x"


def _figure_lines(section: _Section, figures: Path, prefix: str) -> list[str]:
    """Draw the section's figures into ``figures`` and return the Markdown that shows them."""
    plots = ((plot_skill, "table", "rmse", "RMSE of the model and the baselines against lead time."),
             (plot_spread_skill, "table", "spread_skill", "Spread against RMSE of the ensemble mean per lead "
              "time; a calibrated ensemble of E members lies on spread = sqrt(E/(E+1)) RMSE, just below "
              "the 1:1 line."),
             (plot_rank_histograms, "rank_histogram", "rank_histogram", "Rank of the truth among the "
              "members; flat (dashed line) when calibrated, U-shaped when over-confident."),
             (plot_spectra, "spectra", "spectra", "Zonal power spectra of the model and the truth."))
    lines = []
    for plot, kind, name, caption in plots:
        path = figures / f"{prefix}_{name}.png"
        if plot(section.frames[kind], path):
            lines += [f"![{name}]({FIGURES}/{path.name})", "", f"*{caption}*", ""]
    for index, case in enumerate(section.maps):
        path = figures / f"{prefix}_map{index:02d}_{_slug(case.field)}.png"
        plot_map(case, path)
        lines += [f"![map {index}]({FIGURES}/{path.name})", "", f"*{_map_caption(case)}.*", ""]
    return ["### Figures", "", *lines] if lines else []


def _header(title: str, settings: Mapping[str, object] | None) -> list[str]:
    lines = [f"# {title}", "", f"Written by atmorep {atmorep.__version__}.", ""]
    if settings:
        rows = [[_cell(key), _cell(value)] for key, value in settings.items()]
        lines += ["## Settings", "", *_markdown_table(["setting", "value"], rows, numeric_from=2), ""]
    return [*lines, READING, ""]


def _commit(staging: Path, directory: Path, text: str) -> None:
    """Swap the staged figures in, then replace report.md atomically; on failure restore the old ones."""
    figures, old = directory / FIGURES, staging / f"{FIGURES}.old"
    had_old = figures.exists()
    if had_old:
        os.replace(figures, old)
    try:
        os.replace(staging / FIGURES, figures)
        atomic_write_text(directory / REPORT, text)
    except BaseException:
        if not (staging / FIGURES).exists():
            shutil.rmtree(figures, ignore_errors=True)
        if had_old:
            os.replace(old, figures)
        raise


def write_report(directory: str | Path, scores: Mapping[str, Scores] | Scores, maps: Sequence[MapCase] = (),
                 title: str = "atmorep evaluation", settings: Mapping[str, object] | None = None) -> Path:
    """Write ``report.md`` and ``figures/*.png`` into ``directory`` (created if needed).

    Args:
        directory: where the report goes; other files there are left alone, ``figures/`` is replaced.
        scores: one task's or several tasks' scores, e.g. ``{"forecast": ..., "interpolate": ...}``
            (one section each); a single Scores is split by its ``task`` column.
        maps: cases to map, each in the section of its task.
        title: the report's title.
        settings: shown as a table at the top (checkpoint, data, times, training minutes ...).

    Returns:
        The path of ``report.md``.

    Raises:
        DataError: a table lacks columns, or one Scores of the mapping holds several tasks.
    """
    directory = Path(directory)
    sections = _sections(scores, maps)
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".report.", dir=directory))
    try:
        (staging / FIGURES).mkdir()
        lines, used = _header(title, settings), set()
        for section in sections:
            prefix = _slug(section.task)
            prefix = prefix if prefix not in used else f"{prefix}_{len(used)}"
            used.add(prefix)
            lines += [f"## {section.task}", "", *_score_lines(section.frames["table"]),
                      *_figure_lines(section, staging / FIGURES, prefix)]
        _commit(staging, directory, "\n".join(lines).rstrip("\n") + "\n")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote the report '%s' (%d sections, %d maps)", directory / REPORT, len(sections), len(maps))
    return directory / REPORT
