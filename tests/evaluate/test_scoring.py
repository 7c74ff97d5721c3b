"""Scoring of prediction stores against small truth stores with known answers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
import zarr.storage

from atmorep.data.prepare import prepare_dataset
from atmorep.errors import DataError
from atmorep.evaluate.scoring import Scores, read_scores, score, summary_table, write_scores
from atmorep.numerics.first_guess import spatial_fill

LEVELS = np.array([500.0, 850.0])
LATITUDES = np.linspace(-80.0, 80.0, 9)  # 20 degrees
LONGITUDES = np.arange(0.0, 360.0, 30.0)  # [12]
HOUR = np.timedelta64(1, "h")
TIMES = pd.date_range("2021-03-01", periods=24, freq="6h").values  # 6 days
REGION = (np.arange(2, 7), np.array([10, 11, 0, 1, 2]))  # latitude, longitude indices; wraps past 360


def _dataset(times, values=None, latitudes=LATITUDES, longitudes=LONGITUDES, seed=0) -> xr.Dataset:
    """t on two levels and sp at the surface; random values unless ``values(field, shape)`` is given."""
    rng = np.random.default_rng(seed)
    shapes = {"t": (len(times), 2, len(latitudes), len(longitudes)), "sp": (len(times), len(latitudes),
                                                                         len(longitudes))}
    draw = values or (lambda field, shape: (250.0 if field == "t" else 1e3) + 10.0 * rng.normal(size=shape))
    dims = {"t": ("time", "level", "latitude", "longitude"), "sp": ("time", "latitude", "longitude")}
    return xr.Dataset({f: (dims[f], draw(f, shapes[f]).astype(np.float32)) for f in ("t", "sp")},
                      coords={"time": times, "level": LEVELS, "latitude": latitudes, "longitude": longitudes})


def _store(dataset: xr.Dataset, path: Path, time_chunk: int = 1) -> Path:
    dataset.chunk({"time": time_chunk}).to_zarr(path, mode="w", consolidated=False)
    return path


def _cases(truth: xr.Dataset, times, leads, region=None) -> dict[str, np.ndarray]:
    """The truth at the valid times, per field ``[I, P, (L), H, W]``, on a region of the grid."""
    region = region or (slice(None), slice(None))
    valid = np.asarray(times)[:, None] + np.asarray(leads)[None, :] * HOUR  # [I, P]
    picked = truth.sel(time=xr.DataArray(valid, dims=("case", "lead")))
    return {f: picked[f].isel(latitude=region[0], longitude=region[1]).values for f in ("t", "sp")}


def _prediction(values: dict[str, np.ndarray], truth: xr.Dataset, times, leads, task: str, region=None,
                **attrs) -> xr.Dataset:
    """A prediction in the store layout from ``values[field] [I, P, E, (L), H, W]``."""
    region = region or (slice(None), slice(None))
    coords = {"time": np.asarray(times), "prediction_timedelta": np.asarray(leads) * HOUR,
              "member": np.arange(values["t"].shape[2]), "level": LEVELS,
              "latitude": truth["latitude"].values[region[0]],
              "longitude": truth["longitude"].values[region[1]]}
    head = ("time", "prediction_timedelta", "member")
    data = {"t": (head + ("level", "latitude", "longitude"), values["t"].astype(np.float32)),
            "sp": (head + ("latitude", "longitude"), values["sp"].astype(np.float32))}
    defaults = {"time_step_hours": 6.0, "box": [len(leads) + 2, 0, 0]}  # one given step each side of a gap
    prediction = xr.Dataset(data, coords=coords, attrs={"task": task, **defaults, **attrs})
    return prediction.assign_coords(valid_time=prediction["time"] + prediction["prediction_timedelta"])


def _members(cases: dict[str, np.ndarray], count: int, offset: float = 0.0) -> dict[str, np.ndarray]:
    return {f: np.repeat(v[:, :, None] + offset, count, axis=2) for f, v in cases.items()}


def _rows(scores: Scores, **where) -> pd.DataFrame:
    table = scores.table
    for column, value in where.items():
        table = table[table[column] == value]
    return table


@pytest.fixture(scope="module")
def truth(tmp_path_factory) -> tuple[xr.Dataset, Path]:
    """Random fields, 6-hourly over 6 days, in a store made by the project's prepare step."""
    dataset = _dataset(TIMES)
    path = tmp_path_factory.mktemp("truth") / "truth.zarr"
    prepare_dataset(dataset, path, box=(1, 9, 12))
    return dataset, path


