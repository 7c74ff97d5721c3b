"""Score a prediction store against the truth and the baselines, per field, level and lead time.

:func:`score` reads a prediction store (the WeatherBench-2 layout written by ``atmorep infer``: dims
``time, prediction_timedelta, member, [level], latitude, longitude`` and the global attribute
``task``), selects the truth at its valid times from a prepared store and scores the model and the
baselines of its task (:mod:`atmorep.evaluate.task_baselines`): persistence, the trend, the
model's first-guess rule and climatology for forecast; linear and cubic interpolation in time and
climatology for interpolate; a spatial fill and climatology for infill and reconstruct; bilinear
and bicubic upsampling of the coarsened truth for downscale. A downscaling grid whose size
is not a multiple of ``coarsen_factor`` is cropped at its northern and eastern ends to the largest
multiple, for all methods alike; infill and reconstruct are scored only where ``target_mask`` is
True.

Metrics come from :mod:`atmorep.evaluate.metrics`, reduced over time, latitude (area-weighted) and
longitude: ``rmse``, ``mae``, ``bias`` and ``acc`` of the ensemble mean; ``crps`` (fair), ``spread``
and ``spread_skill`` of the members (spread needs two members). A deterministic baseline's
``crps`` is its ``mae``, the standard comparison. ``acc`` and the climatology baseline need a
climatology and are left out, with a warning, without one (the climatology itself has no acc: its
anomaly is zero). The model's rank histogram (two members or more) and the zonal power spectra of
model and truth (:func:`metrics.power_spectrum`; each row of a regional grid is taken as periodic,
for model and truth alike) come with the scores.

**Cost.** Only the steps the cases and the baselines need are read from the truth store, each once
(:mod:`atmorep.evaluate.truth`), and the climatology is computed from the days of year and hours
of the valid times only, optionally cached (:mod:`atmorep.evaluate.climatology_cache`). So a
truth store ten times longer costs the same.

**Masked tasks.** Means over the masked points are ``<m x> / <m>`` with latitude weights: forecast
and truth are zeroed outside the mask, scored by the metrics functions and rescaled by the
masked fraction, so values outside the mask (whatever they hold) never enter. The anomaly
correlation is centred over the masked points of each case.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import xarray as xr

from atmorep.errors import DataError
from atmorep.evaluate import metrics
from atmorep.evaluate.climatology_cache import at_cases, climatologies
from atmorep.evaluate.metrics import SPATIAL_DIMS as SPATIAL
from atmorep.evaluate.references import open_references, reference_members
from atmorep.evaluate.task_baselines import BUILDERS, Context, baseline_times, needed_times
from atmorep.evaluate.truth import LazyStore, case_valid_times, select_cases
from atmorep.io import atomic_write_text
from atmorep.prediction_store import MASK, open_prediction
from atmorep.tasks import get_task, inference_tasks

logger = logging.getLogger(__name__)

MODEL = "model"
COLUMNS: dict[str, tuple[str, ...]] = {  # the columns of each table of Scores
    "table": ("task", "field", "level", "lead", "method", "metric", "value"),
    "rank_histogram": ("task", "field", "level", "lead", "rank", "frequency"),
    "spectra": ("task", "field", "level", "lead", "method", "wavenumber", "power"),
}
FILES = {"table": "scores.csv", "rank_histogram": "rank_histogram.csv", "spectra": "spectra.csv"}
RECORDS = "scores.json"
TEXT_COLUMNS = {"task": str, "field": str, "method": str, "metric": str}
FLOAT_COLUMNS = {"level": np.float64, "lead": np.float64}
SUMMARY_METRICS = ("acc", "crps", "spread_skill", "blockiness")  # the model's, next to the RMSEs


@dataclass(frozen=True, eq=False)
class Scores:
    """Scores of one prediction store, in long form.

    Attributes:
        table: columns task, field, level (NaN for surface fields), lead (hours), method, metric, value.
        rank_histogram: columns task, field, level, lead, rank (0..E), frequency (sums to 1 over rank).
        spectra: columns task, field, level, lead, method ("model" or "truth"), wavenumber, power.
    """

    table: pd.DataFrame
    rank_histogram: pd.DataFrame
    spectra: pd.DataFrame


def _masked(data: xr.DataArray, truth: xr.DataArray, mask: xr.DataArray | None):
    """``data`` and ``truth`` zeroed outside ``mask``, and the masked fraction ``<m>`` (1 without one)."""
    if mask is None:
        return data, truth, 1.0
    return data.where(mask, 0.0), truth.where(mask, 0.0), metrics.weighted_mean(mask.astype(np.float64))


def _masked_acc(forecast: xr.DataArray, truth: xr.DataArray, climatology: xr.DataArray,
                mask: xr.DataArray) -> xr.DataArray:
    """Anomaly correlation over the masked points of each case, centred there, averaged over cases."""
    area = metrics.weighted_mean(mask.astype(np.float64), SPATIAL)  # (time, prediction_timedelta)

    def centred(data: xr.DataArray) -> xr.DataArray:
        anomaly = (data - climatology).where(mask, 0.0)
        return (anomaly - metrics.weighted_mean(anomaly, SPATIAL) / area).where(mask, 0.0)

    per_case = metrics.acc(centred(forecast), centred(truth), xr.zeros_like(truth), dims=SPATIAL,
                           centred=False)  # (time, prediction_timedelta, [level])
    cases = (area > 0).sum("time")
    return per_case.where(area > 0, 0.0).sum("time", skipna=False) / cases  # cases without points skipped


def _deterministic(forecast: xr.DataArray, truth: xr.DataArray, climatology: xr.DataArray | None,
                   mask: xr.DataArray | None) -> dict[str, xr.DataArray]:
    """rmse, mae, bias and (with a climatology) acc of the ensemble mean, each ``[P, (L)]``."""
    mean = metrics.ensemble_mean(forecast)
    zeroed, zeroed_truth, fraction = _masked(mean, truth, mask)
    scores = {"rmse": metrics.rmse(zeroed, zeroed_truth) / np.sqrt(fraction),
              "mae": metrics.mae(zeroed, zeroed_truth) / fraction,
              "bias": metrics.bias(zeroed, zeroed_truth) / fraction}
    if climatology is not None:
        scores["acc"] = (metrics.acc(mean, truth, climatology) if mask is None
                         else _masked_acc(mean, truth, climatology, mask))
    return scores


def _ensemble(model: xr.DataArray, truth: xr.DataArray, mask: xr.DataArray | None) -> dict[str, xr.DataArray]:
    """Fair CRPS and, for two members or more, spread and spread/skill of the members."""
    members, zeroed_truth, fraction = _masked(model, truth, mask)
    scores = {"crps": metrics.crps_fair(members, zeroed_truth) / fraction}
    if model.sizes["member"] > 1:
        scores["spread"] = metrics.spread(members) / np.sqrt(fraction)
        scores["spread_skill"] = metrics.spread_skill_ratio(members, zeroed_truth)  # the fractions cancel
    return scores


def _rank_frequency(model: xr.DataArray, truth: xr.DataArray,
                    mask: xr.DataArray | None) -> xr.DataArray | None:
    if model.sizes["member"] < 2:
        return None
    counts = metrics.rank_histogram(model, truth if mask is None else truth.where(mask))  # NaN: not counted
    return counts / counts.sum("rank")


def _spectra(model: xr.DataArray, truth: xr.DataArray, mask: xr.DataArray | None) -> dict[str, xr.DataArray]:
    """Zonal power spectra of the members (the truth outside the mask) and of the truth."""
    field = model if mask is None else model.where(mask, truth)
    return {MODEL: metrics.power_spectrum(field), "truth": metrics.power_spectrum(truth)}


def _available(store: LazyStore, attrs: dict, times: np.ndarray, leads: np.ndarray) -> tuple[str, ...]:
    """The task's baselines, without those that need steps the truth store does not hold (warned)."""
    methods, task = [], get_task(attrs["task"])
    for method in task.baselines:
        needed = baseline_times(method, times, leads, attrs)
        if method in task.history and not all(store.holds(wanted) for wanted in needed.values()):
            logger.warning("truth store '%s' lacks the %s the %s baseline needs: left out", store.path,
                           next(iter(needed)), method)
            continue
        methods.append(method)
    return tuple(methods)


