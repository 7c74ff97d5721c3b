"""Score a prediction store against the truth and the baselines, per field, level and lead time.

:func:`score` reads a prediction store (the WeatherBench-2 layout written by ``atmorep infer``: dims
``time, prediction_timedelta, member, [level], latitude, longitude`` and the global attribute
``task``), selects the truth at its valid times from a prepared store and builds the baselines of
its task:

========================  ==========================================================================
task                      methods scored
========================  ==========================================================================
forecast                  model, persistence (truth at ``time``), climatology
interpolate               model, linear (in time, between the truth at ``time`` and at the first
                          step after the gap, ``time + max(prediction_timedelta) + time_step_hours``),
                          climatology
infill, reconstruct       model, persistence (truth at the window start ``time``), climatology;
                          scored only where ``target_mask`` is True
downscale                 model, bilinear, bicubic (the truth coarsened by ``coarsen_factor`` with
                          :func:`atmorep.evaluate.baselines.coarsen` and upsampled back); a grid
                          whose size is not a multiple of the factor is cropped at its northern
                          and eastern ends to the largest multiple, for all methods alike
========================  ==========================================================================

Metrics come from :mod:`atmorep.evaluate.metrics`, reduced over time, latitude (area-weighted) and
longitude: ``rmse``, ``mae``, ``bias`` and ``acc`` of the ensemble mean; ``crps`` (fair), ``spread``
and ``spread_skill`` of the members (spread needs two members). A deterministic baseline's
``crps`` is its ``mae``, the standard comparison. ``acc`` and the climatology baseline need a
climatology and are left out, with a warning, without one (the climatology itself has no acc: its
anomaly is zero). The model's rank histogram (two members or more) and the zonal power spectra of
model and truth (:func:`metrics.power_spectrum`; each row of a regional grid is taken as periodic,
for model and truth alike) come with the scores.

**Cost.** Nothing is read from the truth store but its coordinates before the cases are known:
the store is opened without dask, the valid (and reference) times of the cases are looked up in
its time axis and only those steps, on the prediction's levels and grid, are read, one dask chunk
per case. The climatology is computed from a training store restricted, before any reduction, to
the days of year (widened by half the smoothing window) and hours of the valid times. So a truth
store ten times longer costs the same; a longer training store costs more only through the days
it holds for the needed dates. With ``climatology_cache`` (e.g. ``<output>/climatology``, one small
zarr store per field) the restricted climatology is written once and reused by later calls whose
dates it covers; a source given as a climatology (dims ``dayofyear`` or ``month`` and ``hour``) is
used as it is.

**Masked tasks.** Means over the masked points are ``<m x> / <m>`` with latitude weights: forecast
and truth are zeroed outside the mask, scored by the metrics functions and rescaled by the
masked fraction, so values outside the mask (whatever they hold) never enter. The anomaly
correlation is centred over the masked points of each case.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import xarray as xr

from atmorep.errors import DataError
from atmorep.evaluate import baselines, metrics
from atmorep.evaluate.climatology import DAYS_IN_YEAR, climatology_at, climatology_from, is_climatology
from atmorep.io import atomic_directory, atomic_write_text

logger = logging.getLogger(__name__)

MODEL = "model"
MASK = "target_mask"
MASKED_TASKS = ("infill", "reconstruct")
BASELINES: dict[str, tuple[str, ...]] = {  # the reference methods of each task, by builder name
    "forecast": ("persistence", "climatology"),
    "interpolate": ("linear", "climatology"),
    "infill": ("persistence", "climatology"),
    "reconstruct": ("persistence", "climatology"),
    "downscale": ("bilinear", "bicubic"),
}
TABLE_COLUMNS = ["task", "field", "level", "lead", "method", "metric", "value"]
HISTOGRAM_COLUMNS = ["task", "field", "level", "lead", "rank", "frequency"]
SPECTRA_COLUMNS = ["task", "field", "level", "lead", "method", "wavenumber", "power"]
REQUIRED_ATTRS: dict[str, tuple[str, ...]] = {"interpolate": ("time_step_hours",),
                                               "downscale": ("coarsen_factor",)}
FILES = {"table": "scores.csv", "rank_histogram": "rank_histogram.csv", "spectra": "spectra.csv"}
RECORDS = "scores.json"
TEXT_COLUMNS = {"task": str, "field": str, "method": str, "metric": str}
FLOAT_COLUMNS = {"level": np.float64, "lead": np.float64}
SUMMARY_METRICS = ("acc", "crps", "spread_skill")  # the model's, next to the RMSEs
CHUNK_BYTES = 64 * 2**20  # dask chunk size of the training data read for a climatology
SPATIAL = ("latitude", "longitude")


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


def _open_zarr(path: str | Path, what: str, **kwargs) -> xr.Dataset:
    try:
        with warnings.catch_warnings():  # stores without consolidated metadata are fine
            warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated", RuntimeWarning)
            return xr.open_dataset(path, engine="zarr", consolidated=None, **kwargs)
    except Exception as error:  # zarr raises several types for missing or corrupt stores
        raise DataError(f"cannot open {what} '{path}': {type(error).__name__}: {error}") from None


def _open_prediction(path: str | Path) -> xr.Dataset:
    """The prediction store at ``path``, opened lazily and checked (``atmorep.infer.writer``)."""
    from atmorep.infer.writer import open_prediction

    return open_prediction(path)


class _LazyStore:
    """A zarr store opened without dask: selections stay lazy and read only what they index."""

    def __init__(self, path: str | Path, what: str):
        self.path, self.what = str(path), what
        dataset = _open_zarr(path, what, chunks=None, cache=False)
        self.dataset = dataset[[n for n, v in dataset.data_vars.items() if set(SPATIAL) <= set(v.dims)]]
        self.is_climatology = is_climatology(self.dataset)

    @cached_property
    def time(self) -> pd.DatetimeIndex:
        if "time" not in self.dataset.dims:
            raise DataError(f"{self.what} '{self.path}' has no dim 'time' (dims {list(self.dataset.dims)})")
        return pd.DatetimeIndex(self.dataset["time"].values).as_unit("ns")

    def positions(self, times: np.ndarray, what: str) -> np.ndarray:
        """Indices of ``times`` along the store's time axis; DataError naming the first missing one."""
        times = pd.DatetimeIndex(np.asarray(times).ravel()).as_unit("ns")
        index = self.time.get_indexer(times)
        if (index < 0).any():
            missing = times[index < 0]
            raise DataError(f"{self.what} '{self.path}' has no data at {what} {missing[0]} "
                            f"({missing.size} of {times.size} missing)")
        return index

    def variable(self, field: str, like: xr.DataArray) -> xr.DataArray:
        """``field`` on ``like``'s levels, latitudes and longitudes (lazy), with ``like``'s coordinates."""
        if field not in self.dataset:
            raise DataError(f"{self.what} '{self.path}' has no field '{field}' "
                            f"(available: {list(self.dataset.data_vars)})")
        data = self.dataset[field]
        if "member" in data.dims:
            raise DataError(f"{self.what} '{self.path}' holds an ensemble (dim 'member' of '{field}'); "
                            f"prepare the truth with one member")
        if ("level" in data.dims) != ("level" in like.dims):
            raise DataError(f"{self.what} '{self.path}': field '{field}' has dims {list(data.dims)}, but "
                            f"the prediction's has {'' if 'level' in like.dims else 'no '}level")
        dims = [d for d in ("level", *SPATIAL) if d in like.dims]
        indexers = {d: self._match(data[d].values, like[d].values, d) for d in dims}
        return data.isel(indexers).assign_coords({d: like[d].values for d in dims})

    def _match(self, available: np.ndarray, wanted: np.ndarray, name: str) -> np.ndarray:
        difference = wanted[:, None] - available[None, :]  # [wanted, available]
        if name == "longitude":
            difference = (difference + 180.0) % 360.0 - 180.0
        hit = np.isclose(difference, 0.0, atol=1e-6, rtol=0.0)
        found = hit.any(axis=1)
        if not found.all():
            raise DataError(f"{self.what} '{self.path}' has no {name} {wanted[~found][:3].tolist()} of the "
                            f"prediction (its grid must be a subset of the store's)")
        return hit.argmax(axis=1)

    def read(self, field: str, times: np.ndarray, like: xr.DataArray, what: str,
             chunk: int = 1) -> xr.DataArray:
        """``field`` at ``times`` on ``like``'s grid, ``(time, [level], latitude, longitude)``, dask."""
        return self.variable(field, like).isel(time=self.positions(times, what)).chunk({"time": chunk})

    def cases(self, field: str, like: xr.DataArray) -> xr.DataArray:
        """``field`` at the valid times of ``like`` (dims time, prediction_timedelta), one chunk per case."""
        times, leads = like["time"].values, like["prediction_timedelta"].values
        valid = (times[:, None] + leads[None, :]).ravel()  # [I * P], case after case
        flat = self.read(field, valid, like, "valid time", chunk=leads.size)  # (I * P, [L], H, W)
        values = flat.data.reshape(times.size, leads.size, *flat.shape[1:])  # [I * P, ...] -> [I, P, ...]
        coords = {"time": times, "prediction_timedelta": leads, **{d: flat[d] for d in flat.dims[1:]}}
        return xr.DataArray(values, dims=("time", "prediction_timedelta", *flat.dims[1:]), coords=coords,
                            name=field, attrs=flat.attrs)