@pytest.fixture(scope="module")
def training(tmp_path_factory) -> Path:
    """A training store around the same days of year a year earlier: a climatology unlike the truth."""
    times = pd.date_range("2020-02-20", "2020-03-20", freq="6h").values
    return _store(_dataset(times, seed=1), tmp_path_factory.mktemp("training") / "training.zarr")


def test_a_perfect_regional_forecast_scores_zero_error_and_beats_the_baselines(truth, training):
    dataset, path = truth
    times, leads = TIMES[1:4], [6, 12, 18]
    values = _members(_cases(dataset, times, leads, REGION), 3)
    prediction = _prediction(values, dataset, times, leads, "forecast", REGION)
    scores = score(prediction, path, training)
    model = _rows(scores, method="model")
    assert set(scores.table["method"]) == {"model", "persistence", "climatology"}
    assert set(model["metric"]) == {"rmse", "mae", "bias", "acc", "crps", "spread", "spread_skill"}
    for metric in ("rmse", "mae", "bias", "crps", "spread"):  # float32 means of equal members: ~1 ulp
        np.testing.assert_allclose(_rows(scores, method="model", metric=metric)["value"], 0.0, atol=1e-4)
    np.testing.assert_allclose(_rows(scores, method="model", metric="acc")["value"], 1.0, atol=1e-6)
    for baseline in ("persistence", "climatology"):
        assert (_rows(scores, method=baseline, metric="rmse")["value"] > 1.0).all()
        np.testing.assert_array_equal(_rows(scores, method=baseline, metric="crps")["value"].values,
                                      _rows(scores, method=baseline, metric="mae")["value"].values)
    assert sorted(scores.table["lead"].unique()) == [6.0, 12.0, 18.0]
    assert set(_rows(scores, field="t")["level"]) == {500.0, 850.0}
    assert _rows(scores, field="sp")["level"].isna().all()
    summary = summary_table(scores)
    assert list(summary["field"]) == ["t", "sp"]
    np.testing.assert_allclose(summary["ratio"], 0.0, atol=1e-5)
    assert summary_table(scores, lead=12.0)["rmse_persistence"].notna().all()
    with pytest.raises(DataError, match="no lead time 7"):
        summary_table(scores, lead=7.0)


def test_the_persistence_baseline_is_the_truth_at_initialisation(truth, training):
    dataset, path = truth
    times, leads = TIMES[2:6], [6, 24]
    initial = _cases(dataset, times, [0])
    values = {f: np.repeat(np.repeat(v[:, :, None], 2, axis=2), 2, axis=1) for f, v in initial.items()}
    scores = score(_prediction(values, dataset, times, leads, "forecast"), path, training)
    for metric in ("rmse", "mae", "bias", "acc", "crps"):
        model = _rows(scores, method="model", metric=metric)["value"].values
        np.testing.assert_allclose(model, _rows(scores, method="persistence", metric=metric)["value"].values,
                                   rtol=1e-6, atol=1e-6)
    assert (_rows(scores, method="persistence", metric="rmse")["value"] > 1.0).all()


