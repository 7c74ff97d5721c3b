"""What ``atmorep evaluate`` does: score prediction stores, write the tables and the report.

For every prediction store (one per task) :func:`evaluate` scores the model and the task's
baselines against the truth store (:func:`atmorep.evaluate.scoring.score`), writes the tables
(``<task>/scores.csv``, ``scores.json``, ``rank_histogram.csv``, ``spectra.csv``), a summary
(``summary.csv`` and ``summary.md``: per task and field the model against the baselines) and a
Markdown report with figures (:func:`atmorep.evaluate.report.write_report`) into one directory.
Only the steps the cases need are read from the truth store (:mod:`atmorep.evaluate.truth`), so
the cost does not grow with the length of the archive.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from rich.console import Group
from rich.table import Table

from atmorep.errors import DataError
from atmorep.evaluate.maps import MapCase, map_case
from atmorep.evaluate.report import markdown_table, number_cell, write_report
from atmorep.evaluate.scoring import MODEL, Scores, score, summary_table, write_scores
from atmorep.evaluate.truth import open_store
from atmorep.io import atomic_write_text
from atmorep.prediction_store import MASK, open_prediction
from atmorep.tasks import get_task, inference_tasks

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationResult:
    """What an evaluation wrote.

    Attributes:
        scores: per task (or ``task-2`` ... for repeated tasks) the scores.
        summary: one row per task and field: the model against the baselines.
        report: the Markdown report.
        directory: where the tables, figures and report are.
    """

    scores: dict[str, Scores]
    summary: pd.DataFrame
    report: Path
    directory: Path


def _key(task: str, taken: Mapping[str, object]) -> str:
    if task not in taken:
        return task
    number = 2
    while f"{task}-{number}" in taken:
        number += 1
    return f"{task}-{number}"


def _map_level(variable: xr.DataArray, scores: Scores) -> float | None:
    """The middle of the levels scored for ``variable`` (its predicted levels), in the store's order."""
    if "level" not in variable.dims:
        return None
    table = scores.table
    scored = table.loc[table["field"] == variable.name, "level"].unique()
    levels = variable["level"].values[np.isin(variable["level"].values, scored)]
    return float(levels[len(levels) // 2])


def _maps(prediction: xr.Dataset, truth: xr.Dataset, scores: Scores) -> list[MapCase]:
    """One map per predicted field: the middle of its predicted levels, the last lead, the first case."""
    cases = []
    for name in prediction.data_vars:
        if name == MASK:
            continue
        cases.append(map_case(prediction, truth, str(name), _map_level(prediction[name], scores),
                              lead_index=prediction.sizes["prediction_timedelta"] - 1, time_index=0))
    return cases


Stores = dict[str, str | Path]  # by method name


def _scored(predictions: Sequence[str | Path],
            references: Mapping[str, str | Path]) -> tuple[list[tuple[str, str | Path]], Stores]:
    """``(method, store)`` of each prediction to score, and the references scored beside them.

    Without predictions the first reference is scored on its own, under its name, beside the rest.
    """
    if predictions:
        return [(MODEL, path) for path in predictions], dict(references)
    if not references:
        raise DataError("no prediction store given to evaluate (give one, or a --reference NAME=PATH)")
    first, *rest = references
    return [(first, references[first])], {name: references[name] for name in rest}


def evaluate(predictions: Sequence[str | Path], truth: str | Path, climatology_source: str | Path | None,
             directory: str | Path, settings: Mapping[str, object] | None = None,
             maps: bool = True, references: Mapping[str, str | Path] | None = None) -> EvaluationResult:
    """Score prediction stores and write tables, summary and report into ``directory``.

    Args:
        predictions: prediction stores written by ``atmorep infer``; may be empty with ``references``.
        truth: the prepared store holding the truth of the predicted period.
        climatology_source: a prepared store of the training period (climatology baseline and the
            anomaly correlation); None leaves both out.
        directory: where to write.
        settings: shown at the top of the report.
        maps: draw maps of truth, prediction, error and spread.
        references: other prediction stores of the same cases by method name (e.g. ``{"jcm": path}``),
            scored beside each prediction (:mod:`atmorep.evaluate.references`); without predictions
            the first is scored on its own under its name, with the task's baselines.
    """
    scored, others = _scored(predictions, references or {})
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    truth_ds = open_store(truth, "truth store", chunks={}) if maps else None
    all_scores: dict[str, Scores] = {}
    headline: dict[str, float | None] = {}
    models: dict[str, str] = {}
    map_cases: list[MapCase] = []
    for method, path in scored:
        prediction = open_prediction(path)
        key = _key(str(prediction.attrs["task"]), all_scores)
        logger.info("scoring %s (%s)", path, key)
        all_scores[key] = score(prediction, truth, climatology_source, name=str(path),
                                climatology_cache=directory / "climatology", references=others,
                                method=method)
        headline[key], models[key] = one_shot_lead(prediction), method
        write_scores(all_scores[key], directory / key)
        if truth_ds is not None:
            map_cases += _maps(prediction, truth_ds, all_scores[key])
    summary = summary_frame(all_scores, headline, models)
    atomic_write_text(directory / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(directory / "summary.md", summary_markdown(summary))
    listed = {"references": ", ".join(f"{k}={v}" for k, v in references.items())} if references else {}
    report = write_report(directory, all_scores, map_cases, settings={
        "predictions": ", ".join(str(p) for p in predictions) or "none", **listed, "truth": str(truth),
        "climatology": str(climatology_source), **(settings or {})})
    return EvaluationResult(all_scores, summary, report, directory)


def one_shot_lead(prediction: xr.Dataset) -> float | None:
    """A forecast's headline lead in hours: the last step the box predicts in one pass (no rollout).

    Read from the attribute ``one_shot_lead_hours``; stores without it derive it from the resolved
    config they carry. None for other tasks (their summary averages every predicted step).
    """
    task = prediction.attrs.get("task")
    if task not in inference_tasks() or not get_task(task).rolls_out:
        return None
    if prediction.attrs.get("one_shot_lead_hours") is not None:
        return float(prediction.attrs["one_shot_lead_hours"])
    try:
        config = json.loads(prediction.attrs["config"])
        block = config["train"]["forecast_tokens"] * config["fields"][0]["token_size"][0]
        return float(block * prediction.attrs["time_step_hours"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def summary_frame(scores: Mapping[str, Scores], leads: Mapping[str, float | None] | None = None,
                  models: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The summary tables of every task in one frame, columns ``task`` and ``lead`` first.

    Args:
        scores: per task.
        leads: per task the lead (hours) to summarise; None or absent: the mean over all leads.
        models: per task the method name of the scored prediction (absent: ``model``).
    """
    frames = []
    for key, value in scores.items():
        lead, model = (leads or {}).get(key), (models or {}).get(key, MODEL)
        try:
            frame = summary_table(value, lead, model)
        except DataError:  # the lead was not scored: the mean over all leads
            lead, frame = None, summary_table(value, model=model)
        frame.insert(0, "lead", "all" if lead is None else f"{lead:g} h")
        frame.insert(0, "task", key)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _cell(value: object) -> str:
    """A summary cell: numbers to 4 significant digits, empty where not scored (NaN)."""
    if isinstance(value, float | np.floating):
        return "" if not np.isfinite(value) else number_cell(float(value))
    return str(value)


def summary_markdown(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table, numeric columns aligned right."""
    header = [str(c) for c in summary.columns]
    numeric = [str(c) for c in summary.columns if pd.api.types.is_numeric_dtype(summary[c])]
    rows = [[_cell(v) for v in row] for row in summary.itertuples(index=False)]
    return "\n".join(markdown_table(header, rows, numeric)) + "\n"


def summary_tables(scores: Mapping[str, Scores] | pd.DataFrame) -> Group:
    """Rich tables of the summary, one per task, for the terminal: RMSE of the model and of each
    baseline, the skill against the best baseline, and the model's ACC, CRPS and spread/skill."""
    summary = scores if isinstance(scores, pd.DataFrame) else summary_frame(scores)
    tables = []
    for task, frame in summary.groupby("task", sort=False):
        frame = frame.dropna(axis=1, how="all")
        lead = frame["lead"].iloc[0]
        table = Table(title=f"{task} (lead {lead}): RMSE of the model and the baselines")
        columns = [c for c in frame.columns if c not in ("task", "lead")]
        for column in columns:
            header = str(column).removeprefix("rmse_").replace("best_baseline", "best").replace("_", "/")
            table.add_column(header, justify="left" if column in ("field", "best_baseline") else "right")
        for row in frame[columns].itertuples(index=False):
            table.add_row(*(_cell(v) for v in row))
        tables.append(table)
    return Group(*tables)
