"""Evaluation reports: score tables and figures in one Markdown file with its PNG figures.

:func:`write_report` turns the scores of one or more tasks (:class:`atmorep.evaluate.scoring.Scores`
or anything with its three tables) and a few mapped cases (:class:`MapCase`, picked from a prediction
store by :func:`~atmorep.evaluate.maps.map_case`) into ``report.md`` and ``figures/*.png``:

- the run's settings as a table (checkpoint, data, times ...);
- per task and field, the model against every baseline: RMSE, MAE, bias, ACC, CRPS, spread and
  spread/skill per lead time, averaged over the field's levels;
- per field, RMSE, ACC, CRPS and spread/skill of the model, the reference stores, persistence and
  climatology with the lead times as rows (every 6 h of a 120 h rollout, :func:`lead_rows`);
- RMSE against lead time, the four scores against lead time (a row per field), spread against RMSE,
  rank histograms and zonal power spectra, one panel per field; maps of truth, prediction (ensemble
  mean), error and spread, one figure per case.

The figures are drawn by :mod:`atmorep.evaluate.plots`. Everything is drawn in a hidden staging
directory first; then ``figures/`` is swapped in and ``report.md`` is replaced by an atomic rename,
so a failure leaves the previous report (or none), never a half-written one. The Markdown helpers
:func:`markdown_table` and :func:`number_cell` also write the summary of ``atmorep evaluate``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import atmorep
from atmorep.errors import DataError
from atmorep.evaluate.maps import MapCase
from atmorep.evaluate.plots import (
    LEAD_METRICS,
    METHODS,
    field_units,
    lead_methods,
    level_mean,
    map_caption,
    ordered,
    picked,
    plot_map,
    plot_rank_histograms,
    plot_scores_against_lead,
    plot_skill,
    plot_spectra,
    plot_spread_skill,
)
from atmorep.evaluate.scoring import COLUMNS, Scores
from atmorep.io import atomic_write_text

logger = logging.getLogger(__name__)

REPORT, FIGURES = "report.md", "figures"
METRICS = {"rmse": "RMSE", "mae": "MAE", "bias": "bias", "acc": "ACC", "crps": "CRPS", "spread": "spread",
           "spread_skill": "spread/skill"}
MAX_TABLE_LEADS = 8  # lead times listed per table; the figures show all
MAX_LEAD_ROWS = 20  # rows of a per-lead table (120 hourly leads: every 6 h)
LEAD_STEPS = (1, 2, 3, 6, 12, 24, 48, 96)  # hours between the rows of a per-lead table, shortest first
MISSING = "–"  # a score not computed for that method
READING = ("Scores are means over the cases and the area (cos-latitude weights), then over the levels "
           f"of the field. `{MISSING}`: not computed for that method. CRPS of a deterministic baseline "
           "is its MAE; spread/skill is corrected for the ensemble size (1: calibrated, below 1: "
           "over-confident).")


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


def _sections(scores: Mapping[str, Scores] | Scores, maps: Sequence[MapCase]) -> list[_Section]:
    """One section per task: keyed as given, or split by the ``task`` column of a single Scores."""
    if isinstance(scores, Mapping):
        sections = []
        for task, item in scores.items():
            frames = {kind: _frame(item, kind, f"scores[{task!r}]") for kind in COLUMNS}
            held = ordered(pd.concat([f["task"] for f in frames.values()]))
            if len(held) > 1:
                raise DataError(f"scores[{task!r}] holds the tasks {held}: pass one Scores per task")
            sections.append(_Section(str(task), frames))
    else:
        frames = {kind: _frame(scores, kind, "scores") for kind in COLUMNS}
        tasks = ordered(pd.concat([f["task"] for f in frames.values()]))
        sections = [_Section(t, {k: f[f["task"] == t] for k, f in frames.items()}) for t in tasks]
    tasks = [s.task for s in sections] + ordered(case.task for case in maps)
    by_task = {s.task: s.frames for s in sections}
    empty = {kind: pd.DataFrame(columns=columns) for kind, columns in COLUMNS.items()}
    return [_Section(t, by_task.get(t, empty), tuple(c for c in maps if c.task == t))
            for t in ordered(tasks)]


def number_cell(value: float | None) -> str:
    """A score as a table cell: 4 significant digits, ``NaN``, or :data:`MISSING` for None (not computed)."""
    return MISSING if value is None else "NaN" if np.isnan(value) else f"{value:.4g}"


def _setting_cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, default=str)
    return str(value)


def _escaped(cell: object) -> str:
    return str(cell).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]],
                   numeric: Collection[str] = ()) -> list[str]:
    """The lines of a Markdown table.

    Args:
        header: the column names.
        rows: the cells of each row, in the order of ``header`` (formatted already; ``|`` is escaped
            and line breaks become spaces).
        numeric: the names of the columns that hold numbers, aligned right.
    """
    rule = ["---:" if name in numeric else "---" for name in header]
    body = [[_escaped(cell) for cell in row] for row in rows]
    return ["| " + " | ".join(row) + " |" for row in ([_escaped(h) for h in header], rule, *body)]


def _field_table(frame: pd.DataFrame) -> list[str]:
    """Rows (lead, method) by metric columns for one field, averaged over its levels."""
    means = level_mean(frame, ["lead", "method", "metric"], "value").to_dict()
    metrics = ordered(frame["metric"], tuple(METRICS))
    methods = ordered(frame["method"], METHODS)
    leads = sorted(frame["lead"].unique())
    shown = picked(leads, MAX_TABLE_LEADS)
    rows = []
    for lead in shown:
        for method in methods:
            values = [means.get((lead, method, metric)) for metric in metrics]
            if any(v is not None for v in values):
                rows.append([f"{lead:g}", method, *(number_cell(v) for v in values)])
    header = ["lead (h)", "method", *(METRICS.get(m, m) for m in metrics)]
    note = [] if len(shown) == len(leads) else [f"{len(shown)} of {len(leads)} lead times shown.", ""]
    return [*markdown_table(header, rows, numeric=header[2:]), "", *note]


def lead_rows(leads: Sequence[float], count: int = MAX_LEAD_ROWS) -> list[float]:
    """The lead times of a per-lead table: all of them up to ``count``, else the first, the last and
    the multiples of the shortest of :data:`LEAD_STEPS` (hours) that keeps them to about ``count``."""
    leads = sorted(leads)
    if len(leads) <= count:
        return leads
    for step in LEAD_STEPS:
        multiples = [lead for lead in leads if np.isclose(lead / step, round(lead / step))]
        if len(multiples) <= count:
            return sorted({leads[0], *multiples, leads[-1]})
    return picked(leads, count)


def _lead_table(frame: pd.DataFrame) -> list[str]:
    """Rows: lead times (:func:`lead_rows`); columns: RMSE, ACC, CRPS and spread/skill of each method of
    the lead view (:func:`~atmorep.evaluate.plots.lead_methods`), averaged over the field's levels."""
    means = level_mean(frame, ["lead", "metric", "method"], "value").to_dict()
    methods = lead_methods(frame["method"])
    columns = [(metric, method) for metric in LEAD_METRICS for method in methods
               if any((lead, metric, method) in means for lead in frame["lead"].unique())]
    if not columns:
        return []
    leads = sorted(frame["lead"].unique())
    shown = lead_rows(leads)
    rows = [[f"{lead:g}", *(number_cell(means.get((lead, metric, method))) for metric, method in columns)]
            for lead in shown]
    header = ["lead (h)", *(f"{LEAD_METRICS[metric]} {method}" for metric, method in columns)]
    note = [] if len(shown) == len(leads) else [f"{len(shown)} of {len(leads)} lead times shown; "
                                                "the figure of scores against lead shows all.", ""]
    return [*markdown_table(header, rows, numeric=header), "", *note]