def test_the_linear_baseline_is_exact_for_a_field_linear_in_time(tmp_path, caplog):
    hours = (TIMES - TIMES[0]) / HOUR
    slope = np.random.default_rng(2).normal(size=(2, 9, 12))

    def linear(field: str, shape: tuple[int, ...]) -> np.ndarray:
        rate = slope if len(shape) == 4 else slope[0]  # [(L), H, W]
        return 250.0 + hours.reshape(-1, *[1] * rate.ndim) * rate

    dataset = _dataset(TIMES, linear)
    path = _store(dataset, tmp_path / "truth.zarr")
    times, leads = TIMES[[0, 4, 9]], [6, 12]
    values = _members(_cases(dataset, times, leads), 1, offset=0.5)
    prediction = _prediction(values, dataset, times, leads, "interpolate", time_step_hours=6.0)
    with caplog.at_level(logging.WARNING, logger="atmorep.evaluate.scoring"):
        scores = score(prediction, path)
    assert "no climatology source" in caplog.text
    assert set(scores.table["method"]) == {"model", "linear", "cubic"}
    assert "acc" not in set(scores.table["metric"])
    for method in ("linear", "cubic"):
        np.testing.assert_allclose(_rows(scores, method=method, metric="rmse")["value"], 0.0, atol=1e-4)
    np.testing.assert_allclose(_rows(scores, method="model", metric="bias")["value"], 0.5, atol=1e-4)
    assert scores.rank_histogram.empty  # one member: no rank histogram, no spread
    assert "spread" not in set(scores.table["metric"])


def test_upsampling_baselines_are_exact_for_a_field_linear_in_latitude_and_longitude(tmp_path):
    latitudes, longitudes = np.arange(-85.0, 90.0, 10.0), np.arange(0.0, 360.0, 15.0)  # [18], [24]
    planes = {"t": 200.0 + 0.5 * latitudes[:, None] + 0.1 * ((longitudes - 240.0) % 360.0)[None, :]}
    planes["sp"] = 1e3 - 0.2 * planes["t"]  # linear too; both continuous over 255..75 degrees east
    dataset = _dataset(TIMES[:4], lambda field, shape: np.broadcast_to(planes[field], shape),
                       latitudes, longitudes)
    path = _store(dataset, tmp_path / "truth.zarr")
    region = (np.arange(2, 11), np.r_[17:24, 0:2])  # 9 x 9 points, cropped to 8 x 8; wraps past 360
    times, leads = TIMES[:2], [0, 6]
    values = _members(_cases(dataset, times, leads, region), 2, offset=1.0)
    prediction = _prediction(values, dataset, times, leads, "downscale", region, coarsen_factor=2)
    scores = score(prediction, path)
    assert set(scores.table["method"]) == {"model", "bilinear", "bicubic"}
    for method in ("bilinear", "bicubic"):
        np.testing.assert_allclose(_rows(scores, method=method, metric="rmse")["value"], 0.0, atol=1e-3)
    np.testing.assert_allclose(_rows(scores, method="model", metric="rmse")["value"], 1.0, rtol=1e-4)
    assert set(scores.spectra["method"]) == {"model", "truth"}
    assert scores.spectra["wavenumber"].max() == 4  # 8 longitudes after cropping


def test_an_ensemble_drawn_like_the_truth_is_calibrated(tmp_path):
    latitudes, longitudes = np.arange(-85.0, 90.0, 10.0), np.arange(0.0, 360.0, 10.0)  # [18], [36]
    rng = np.random.default_rng(3)
    dataset = _dataset(TIMES, lambda field, shape: rng.normal(size=shape), latitudes, longitudes)
    path = _store(dataset, tmp_path / "truth.zarr")
    times, leads, size = TIMES[:8], [6, 12], 10
    cases = _cases(dataset, times, leads)
    values = {f: rng.normal(size=(8, 2, size, *v.shape[2:])) for f, v in cases.items()}  # [I, P, E, ...]
    scores = score(_prediction(values, dataset, times, leads, "forecast"), path, fields=["t"])
    np.testing.assert_allclose(_rows(scores, metric="spread_skill")["value"], 1.0, atol=0.1)
    np.testing.assert_allclose(_rows(scores, method="model", metric="crps")["value"], 1 / np.sqrt(np.pi),
                               rtol=0.05)  # the CRPS of N(0, 1) forecasts of N(0, 1) outcomes
    histogram = scores.rank_histogram
    assert set(histogram["rank"]) == set(range(size + 1))
    np.testing.assert_allclose(histogram.groupby(["level", "lead"])["frequency"].sum(), 1.0)
    np.testing.assert_allclose(histogram["frequency"], 1 / (size + 1), atol=0.035)