def _score_references(references: Mapping[str, xr.DataArray], truth: xr.DataArray,
                      climatology: xr.DataArray | None, mask: xr.DataArray | None) -> dict:
    """Lazy scores ``{(name, metric): [P', (L)]}`` of reference members at the leads ``P'`` they hold."""
    scores = {}
    for name, members in references.items():
        at = {"prediction_timedelta": members["prediction_timedelta"].values}
        truth_at = truth.sel(at)
        climatology_at = None if climatology is None else climatology.sel(at)
        mask_at = None if mask is None else mask.sel(at)
        values = (_deterministic(members, truth_at, climatology_at, mask_at)
                  | _ensemble(members, truth_at, mask_at))
        scores |= {(name, metric): value for metric, value in values.items()}
    return scores


def _score_field(store: LazyStore, field: str, model: xr.DataArray, mask: xr.DataArray | None,
                 climatology: xr.DataArray | None, attrs: dict, baselines: bool = True,
                 references: Mapping[str, xr.DataArray] | None = None, method: str = MODEL):
    """Lazy scores ``{(method, metric): [P, (L)]}``, rank frequencies and spectra of one field.

    The truth is read once at every time the cases and the task's baselines (if wanted) need; the
    ``references`` (members on the model's coordinates, :mod:`atmorep.evaluate.references`) are
    scored like the model at the leads they hold. ``method`` names the model's rows.
    """
    times, leads = model["time"].values, model["prediction_timedelta"].values
    methods = _available(store, attrs, times, leads) if baselines else ()
    wanted = {"valid time": case_valid_times(model),
              **needed_times(attrs["task"], times, leads, attrs, methods)}
    known = store.read_once(field, wanted, model, chunk=leads.size)  # (T', [L], H, W)
    truth = select_cases(known, model)  # (time, prediction_timedelta, [L], H, W)
    climatology = None if climatology is None else at_cases(climatology, truth)  # at the truth's coords
    context = Context(field, truth, known, climatology, attrs, mask)
    model_scores = _deterministic(model, truth, climatology, mask) | _ensemble(model, truth, mask)
    if "seams_latitude" in attrs:
        seams = {axis: list(attrs[f"seams_{axis}"]) for axis in SPATIAL}
        periodic = bool(attrs.get("periodic"))
        model_scores["blockiness"] = metrics.blockiness(model, truth, seams, periodic, mask)
    scores = {(method, metric): value for metric, value in model_scores.items()}
    for baseline_name in methods:
        baseline = BUILDERS[baseline_name](context)
        if baseline is None:
            continue
        reference = None if baseline_name == "climatology" else climatology  # its anomaly is zero: no acc
        values = _deterministic(baseline.transpose(*truth.dims), truth, reference, mask)
        values["crps"] = values["mae"]  # the CRPS of a deterministic forecast
        scores |= {(baseline_name, metric): value for metric, value in values.items()}
    scores |= _score_references(references or {}, truth, climatology, mask)
    spectra = {method if name == MODEL else name: power
               for name, power in _spectra(model, truth, mask).items()}
    return scores, _rank_frequency(model, truth, mask), spectra


