"""Figures of evaluation scores and mapped cases, drawn without pyplot.

Each ``plot_*`` function draws one PNG and returns False when there is nothing to draw:

- :func:`plot_skill`: RMSE against lead time, one line per method, one panel per field;
- :func:`plot_scores_against_lead`: RMSE, ACC, CRPS and spread/skill against lead time, a row of panels
  per field, a line per method (model, reference stores, persistence, climatology ...);
- :func:`plot_spread_skill`: the model's spread against its RMSE, one point per lead time;
- :func:`plot_rank_histograms`: rank histograms of the truth among the members;
- :func:`plot_spectra`: zonal power spectra of the model and the truth;
- :func:`plot_map`: truth, prediction (ensemble mean), error and spread of one
  :class:`atmorep.evaluate.maps.MapCase`.

Scores are averaged over the levels of a field first (:func:`level_mean`, shared with the report's
tables). Figures are :class:`matplotlib.figure.Figure` objects with an Agg canvas: no display, no
change to pyplot's backend and nothing left open in pyplot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from atmorep.fields import field_spec
from atmorep.numerics.interpolation import unwrapped_longitude

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from atmorep.evaluate.maps import MapCase

METHODS = ("model", "persistence", "climatology", "linear", "bilinear", "bicubic")  # table and legend order
BUILT_IN = ("model", "persistence", "trend", "first_guess", "climatology", "linear", "cubic", "spatial",
            "bilinear", "bicubic", "raw")  # methods atmorep scores itself; any other is a reference store
SECONDARY = ("trend", "first_guess")  # left out of the lead view: extrapolated trends blow up with lead
LEAD_METRICS = {"rmse": "RMSE", "acc": "ACC", "crps": "CRPS", "spread_skill": "spread/skill"}
MAX_CURVES = 3  # lead times drawn in a rank-histogram or spectrum panel


def ordered(values: Iterable, first: Sequence = ()) -> list:
    """Unique ``values``, those in ``first`` in its order, then the others in order of appearance."""
    unique = list(pd.unique(pd.Series(list(values), dtype=object)))
    return [v for v in first if v in unique] + [v for v in unique if v not in first]


def level_mean(frame: pd.DataFrame, keys: list[str], value: str) -> pd.Series:
    """Mean of ``value`` over levels per ``keys``; NaN propagates, levels without any value are ignored."""
    present = frame[frame["level"].isin(frame.loc[frame[value].notna(), "level"].unique())]
    frame = present if len(present) else frame
    return frame.groupby(keys, sort=True)[value].agg(lambda v: float(np.mean(v.to_numpy(np.float64))))


def picked(values: Sequence[float], count: int) -> list[float]:
    """At most ``count`` of the sorted ``values``, evenly spaced, first and last included."""
    if len(values) <= count:
        return list(values)
    return [values[i] for i in np.unique(np.round(np.linspace(0, len(values) - 1, count)).astype(int))]


def lead_methods(methods: Iterable[str]) -> list[str]:
    """The methods of the lead view in order: model, the reference stores, then the task's baselines
    (without :data:`SECONDARY`)."""
    unique = ordered(methods, METHODS)
    references = [m for m in unique if m not in BUILT_IN]
    return ([m for m in unique if m == "model"] + references
            + [m for m in unique if m in BUILT_IN and m != "model" and m not in SECONDARY])


def field_units(field: str, squared: bool = False) -> str:
    """The units of ``field`` (:func:`atmorep.fields.field_spec`), squared for a power."""
    units = field_spec(field).units
    return units if not squared else f"({units})²" if " " in units else f"{units}²"


def _save(figure: Figure, path: Path) -> None:
    figure.savefig(path, dpi=100)
    figure.clear()  # never registered with pyplot: nothing to close there


def _panels(frame: pd.DataFrame, path: Path, draw: Callable[[Axes, pd.DataFrame, str], None]) -> bool:
    """One panel per field of ``frame``, drawn by ``draw(axes, rows, field)``; False if nothing to draw."""
    fields = ordered(frame["field"])
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
    means = level_mean(rows, ["method", "lead"], "value")
    for method in ordered(means.index.get_level_values("method"), METHODS):
        ax.plot(means.loc[method].index, means.loc[method].to_numpy(), marker="o", label=method)
    ax.set(xlabel="lead time (h)", ylabel=f"RMSE [{field_units(field)}]")
    ax.legend(fontsize="small")


def plot_skill(table: pd.DataFrame, path: Path) -> bool:
    """RMSE against lead time, one line per method, one panel per field. False: nothing to draw."""
    return _panels(table[table["metric"] == "rmse"], path, _draw_skill)


def _draw_spread_skill(ax: Axes, rows: pd.DataFrame, field: str) -> None:
    means = level_mean(rows, ["metric", "lead"], "value")
    leads = means.loc["rmse"].index.intersection(means.loc["spread"].index)
    rmse, spread = means.loc["rmse"][leads].to_numpy(), means.loc["spread"][leads].to_numpy()
    ax.plot(rmse, spread, color="0.7", lw=0.8, zorder=0)
    points = ax.scatter(rmse, spread, c=np.asarray(leads), cmap="viridis", zorder=1)
    finite = np.concatenate([rmse, spread])[np.isfinite(np.concatenate([rmse, spread]))]
    top = 1.1 * finite.max() if finite.size and finite.max() > 0 else 1.0
    ax.plot([0, top], [0, top], "k--", lw=0.8, label="1:1")
    units = field_units(field)
    ax.set(xlim=(0, top), ylim=(0, top), xlabel=f"RMSE [{units}]", ylabel=f"spread [{units}]")
    ax.legend(fontsize="small", loc="upper left")
    ax.figure.colorbar(points, ax=ax, label="lead time (h)")


def plot_spread_skill(table: pd.DataFrame, path: Path) -> bool:
    """The model's spread against its RMSE, one point per lead time, with the 1:1 line."""
    model = table[(table["method"] == "model") & table["metric"].isin(["rmse", "spread"])]
    both = model.groupby("field")["metric"].transform("nunique") == 2
    return _panels(model[both], path, _draw_spread_skill)