@pytest.mark.parametrize("task", ["infill", "reconstruct"])
def test_masked_tasks_score_only_the_masked_points(truth, training, task):
    dataset, path = truth
    times, leads = TIMES[3:6], [0, 6, 12]
    cases = _cases(dataset, times, leads)
    mask = np.zeros((3, 3, 9, 12), bool)
    if task == "infill":
        mask[..., 2:6, 3:8] = True
    else:
        mask = np.random.default_rng(4).random(mask.shape) < 0.3
    expand = {"t": (slice(None),) * 2 + (None,), "sp": (Ellipsis,)}  # mask [I, P, H, W] to the field
    honest = {f: np.repeat((v + np.where(mask[expand[f]], 1.0, 0.0))[:, :, None], 2, axis=2)
              for f, v in cases.items()}
    corrupt = {f: np.where(mask[expand[f]][:, :, None], v, np.nan if f == "t" else 1e9)
               for f, v in honest.items()}
    results = [score(_prediction(values, dataset, times, leads, task)
                     .assign(target_mask=(("time", "prediction_timedelta", "latitude", "longitude"), mask)),
                     path, training) for values in (honest, corrupt)]
    for name in ("table", "rank_histogram", "spectra"):
        pd.testing.assert_frame_equal(getattr(results[0], name), getattr(results[1], name))
    scores = results[0]
    for metric in ("rmse", "mae", "bias", "crps"):
        np.testing.assert_allclose(_rows(scores, method="model", metric=metric)["value"], 1.0, rtol=1e-5)
    np.testing.assert_allclose(_rows(scores, method="model", metric="acc")["value"], 1.0, atol=1e-6)
    weights = np.cos(np.deg2rad(LATITUDES))[:, None] * mask[:, 2]  # [I, H, W] at lead 12 h
    truth = torch.from_numpy(cases["sp"][:, 2].astype(np.float64))
    filled = spatial_fill(truth, torch.from_numpy(~mask[:, 2])).numpy()  # the hidden points from the rest
    expected = np.sqrt((weights * (filled - cases["sp"][:, 2]) ** 2).sum() / weights.sum())
    spatial = _rows(scores, method="spatial", metric="rmse", field="sp")
    np.testing.assert_allclose(spatial.set_index("lead")["value"][12.0], expected, rtol=1e-5)
    assert set(scores.table["method"]) == {"model", "spatial", "climatology"}  # nothing sees hidden truth


@pytest.fixture
def reads(monkeypatch) -> dict[str, list[str]]:
    """The chunk keys of field arrays read, per store directory name."""
    seen: dict[str, list[str]] = {}
    original = zarr.storage.LocalStore.get

    async def counting(self, key, prototype=None, byte_range=None):
        if key.split("/")[0] in ("t", "sp") and "/c/" in key:
            seen.setdefault(Path(str(self.root)).name, []).append(key)
        return await original(self, key, prototype, byte_range)

    monkeypatch.setattr(zarr.storage.LocalStore, "get", counting)
    return seen


def test_scores_and_reads_do_not_depend_on_the_length_of_the_truth_store(tmp_path, training, reads):
    archive = _dataset(pd.date_range("2020-12-01", periods=120, freq="12h").values, seed=5)  # 60 days
    short = archive.sel(time=slice("2021-01-10", "2021-01-15 12:00"))  # [12], 10x shorter
    _store(archive, tmp_path / "long.zarr")
    _store(short, tmp_path / "short.zarr")
    training_store = _store(_dataset(pd.date_range("2019-12-01", periods=120, freq="12h").values, seed=6),
                            tmp_path / "training.zarr", time_chunk=10)
    times, leads = short["time"].values[[1, 3, 6]], [12, 36]
    values = _members(_cases(short, times, leads), 2, offset=0.25)
    prediction = _prediction(values, short, times, leads, "forecast")
    results = {name: score(prediction, tmp_path / f"{name}.zarr", training_store)
               for name in ("short", "long")}
    pd.testing.assert_frame_equal(results["short"].table, results["long"].table)
    pd.testing.assert_frame_equal(results["short"].spectra, results["long"].spectra)
    assert len(reads["short.zarr"]) == len(reads["long.zarr"])
    steps = set(np.concatenate([times[:, None] + np.array(leads) * HOUR, times[:, None]], axis=1).ravel())
    assert len(set(reads["long.zarr"])) == 2 * len(steps)  # a chunk per field and needed step, of 120