def _prediction(prediction: str | Path | xr.Dataset, name: str | None = None) -> tuple[xr.Dataset, str]:
    """The prediction with its layout and task attributes checked, and its name for messages."""
    if name is None:
        name = "<dataset>" if isinstance(prediction, xr.Dataset) else str(prediction)
    data = prediction if isinstance(prediction, xr.Dataset) else open_prediction(prediction)
    missing = [d for d in ("time", "prediction_timedelta", *SPATIAL) if d not in data.dims]
    if missing or data["time"].dtype.kind != "M" or data["prediction_timedelta"].dtype.kind != "m":
        raise DataError(f"prediction '{name}' needs datetime 'time', timedelta 'prediction_timedelta', "
                        f"latitude and longitude dims, got {dict(data.dims)}")
    task = data.attrs.get("task")
    if task not in inference_tasks():
        raise DataError(f"prediction '{name}' has task attribute {task!r}, expected one of "
                        f"{list(inference_tasks())}")
    lacking = [a for a in get_task(task).required_attrs if a not in data.attrs]
    if lacking or (get_task(task).with_mask and MASK not in data):
        raise DataError(f"prediction '{name}' of task '{task}' lacks {lacking or MASK!r}")
    factor = data.attrs.get("coarsen_factor", 1)
    if not isinstance(factor, int | np.integer) or factor < 1:
        raise DataError(f"prediction '{name}': coarsen_factor must be a positive integer, got {factor!r}")
    data = data.drop_vars(["valid_time"], errors="ignore")
    time = data["time"].values.astype("datetime64[ns]")
    leads = data["prediction_timedelta"].values.astype("timedelta64[ns]")
    return data.assign_coords(time=time, prediction_timedelta=leads), name