def plot_scores_against_lead(table: pd.DataFrame, path: Path) -> bool:
    """RMSE, ACC, CRPS and spread/skill against lead time: a row per field, a panel per metric, a line per
    method of :func:`lead_methods`. False: fewer than two lead times, or nothing to draw."""
    shown = table["method"].isin(lead_methods(table["method"]))
    rows = table[table["metric"].isin(list(LEAD_METRICS)) & shown]
    fields, metrics = ordered(rows["field"]), ordered(rows["metric"], tuple(LEAD_METRICS))
    if not fields or rows["lead"].nunique() < 2:
        return False
    figure = Figure(figsize=(4.0 * len(metrics), 3.0 * len(fields)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(fields), len(metrics), squeeze=False, sharex=True)  # [fields, metrics]
    colours = {method: f"C{index}" for index, method in enumerate(lead_methods(rows["method"]))}
    for row, field in zip(axes, fields):
        means = level_mean(rows[rows["field"] == field], ["metric", "method", "lead"], "value")
        for ax, metric in zip(row, metrics):
            _draw_against_lead(ax, means, metric, colours)
            units = "" if metric in ("acc", "spread_skill") else f" [{field_units(field)}]"
            ax.set(title=f"{field}: {LEAD_METRICS[metric]}", ylabel=f"{LEAD_METRICS[metric]}{units}")
        row[0].legend(fontsize="small")
    for ax in axes[-1]:
        ax.set_xlabel("lead time (h)")
    _save(figure, path)
    return True


def _draw_against_lead(ax: Axes, means: pd.Series, metric: str, colours: dict[str, str]) -> None:
    """One line per method of ``means`` (indexed metric, method, lead) for ``metric``, in its colour."""
    if metric in means.index.get_level_values("metric"):
        chosen = means.loc[metric]
        for method in lead_methods(chosen.index.get_level_values("method")):
            curve = chosen.loc[method]
            ax.plot(curve.index, curve.to_numpy(), color=colours[method], label=method,
                    marker="o" if len(curve) <= 24 else None, markersize=3)
    if metric == "spread_skill":
        ax.axhline(1.0, color="k", ls="--", lw=0.8)


def _draw_rank_histogram(ax: Axes, rows: pd.DataFrame, field: str) -> None:
    means = level_mean(rows, ["lead", "rank"], "frequency")
    for lead in picked(sorted(rows["lead"].unique()), MAX_CURVES):
        ax.plot(means.loc[lead].index, means.loc[lead].to_numpy(), marker="o", drawstyle="steps-mid",
                label=f"{lead:g} h")
    ax.axhline(1.0 / (rows["rank"].max() + 1), color="k", ls="--", lw=0.8, label="flat")
    ax.set(xlabel="rank of the truth among the members", ylabel="frequency", ylim=(0, None))
    ax.legend(fontsize="small")


def plot_rank_histograms(frame: pd.DataFrame, path: Path) -> bool:
    """Rank histograms (mean over levels) for up to three lead times, with the flat line 1/(E+1)."""
    return _panels(frame, path, _draw_rank_histogram)


def _draw_spectrum(ax: Axes, rows: pd.DataFrame, field: str) -> None:
    means = level_mean(rows, ["lead", "method", "wavenumber"], "power")
    drawn = set(means.index.droplevel("wavenumber"))
    for index, lead in enumerate(picked(sorted(rows["lead"].unique()), MAX_CURVES)):
        for method in ordered(means.index.get_level_values("method"), ("model", "truth")):
            style = "--" if method == "truth" else "-"
            if (lead, method) in drawn:
                curve = means.loc[(lead, method)]
                ax.plot(curve.index, curve.to_numpy(), ls=style, color=f"C{index}",
                        label=f"{method} {lead:g} h")
    ax.set(xscale="log", yscale="log", xlabel="zonal wavenumber",
           ylabel=f"power [{field_units(field, squared=True)}]")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize="small")


def plot_spectra(frame: pd.DataFrame, path: Path) -> bool:
    """Zonal power spectra of the model (solid) and the truth (dashed), log-log, wavenumbers >= 1."""
    return _panels(frame[frame["wavenumber"] > 0], path, _draw_spectrum)


def _draw_tail_spectrum(ax: Axes, rows: pd.DataFrame, field: str) -> None:
    for method in ordered(rows["method"], ("truth",)):
        curve = rows[rows["method"] == method]
        ax.plot(curve["wavenumber"], curve["power"], ls="--" if method == "truth" else "-", label=method)
    ax.set(xscale="log", yscale="log", xlabel="zonal wavenumber", ylabel="power")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize="small")


def plot_tail_spectra(frame: pd.DataFrame, path: Path) -> bool:
    """Zonal power spectra of a downscaling tail, its baselines and the truth (dashed), one panel per
    target, wavenumbers >= 1."""
    return _panels(frame[frame["wavenumber"] > 0], path, _draw_tail_spectrum)


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
    longitude = unwrapped_longitude(case.longitude)  # increasing past 360
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
    figure.suptitle(map_caption(case))
    _save(figure, path)
    return True


def map_caption(case: MapCase) -> str:
    """The title of a map: field, level, valid time and lead time."""
    level = "" if case.level is None else f" at level {case.level:g}"
    time = np.datetime_as_string(np.datetime64(case.time, "m"))
    return f"{case.field}{level}, valid {time}, lead {case.lead_hours:g} h"