@pytest.mark.parametrize("task", ["forecast", "interpolate"])
def test_each_needed_truth_step_is_read_once_however_many_cases_share_it(tmp_path, reads, task):
    dataset = _dataset(TIMES, seed=4)
    path = _store(dataset, tmp_path / "truth.zarr")
    times, leads = TIMES[[1, 2, 3, 5]], [6, 12, 18]  # cases overlap, and end points are valid times
    values = _members(_cases(dataset, times, leads), 2, offset=0.5)
    score(_prediction(values, dataset, times, leads, task, time_step_hours=6.0), path)
    valid = times[:, None] + np.array(leads) * HOUR
    ends = times + (leads[-1] + 6) * HOUR if task == "interpolate" else times[:0]
    steps = set(np.concatenate([valid.ravel(), times, ends]))
    assert len(reads["truth.zarr"]) == len(set(reads["truth.zarr"])) == 2 * len(steps)  # t and sp


def test_the_climatology_reads_only_the_needed_days_and_is_cached(tmp_path, reads):
    years = pd.date_range("2017-01-01", "2018-12-31 12:00", freq="12h")  # two years, not leap years
    seasonal = 10.0 * np.sin(2 * np.pi * years.day_of_year.values / 365) + 0.5 * years.hour.values  # [T]
    offset = np.where(years.year == 2017, 3.0, -3.0)  # cancels in the mean of the two years

    def cycle(field: str, shape: tuple[int, ...]) -> np.ndarray:
        pattern = np.random.default_rng(7).normal(size=shape[1:])
        return (seasonal + offset).reshape(-1, *[1] * len(shape[1:])) + pattern

    training = _dataset(years.values, cycle)
    _store(training, tmp_path / "training.zarr", time_chunk=4)  # two days per chunk
    truth = _dataset(TIMES, seed=8)
    path = _store(truth, tmp_path / "truth.zarr")
    times, leads = TIMES[[0, 10]], [12, 36]  # valid on 03-01, 03-02 at 12 h and 03-04, 03-05 at 0 h
    valid = pd.DatetimeIndex((times[:, None] + np.array(leads) * HOUR).ravel())
    expected = training.assign_coords(year=("time", years.year.values))
    expected = expected.sel(time=expected.time.dt.dayofyear.isin(valid.day_of_year)
                            & expected.time.dt.hour.isin(valid.hour))
    climatology = {f: expected[f].groupby(expected.time.dt.dayofyear * 100 + expected.time.dt.hour).mean()
                   for f in ("t", "sp")}
    keys = valid.day_of_year * 100 + valid.hour
    values = {f: np.repeat(climatology[f].sel(group=xr.DataArray(keys.values.reshape(2, 2), dims=("a", "b")))
                           .values[:, :, None], 2, axis=2) for f in ("t", "sp")}
    prediction = _prediction(values, truth, times, leads, "forecast")
    cache = tmp_path / "output" / "climatology"
    first = score(prediction, path, tmp_path / "training.zarr", climatology_cache=cache)
    chunks = {int(key.split("/")[2]) for key in reads["training.zarr"]}  # time chunk indices read
    needed = {position // 4 for position in np.flatnonzero(years.day_of_year.isin(valid.day_of_year)
                                                             & years.hour.isin(valid.hour))}
    assert chunks == needed and len(needed) == 2 * 3  # 2 years x 3 chunks of two days, of 365
    np.testing.assert_allclose(_rows(first, method="model", metric="rmse")["value"].values,
                               _rows(first, method="climatology", metric="rmse")["value"].values, rtol=1e-5)
    reads.clear()
    second = score(prediction, path, tmp_path / "training.zarr", climatology_cache=cache)
    assert "training.zarr" not in reads and sorted(p.name for p in cache.iterdir()) == ["sp.zarr", "t.zarr"]
    pd.testing.assert_frame_equal(first.table, second.table)