def _cropped(data: xr.DataArray, factor: int) -> xr.DataArray:
    """``data`` cropped at its north and east ends to grid sizes that are multiples of ``factor``."""
    sizes = {d: data.sizes[d] - data.sizes[d] % factor for d in SPATIAL}
    if any(sizes[d] != data.sizes[d] for d in SPATIAL):
        logger.info("downscale: cropping '%s' from %s to %s points, multiples of the coarsen factor %d",
                    data.name, [data.sizes[d] for d in SPATIAL], list(sizes.values()), factor)
    return data.isel({d: slice(0, size) for d, size in sizes.items()})


def predicted_levels(variable: xr.DataArray) -> np.ndarray:
    """Indices of the levels a prediction variable holds: those not all NaN in its first case.

    The level axis of a prediction store is the union of the predicted fields' levels, so a field
    is NaN at the levels it does not predict.

    Args:
        variable: ``(time, prediction_timedelta, [member], level, latitude, longitude)``.

    Returns:
        ``[L']`` indices along ``level``, increasing; only the first case (and member) is read.
    """
    first = variable.isel({d: 0 for d in ("time", "prediction_timedelta", "member") if d in variable.dims})
    return np.flatnonzero(np.asarray(first.notnull().any(SPATIAL).values))


def _model(prediction: xr.Dataset, field: str, name: str) -> xr.DataArray:
    """One field's members ``(time, prediction_timedelta, member, [level], latitude, longitude)``,
    at the levels it predicts (:func:`predicted_levels`)."""
    model = prediction[field]
    if "member" not in model.dims:
        model = model.expand_dims(member=[0])
    model = model.transpose("time", "prediction_timedelta", "member", ...)
    if "level" in model.dims:
        present = predicted_levels(model)
        if not present.size:
            raise DataError(f"prediction '{name}': field '{field}' is NaN at every level of its first case")
        model = model.isel(level=present)
    if "coarsen_factor" in get_task(prediction.attrs["task"]).required_attrs:  # baselines need whole blocks
        model = _cropped(model, int(prediction.attrs["coarsen_factor"]))
    return model


def _field_names(prediction: xr.Dataset, fields: Sequence[str] | None, name: str) -> list[str]:
    available = [str(v) for v in prediction.data_vars if v != MASK]
    missing = [f for f in (fields or []) if f not in available]
    if missing or not available:
        raise DataError(f"prediction '{name}' has no field {missing} (available: {available})")
    return available if fields is None else list(fields)