@dataclass(frozen=True)
class _Context:
    """What a baseline builder needs: the truth store, the truth of the cases and the task's attrs."""

    store: _LazyStore
    field: str
    truth: xr.DataArray  # (time, prediction_timedelta, [level], latitude, longitude)
    climatology: xr.DataArray | None  # at the truth's coordinates
    attrs: dict


def _persistence(context: _Context) -> xr.DataArray:
    truth = context.truth
    start = context.store.read(context.field, truth["time"].values, truth, "reference time")
    return baselines.persistence(start, truth["time"].values, truth["prediction_timedelta"].values)


def _linear(context: _Context) -> xr.DataArray:
    truth, leads = context.truth, context.truth["prediction_timedelta"].values
    step = np.timedelta64(round(float(context.attrs["time_step_hours"]) * 3600e9), "ns")
    starts = truth["time"].values
    ends = starts + leads.max() + step  # the first known step after the gap
    known = context.store.read(context.field, np.unique(np.concatenate([starts, ends])), truth,
                               "interpolation end point")
    cases = [baselines.linear_interpolation(known, start, end, start + leads)
             .assign_coords(time=leads).rename(time="prediction_timedelta")
             for start, end in zip(starts, ends)]
    return xr.concat(cases, dim=pd.Index(starts, name="time"))