def _level_note(frame: pd.DataFrame) -> list[str]:
    levels = sorted(frame.loc[frame["value"].notna(), "level"].dropna().unique())
    listed = ", ".join(f"{level:g}" for level in levels)
    if not levels:
        return []
    return [f"Level {listed}." if len(levels) == 1 else f"Mean over levels {listed}.", ""]


def _score_lines(table: pd.DataFrame) -> list[str]:
    lines = ["### Scores", ""] + (["No scores.", ""] if table.empty else [])
    for field in ordered(table["field"]):
        rows = table[table["field"] == field]
        lines += [f"#### {field} [{field_units(field)}]", "", *_level_note(rows), *_field_table(rows)]
    if table["lead"].nunique() > 1:
        lines += ["### Scores against lead", ""]
        for field in ordered(table["field"]):
            rows = table[table["field"] == field]
            lines += [f"#### {field} [{field_units(field)}]", "", *_lead_table(rows)]
    return lines


# --- the report ---------------------------------------------------------------------------------------

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "x"


def _figure_lines(section: _Section, figures: Path, prefix: str) -> list[str]:
    """Draw the section's figures into ``figures`` and return the Markdown that shows them."""
    plots = ((plot_skill, "table", "rmse", "RMSE of the model and the baselines against lead time."),
             (plot_scores_against_lead, "table", "scores_by_lead", "RMSE, ACC, CRPS (the MAE of a "
              "deterministic forecast) and spread/skill against lead time: the model, the reference stores "
              "and the baselines, a row per field."),
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
        lines += [f"![map {index}]({FIGURES}/{path.name})", "", f"*{map_caption(case)}.*", ""]
    return ["### Figures", "", *lines] if lines else []


def _header(title: str, settings: Mapping[str, object] | None) -> list[str]:
    lines = [f"# {title}", "", f"Written by atmorep {atmorep.__version__}.", ""]
    if settings:
        rows = [[_setting_cell(key), _setting_cell(value)] for key, value in settings.items()]
        lines += ["## Settings", "", *markdown_table(["setting", "value"], rows), ""]
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
    logger.info("wrote the report '%s' (%d sections, %d maps)", directory / REPORT, len(sections), len(maps))
    return directory / REPORT