def _long(result: xr.DataArray, value: str, **columns: str) -> pd.DataFrame:
    """A computed result with dims prediction_timedelta, [level], ... as long-form rows."""
    frame = result.reset_coords(drop=True).to_dataframe(name=value).reset_index()
    frame["lead"] = frame.pop("prediction_timedelta") / pd.Timedelta(hours=1)
    if "level" not in frame:
        frame["level"] = np.nan
    return frame.assign(**columns)


def _frame(parts: list[pd.DataFrame], kind: str, order: list[str]) -> pd.DataFrame:
    """The long-form rows of one table of :class:`Scores` (``kind``), sorted by ``order``."""
    columns = list(COLUMNS[kind])
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object if c in TEXT_COLUMNS else float) for c in columns})
    frame = pd.concat(parts, ignore_index=True)[columns]
    rank = {field: index for index, field in enumerate(frame["field"].unique())}  # fields in scoring order
    frame = frame.sort_values(order, kind="stable", key=lambda c: c.map(rank) if c.name == "field" else c)
    return frame.reset_index(drop=True)


def score(prediction: str | Path | xr.Dataset, truth: str | Path,
          climatology_source: str | Path | None = None, *, fields: Sequence[str] | None = None,
          climatology_cache: str | Path | None = None, climatology_window_days: int = 1,
          name: str | None = None, baselines: bool = True,
          references: Mapping[str, str | Path | xr.Dataset] | None = None, method: str = MODEL) -> Scores:
    """Score a prediction store against the truth and the baselines of its task.

    Args:
        prediction: a prediction store (path) or the dataset opened from one.
        truth: the prepared store the prediction's cases come from; the prediction's levels and
            (global or regional) grid must be among the store's.
        climatology_source: a training store (its climatology by day of year and hour is computed
            at the days the valid times need) or a climatology store (dims ``dayofyear`` or
            ``month`` and ``hour``); None: no climatology baseline and no acc.
        fields: the fields to score (default: all of the prediction's).
        climatology_cache: a directory where the climatology computed from a training store is
            kept, one zarr store per field, and reused by later calls that need no other dates.
        climatology_window_days: odd width of the running mean over the day of year.
        name: the prediction's name in messages (default: its path, or ``<dataset>``).
        baselines: False scores the model alone (no baseline is built, no climatology needed).
        references: other prediction stores (or datasets) of the same cases by method name, scored
            like the model at the leads they share with it (:mod:`atmorep.evaluate.references`).
        method: the name of the prediction's rows in the tables (default ``model``; e.g. ``jcm``
            when a reference store is scored on its own).

    Returns:
        The scores per task, field, level, lead time, method and metric, the model's rank
        histograms and the zonal spectra of the model and the truth.

    Raises:
        DataError: the prediction is not in the layout, the truth (or climatology) store lacks
            one of its fields, levels, grid points or valid times, or a reference lacks one of its
            fields, case times, levels or grid points or shares no lead with it.
    """
    predicted, name = _prediction(prediction, name)
    opened = open_references(references)
    if method != MODEL and method in opened:
        raise DataError(f"reference name '{method}' is also the name of the prediction's rows")
    task = predicted.attrs["task"]
    store = LazyStore(truth, "truth store")
    models = {field: _model(predicted, field, name) for field in _field_names(predicted, fields, name)}
    if climatology_source is None and baselines:
        logger.warning("no climatology source: scoring without the climatology baseline and acc")
    climatology = ({} if climatology_source is None else
                   climatologies(climatology_source, models, climatology_window_days, climatology_cache))
    mask = predicted[MASK].astype(bool) if get_task(task).with_mask else None
    tables, histograms, spectra = [], [], []
    for field, model in models.items():
        members = {key: reference_members(reference, field, model) for key, reference in opened.items()}
        lazy = _score_field(store, field, model, mask, climatology.get(field), predicted.attrs, baselines,
                            members, method)
        scores, histogram, spectrum = dask.compute(*lazy)
        labels = {"task": task, "field": field}
        tables += [_long(value, "value", method=row_method, metric=metric, **labels)
                   for (row_method, metric), value in scores.items()]
        if histogram is not None:
            histograms.append(_long(histogram, "frequency", **labels))
        spectra += [_long(power, "power", method=row_method, **labels)
                    for row_method, power in spectrum.items()]
        logger.info("scored '%s' of '%s' (%s)", field, name, task)
    return Scores(_frame(tables, "table", ["field", "metric", "method", "level", "lead"]),
                  _frame(histograms, "rank_histogram", ["field", "level", "lead", "rank"]),
                  _frame(spectra, "spectra", ["field", "method", "level", "lead", "wavenumber"]))