def _upsampled(context: _Context, method: baselines.Method) -> xr.DataArray:
    longitude = context.truth["longitude"].values
    unwrapped = longitude[0] + np.mod(longitude - longitude[0], 360.0)  # increasing across 0/360
    truth = context.truth.assign_coords(longitude=unwrapped)
    coarse = baselines.coarsen(truth, int(context.attrs["coarsen_factor"]))
    fine = baselines.upsample(coarse, truth["latitude"].values, unwrapped, method)
    return fine.assign_coords(longitude=longitude)


BUILDERS: dict[str, Callable[[_Context], xr.DataArray | None]] = {
    "persistence": _persistence,
    "linear": _linear,
    "climatology": lambda context: context.climatology,  # None without a climatology source
    "bilinear": partial(_upsampled, method="bilinear"),
    "bicubic": partial(_upsampled, method="bicubic"),
}


def _needed(like: xr.DataArray) -> tuple[set[int], set[int]]:
    """The days of year and hours of the valid times of ``like`` (dims time, prediction_timedelta)."""
    valid = like["time"].values[:, None] + like["prediction_timedelta"].values[None, :]  # [I, P]
    valid = pd.DatetimeIndex(valid.ravel())
    return set(valid.day_of_year.tolist()), set(valid.hour.tolist())