def test_scores_round_trip_through_csv_and_json(truth, tmp_path):
    dataset, path = truth
    times, leads = TIMES[:3], [6, 12]
    values = _members(_cases(dataset, times, leads), 3, offset=0.1)
    values = {f: v + np.random.default_rng(9).normal(size=v.shape) for f, v in values.items()}
    prediction = _prediction(values, dataset, times, leads, "forecast")
    prediction = prediction.reindex(level=[300.0, 500.0, 850.0])  # a union level t lacks: NaN, not scored
    prediction.to_zarr(tmp_path / "prediction.zarr", consolidated=False)  # through the store reader
    scores = score(tmp_path / "prediction.zarr", path)
    assert set(_rows(scores, field="t")["level"]) == {500.0, 850.0}
    paths = write_scores(scores, tmp_path / "scores")
    assert sorted(paths) == ["rank_histogram.csv", "scores.csv", "scores.json", "spectra.csv"]
    again = read_scores(tmp_path / "scores")
    for name in ("table", "rank_histogram", "spectra"):
        pd.testing.assert_frame_equal(getattr(again, name), getattr(scores, name), check_exact=True)
    records = json.loads(paths["scores.json"].read_text())
    assert len(records) == len(scores.table) and set(records[0]) == set(scores.table.columns)
    assert pd.DataFrame(records)["value"].tolist() == scores.table["value"].tolist()
    assert {r["level"] for r in records if r["field"] == "sp"} == {None}


def _broken(dataset: xr.Dataset, case: str) -> xr.Dataset:
    times, leads = TIMES[:2], [6]
    prediction = _prediction(_members(_cases(dataset, times, leads), 1), dataset, times, leads, "forecast")
    changes = {
        "time": lambda p: p.assign_coords(time=TIMES[22:24]),
        "field": lambda p: p.rename(sp="msl"),
        "grid": lambda p: p.assign_coords(latitude=p["latitude"] + 1.0),
        "level": lambda p: p.assign_coords(level=[500.0, 700.0]),
        "task": lambda p: p.assign_attrs(task="nowcast"),
        "attribute": lambda p: p.drop_attrs().assign_attrs(task="interpolate"),
        "mask": lambda p: p.assign_attrs(task="infill"),
    }
    return changes[case](prediction)


@pytest.mark.parametrize(("case", "message"), [
    ("time", "truth.zarr' has no data at valid time 2021-03-07 00:00"),
    ("field", "truth.zarr' has no field 'msl'"),
    ("grid", "truth.zarr' has no latitude"), ("level", "truth.zarr' has no level \\[700.0\\]"),
    ("task", "task attribute 'nowcast'"), ("attribute", "lacks \\['time_step_hours', 'box'\\]"),
    ("mask", "lacks 'target_mask'"),
])
def test_bad_predictions_raise_data_errors_that_name_the_problem(truth, case, message):
    dataset, path = truth
    with pytest.raises(DataError, match=message):
        score(_broken(dataset, case), path)


def test_bad_arguments_raise_data_errors(truth, tmp_path):
    dataset, path = truth
    prediction = _broken(dataset, "task").assign_attrs(task="forecast")
    with pytest.raises(DataError, match="has no field \\['z'\\]"):
        score(prediction, path, fields=["z"])
    with pytest.raises(DataError, match="cannot open truth store"):
        score(prediction, tmp_path / "missing.zarr")
    with pytest.raises(DataError, match="prediction 'forecast.zarr' has no field"):
        score(prediction, path, fields=["z"], name="forecast.zarr")
    with pytest.raises(DataError, match="missing.zarr. is not a readable zarr store"):
        score(tmp_path / "missing.zarr", path)
    with pytest.raises(DataError, match="no scores file"):
        read_scores(tmp_path)