def write_scores(scores: Scores, directory: str | Path) -> dict[str, Path]:
    """Write scores.csv, scores.json (the table as records), rank_histogram.csv and spectra.csv.

    Each file is written to a temporary sibling and renamed into place. Floats are written at full
    precision, so :func:`read_scores` gives back the same values.

    Returns:
        The path of each file, keyed by file name.
    """
    directory = Path(directory)
    paths = {name: directory / name for name in (*FILES.values(), RECORDS)}
    for attribute, name in FILES.items():
        atomic_write_text(paths[name], getattr(scores, attribute).to_csv(index=False))
    records = scores.table.astype(object).where(scores.table.notna(), None).to_dict(orient="records")
    atomic_write_text(paths[RECORDS], json.dumps(records, indent=1, allow_nan=False) + "\n")
    return paths


def read_scores(directory: str | Path) -> Scores:
    """The scores written by :func:`write_scores` in ``directory``."""
    frames = {}
    for attribute, name in FILES.items():
        path = Path(directory) / name
        if not path.is_file():
            raise DataError(f"no scores file '{path}' (write it with write_scores)")
        frames[attribute] = pd.read_csv(path, keep_default_na=False, na_values=[""],
                                        dtype=TEXT_COLUMNS | FLOAT_COLUMNS)
    return Scores(**frames)


def _at_lead(table: pd.DataFrame, lead: float | None) -> pd.DataFrame:
    if lead is None:
        return table
    chosen = table[np.isclose(table["lead"], lead)]
    if chosen.empty:
        raise DataError(f"scores have no lead time {lead} h (available: {sorted(table['lead'].unique())})")
    return chosen


def summary_table(scores: Scores, lead: float | None = None, model: str = MODEL) -> pd.DataFrame:
    """One row per field: the model's and each baseline's RMSE, the ratio to the best and the ensemble scores.

    Scores are means over levels and, by default, over all lead times (one number per field that
    weighs every predicted step alike, for every task); ``lead`` (hours) picks one lead time.
    ``model`` names the rows of the scored prediction (``model`` unless it was scored under another
    name); every other method, references included, is a baseline here. A reference scored at fewer
    leads than the model is averaged over its own leads.

    Returns:
        Columns field, ``rmse_model``, ``rmse_<baseline>`` for each baseline, best_baseline (lowest
        RMSE), ratio (``rmse_model / rmse_best``: below 1 where the model beats every baseline), and
        the model's acc, crps, spread_skill and blockiness (NaN where not scored).
    """
    table = _at_lead(scores.table, lead)
    means = table.groupby(["field", "method", "metric"], sort=False)["value"].mean()
    rows = []
    for field in table["field"].unique():
        rmse = {method: value for (name, method, metric), value in means.items()
                if name == field and metric == "rmse"}
        references = {method: value for method, value in rmse.items() if method != model}
        row = {"field": field, f"rmse_{model}": rmse.get(model, np.nan),
               **{f"rmse_{method}": value for method, value in references.items()}}
        best = min(references, key=references.get) if references else None
        row["best_baseline"] = best
        reference = references[best] if best else np.nan
        row["ratio"] = rmse.get(model, np.nan) / reference if reference > 0 else np.nan  # NaN: no scale
        row |= {metric: means.get((field, model, metric), np.nan) for metric in SUMMARY_METRICS}
        rows.append(row)
    return pd.DataFrame(rows)