def _restricted(climatology: xr.DataArray, days: set[int], hours: set[int]) -> xr.DataArray:
    """``climatology`` at the wanted days of year and hours that it holds (lazy where it was)."""
    wanted = {"dayofyear": days, "hour": hours}
    return climatology.sel({key: sorted(values & set(climatology[key].values.tolist()))
                            for key, values in wanted.items() if key in climatology.dims})


def _from_training(store: _LazyStore, field: str, like: xr.DataArray, days: set[int], hours: set[int],
                   window_days: int) -> xr.DataArray:
    """The climatology of a training store at ``days`` and ``hours``, reading only the times it needs."""
    half = window_days // 2
    reach = {(day - 1 + shift) % DAYS_IN_YEAR + 1 for day in days for shift in range(-half, half + 1)}
    time = store.time
    keep = np.flatnonzero(np.isin(time.day_of_year, sorted(reach)) & np.isin(time.hour, sorted(hours)))
    if keep.size == 0:
        raise DataError(f"climatology source '{store.path}' has no data on the days of year and hours of "
                        f"the valid times (hours {sorted(hours)})")
    data = store.variable(field, like).isel(time=keep)  # lazy: only these steps are read
    step_bytes = data.dtype.itemsize * int(np.prod(data.shape[1:]))
    data = data.chunk({"time": max(1, CHUNK_BYTES // step_bytes)})
    logger.info("climatology of '%s' from %d steps of '%s'", field, keep.size, store.path)
    return _restricted(climatology_from(data, window_days=window_days), days, hours).compute()


def _identity(path: str | Path) -> str:
    return str(Path(path).resolve()) if Path(path).exists() else str(path)


def _cached(cache: Path, field: str, source: str, window_days: int,
            like: xr.DataArray) -> xr.DataArray | None:
    """The cached climatology of ``field`` if it was made from ``source`` on ``like``'s grid, else None."""
    path = cache / f"{field}.zarr"
    if not path.exists():
        return None
    try:
        stored = _LazyStore(path, "climatology cache").dataset
    except DataError as error:
        logger.warning("%s: computing the climatology again", error)
        return None
    same_grid = field in stored and all(
        stored[d].shape == like[d].shape and np.allclose(stored[d].values, like[d].values, atol=1e-6)
        for d in ("level", *SPATIAL) if d in like.dims)
    attrs = stored.attrs
    if not same_grid or attrs.get("source") != _identity(source) or attrs.get("window_days") != window_days:
        logger.info("climatology cache '%s' was made for other data: computing it again", path)
        return None
    return stored[field]


def _write_cache(climatology: xr.DataArray, path: Path, source: str, window_days: int) -> None:
    dataset = climatology.to_dataset().drop_encoding()
    dataset.attrs = {"source": _identity(source), "window_days": window_days}
    with atomic_directory(path, overwrite=True) as tmp:
        dataset.to_zarr(tmp, mode="w", consolidated=False)
    logger.info("climatology cached in '%s'", path)


def _climatology(store: _LazyStore, field: str, like: xr.DataArray, window_days: int,
                 cache: Path | None) -> xr.DataArray:
    """The climatology of ``field`` at the days of year and hours of ``like``'s valid times, loaded."""
    days, hours = _needed(like)
    if store.is_climatology:
        return _restricted(store.variable(field, like), days, hours).compute()
    cached = None if cache is None else _cached(cache, field, store.path, window_days, like)
    if cached is not None:
        cached_days, cached_hours = (set(cached[key].values.tolist()) for key in ("dayofyear", "hour"))
        if days <= cached_days and hours <= cached_hours:
            return _restricted(cached, days, hours).compute()
        days, hours = days | cached_days, hours | cached_hours  # the cache grows to cover both
    climatology = _from_training(store, field, like, days, hours, window_days)
    if cache is not None:
        _write_cache(climatology, cache / f"{field}.zarr", store.path, window_days)
    return climatology


def _climatologies(source: str | Path | None, models: dict[str, xr.DataArray], window_days: int,
                   cache: str | Path | None) -> dict[str, xr.DataArray]:
    """Per field, the climatology at the valid times' days of year and hours; empty without a source."""
    if source is None:
        logger.warning("no climatology source: scoring without the climatology baseline and acc")
        return {}
    store = _LazyStore(source, "climatology source")
    cache = None if cache is None else Path(cache)
    return {field: _climatology(store, field, model, window_days, cache) for field, model in models.items()}


def _at_cases(climatology: xr.DataArray, truth: xr.DataArray) -> xr.DataArray:
    """The climatology at the valid times of ``truth``, in its layout and dask blocks (one per case)."""
    def lookup(block: xr.DataArray) -> xr.DataArray:
        valid = block["time"] + block["prediction_timedelta"]  # (time, prediction_timedelta)
        return climatology_at(climatology, valid).transpose(*block.dims).astype(block.dtype)

    return xr.map_blocks(lookup, truth, template=truth)


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


def _score_field(store: _LazyStore, field: str, model: xr.DataArray, mask: xr.DataArray | None,
                 climatology: xr.DataArray | None, attrs: dict):
    """Lazy scores ``{(method, metric): [P, (L)]}``, rank frequencies and spectra of one field."""
    truth = store.cases(field, model)
    at_cases = None if climatology is None else _at_cases(climatology, truth)
    context = _Context(store, field, truth, at_cases, attrs)
    model_scores = _deterministic(model, truth, at_cases, mask) | _ensemble(model, truth, mask)
    scores = {(MODEL, metric): value for metric, value in model_scores.items()}
    for method in BASELINES[attrs["task"]]:
        baseline = BUILDERS[method](context)
        if baseline is None:
            continue
        values = _deterministic(baseline.transpose(*truth.dims), truth, at_cases, mask)
        values["crps"] = values["mae"]  # the CRPS of a deterministic forecast
        if method == "climatology":
            values.pop("acc", None)  # its anomaly is zero: 0 / 0
        scores |= {(method, metric): value for metric, value in values.items()}
    return scores, _rank_frequency(model, truth, mask), _spectra(model, truth, mask)


def _prediction(prediction: str | Path | xr.Dataset) -> tuple[xr.Dataset, str]:
    """The prediction with its layout and task attributes checked, and its name for messages."""
    name = "<dataset>" if isinstance(prediction, xr.Dataset) else str(prediction)
    data = prediction if isinstance(prediction, xr.Dataset) else _open_prediction(prediction)
    missing = [d for d in ("time", "prediction_timedelta", *SPATIAL) if d not in data.dims]
    if missing or data["time"].dtype.kind != "M" or data["prediction_timedelta"].dtype.kind != "m":
        raise DataError(f"prediction '{name}' needs datetime 'time', timedelta 'prediction_timedelta', "
                        f"latitude and longitude dims, got {dict(data.dims)}")
    task = data.attrs.get("task")
    if task not in BASELINES:
        raise DataError(f"prediction '{name}' has task attribute {task!r}, expected one of {list(BASELINES)}")
    lacking = [a for a in REQUIRED_ATTRS.get(task, ()) if a not in data.attrs]
    if lacking or (task in MASKED_TASKS and MASK not in data):
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


def _model(prediction: xr.Dataset, field: str, name: str) -> xr.DataArray:
    """One field's members ``(time, prediction_timedelta, member, [level], latitude, longitude)``.

    Levels where the first case is all NaN are not predicted for this field (the level axis is the
    union of the predicted fields' levels) and are dropped.
    """
    model = prediction[field]
    if "member" not in model.dims:
        model = model.expand_dims(member=[0])
    model = model.transpose("time", "prediction_timedelta", "member", ...)
    if "level" in model.dims:
        first = model.isel(time=0, prediction_timedelta=0, member=0)
        present = np.asarray(first.notnull().any(SPATIAL).values)  # reads the first case only
        if not present.any():
            raise DataError(f"prediction '{name}': field '{field}' is NaN at every level of its first case")
        model = model.isel(level=np.flatnonzero(present))
    if prediction.attrs["task"] == "downscale":
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


def _frame(parts: list[pd.DataFrame], columns: list[str], order: list[str]) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object if c in TEXT_COLUMNS else float) for c in columns})
    frame = pd.concat(parts, ignore_index=True)[columns]
    rank = {field: index for index, field in enumerate(frame["field"].unique())}  # fields in scoring order
    frame = frame.sort_values(order, kind="stable", key=lambda c: c.map(rank) if c.name == "field" else c)
    return frame.reset_index(drop=True)


def score(prediction: str | Path | xr.Dataset, truth: str | Path,
          climatology_source: str | Path | None = None, *, fields: Sequence[str] | None = None,
          climatology_cache: str | Path | None = None, climatology_window_days: int = 1) -> Scores:
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

    Returns:
        The scores per task, field, level, lead time, method and metric, the model's rank
        histograms and the zonal spectra of the model and the truth.

    Raises:
        DataError: the prediction is not in the layout, or the truth (or climatology) store lacks
            one of its fields, levels, grid points or valid times.
    """
    predicted, name = _prediction(prediction)
    task = predicted.attrs["task"]
    store = _LazyStore(truth, "truth store")
    models = {field: _model(predicted, field, name) for field in _field_names(predicted, fields, name)}
    climatologies = _climatologies(climatology_source, models, climatology_window_days, climatology_cache)
    mask = predicted[MASK].astype(bool) if task in MASKED_TASKS else None
    tables, histograms, spectra = [], [], []
    for field, model in models.items():
        lazy = _score_field(store, field, model, mask, climatologies.get(field), predicted.attrs)
        scores, histogram, spectrum = dask.compute(*lazy)
        labels = {"task": task, "field": field}
        tables += [_long(value, "value", method=method, metric=metric, **labels)
                   for (method, metric), value in scores.items()]
        if histogram is not None:
            histograms.append(_long(histogram, "frequency", **labels))
        spectra += [_long(power, "power", method=method, **labels) for method, power in spectrum.items()]
        logger.info("scored '%s' of '%s' (%s)", field, name, task)
    return Scores(_frame(tables, TABLE_COLUMNS, ["field", "metric", "method", "level", "lead"]),
                  _frame(histograms, HISTOGRAM_COLUMNS, ["field", "level", "lead", "rank"]),
                  _frame(spectra, SPECTRA_COLUMNS, ["field", "method", "level", "lead", "wavenumber"]))


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


def summary_table(scores: Scores, lead: float | None = None) -> pd.DataFrame:
    """One row per field: the model's and each baseline's RMSE, the skill and the ensemble scores.

    Scores are means over levels and, by default, over all lead times (one number per field that
    weighs every predicted step alike, for every task); ``lead`` (hours) picks one lead time.

    Returns:
        Columns field, ``rmse_model``, ``rmse_<baseline>`` for each baseline, best_baseline (lowest
        RMSE), skill (``1 - rmse_model / rmse_best``), and the model's acc, crps and spread_skill
        (NaN where not scored).
    """
    table = _at_lead(scores.table, lead)
    means = table.groupby(["field", "method", "metric"], sort=False)["value"].mean()
    rows = []
    for field in table["field"].unique():
        rmse = {method: value for (name, method, metric), value in means.items()
                if name == field and metric == "rmse"}
        references = {method: value for method, value in rmse.items() if method != MODEL}
        row = {"field": field, "rmse_model": rmse.get(MODEL, np.nan),
               **{f"rmse_{method}": value for method, value in references.items()}}
        best = min(references, key=references.get) if references else None
        row["best_baseline"] = best
        row["skill"] = 1.0 - rmse.get(MODEL, np.nan) / references[best] if best else np.nan
        row |= {metric: means.get((field, MODEL, metric), np.nan) for metric in SUMMARY_METRICS}
        rows.append(row)
    return pd.DataFrame(rows)
