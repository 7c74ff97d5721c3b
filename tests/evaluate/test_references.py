"""Reference prediction stores scored beside the model: the same scores as scored directly, errors that
name what a reference lacks, the reference alone, and the command line."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from atmorep.data.prepare import prepare_dataset
from atmorep.errors import DataError
from atmorep.evaluate.run import evaluate
from atmorep.evaluate.scoring import score
from atmorep.prediction_store import PredictionLayout, PredictionWriter

LEVELS = np.array([0.2, 0.51])
LATITUDES = np.linspace(-80.0, 80.0, 9)
LONGITUDES = np.arange(0.0, 360.0, 30.0)  # [12]
HOUR = np.timedelta64(1, "h")
TIMES = pd.date_range("2021-03-01", periods=144, freq="1h").values  # 6 days, hourly
CASES = TIMES[[24, 36, 48, 60]]  # a day of steps before them (trend baselines), more than 30 h after
LEADS = np.array([6, 12, 18, 24]) * HOUR


def _dataset(times, seed: int) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    grid = (len(LATITUDES), len(LONGITUDES))
    return xr.Dataset(
        {"t": (("time", "level", "latitude", "longitude"),
               (250.0 + 10.0 * rng.normal(size=(len(times), 2, *grid))).astype(np.float32)),
         "sp": (("time", "latitude", "longitude"),
                (1e3 + 10.0 * rng.normal(size=(len(times), *grid))).astype(np.float32))},
        coords={"time": times, "level": LEVELS, "latitude": LATITUDES, "longitude": LONGITUDES})


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """The truth (prepared), a training store, a model's and a jcm-like reference's predictions."""
    folder = tmp_path_factory.mktemp("references")
    truth = _dataset(TIMES, 0)
    prepare_dataset(truth, folder / "truth.zarr", box=(1, 9, 12))
    training = pd.date_range("2020-02-25", "2020-03-10", freq="1h").values
    _dataset(training, 1).to_zarr(folder / "training.zarr", consolidated=False)
    model = _write(folder / "model.zarr", truth, CASES, LEADS, members=3, noise=2.0, seed=2)
    reference = _write(folder / "jcm.zarr", truth, CASES, np.arange(1, 31) * HOUR, members=1, noise=1.0,
                       seed=3, step=1)
    return {"truth": truth, "truth_path": folder / "truth.zarr", "training": folder / "training.zarr",
            "model": model, "jcm": reference, "folder": folder}


def _write(path, truth: xr.Dataset, times, leads, members: int, noise: float, seed: int,
           step: float = 6.0, fields=("t", "sp")):
    """A prediction store: the truth at the valid times plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    layout = PredictionLayout(fields={"t": tuple(LEVELS), "sp": None, "z": tuple(LEVELS)},
                              level_kind="sigma", prediction_timedelta=leads, members=members,
                              latitude=LATITUDES, longitude=LONGITUDES,
                              attrs={"task": "forecast", "time_step_hours": step})
    layout = PredictionLayout(**{**layout.__dict__, "fields": {f: layout.fields[f] for f in fields}})
    with PredictionWriter(path, layout) as writer:
        for time in times:
            known = truth.sel(time=time + leads)
            values = {f: known[f].values[:, None] + noise * rng.normal(size=layout.case_shape(f))
                      for f in fields}
            writer.write(time, values)
    return path


def _rows(table: pd.DataFrame, **where) -> pd.DataFrame:
    for column, value in where.items():
        table = table[table[column] == value]
    return table.sort_values(["field", "metric", "level", "lead"]).reset_index(drop=True)


def test_a_reference_scores_as_the_same_store_scored_directly(stores, caplog):
    with caplog.at_level(logging.WARNING):
        both = score(stores["model"], stores["truth_path"], stores["training"],
                     references={"jcm": stores["jcm"]}).table
    alone = score(stores["jcm"], stores["truth_path"], stores["training"], method="jcm").table
    jcm = _rows(both, method="jcm")
    assert sorted(jcm["lead"].unique()) == [6.0, 12.0, 18.0, 24.0]  # the leads both hold
    assert set(jcm["metric"]) == {"rmse", "mae", "bias", "acc", "crps"}  # one member: no spread
    direct = _rows(alone[alone["lead"].isin([6.0, 12.0, 18.0, 24.0])], method="jcm")
    pd.testing.assert_frame_equal(jcm, direct, check_exact=True)
    np.testing.assert_allclose(_rows(jcm, metric="crps")["value"], _rows(jcm, metric="mae")["value"],
                               rtol=1e-12)  # the CRPS of one member is its absolute error
    assert set(both["method"]) == {"model", "jcm", "persistence", "trend", "first_guess", "climatology"}
    assert "scored at the other 4" not in caplog.text  # the reference holds every lead of the model


def test_a_reference_rmse_is_the_rmse_of_its_array(stores):
    table = score(stores["model"], stores["truth_path"], references={"jcm": stores["jcm"]},
                  fields=["t"], baselines=False).table
    reference = xr.open_zarr(stores["jcm"])["t"].sel(prediction_timedelta=LEADS).isel(member=0).values
    valid = CASES[:, None] + LEADS[None, :]  # [I, P]
    truth = stores["truth"]["t"].sel(time=valid.ravel()).values.reshape(reference.shape)
    weights = np.cos(np.deg2rad(LATITUDES))[:, None] / np.cos(np.deg2rad(LATITUDES)).mean()  # [H, 1]
    squared = ((reference.astype(np.float64) - truth) ** 2 * weights).mean(axis=(0, 3, 4))  # [P, L]
    got = _rows(table, method="jcm", metric="rmse").sort_values(["lead", "level"])["value"].to_numpy()
    np.testing.assert_allclose(got, np.sqrt(squared).ravel(), rtol=1e-5)


def test_leads_the_reference_lacks_are_left_out_for_it(stores, tmp_path, caplog):
    few = _write(tmp_path / "few.zarr", stores["truth"], CASES, np.array([12, 24, 36]) * HOUR, members=2,
                 noise=1.0, seed=4)
    with caplog.at_level(logging.WARNING):
        table = score(stores["model"], stores["truth_path"], references={"few": few}, baselines=False).table
    assert sorted(_rows(table, method="few")["lead"].unique()) == [12.0, 24.0]
    assert {"spread", "spread_skill"} <= set(_rows(table, method="few")["metric"])  # two members
    assert "lacks the leads 6, 18 h of the prediction: scored at the other 2" in caplog.text


@pytest.mark.parametrize(("case", "message"), [
    ("time", "reference 'bad' \\('.*bad.zarr'\\) has no case time 2021-03-03 12:00:00 \\(1 of 4"),
    ("field", "reference 'bad' \\('.*bad.zarr'\\) has no field 'sp' \\(available: \\['t'\\]\\)"),
    ("lead", "has no lead of the prediction's \\(6, 12, 18, 24 h\\); it has 3, 9 h"),
    ("level", "field 't' has no level \\[0.51\\] of the prediction"),
])
def test_a_reference_that_lacks_a_case_a_field_a_lead_or_a_level_is_named(stores, tmp_path, case, message):
    truth, options = stores["truth"], {"members": 1, "noise": 1.0, "seed": 5}
    if case == "time":
        bad = _write(tmp_path / "bad.zarr", truth, CASES[:3], LEADS, **options)
    elif case == "field":
        bad = _write(tmp_path / "bad.zarr", truth, CASES, LEADS, fields=("t",), **options)
    elif case == "lead":
        bad = _write(tmp_path / "bad.zarr", truth, CASES, np.array([3, 9]) * HOUR, **options)
    else:
        bad = xr.open_zarr(stores["jcm"]).isel(level=[0]).drop_encoding()
        bad.to_zarr(tmp_path / "bad.zarr", consolidated=False)
        bad = tmp_path / "bad.zarr"
    with pytest.raises(DataError, match=message) as error:
        score(stores["model"], stores["truth_path"], references={"bad": bad}, baselines=False)
    assert "\n" not in str(error.value)


def test_reference_names_may_not_be_those_of_built_in_methods(stores):
    for name in ("model", "persistence", "climatology", "9x", ""):
        with pytest.raises(DataError, match=f"reference name '{name}': expected a name that starts"):
            score(stores["model"], stores["truth_path"], references={name: stores["jcm"]})


def test_evaluate_scores_a_reference_alone_and_beside_the_model(stores, tmp_path):
    alone = evaluate([], stores["truth_path"], stores["training"], tmp_path / "alone", maps=False,
                     references={"jcm": stores["jcm"]})
    table = pd.read_csv(tmp_path / "alone" / "forecast" / "scores.csv")
    assert set(table["method"]) == {"jcm", "persistence", "trend", "first_guess", "climatology"}
    assert sorted(table["lead"].unique()) == list(np.arange(1.0, 31.0))
    assert "rmse_jcm" in alone.summary and alone.summary["rmse_jcm"].notna().all()
    report = alone.report.read_text()
    assert "### Scores against lead" in report and "forecast_scores_by_lead.png" in report
    assert (tmp_path / "alone" / "figures" / "forecast_scores_by_lead.png").stat().st_size > 0
    beside = evaluate([stores["model"]], stores["truth_path"], stores["training"], tmp_path / "beside",
                      maps=False, references={"jcm": stores["jcm"]})
    assert "rmse_jcm" in beside.summary and beside.summary["rmse_model"].notna().all()
    lines = beside.report.read_text().splitlines()
    header = next(line for line in lines if line.startswith("| lead (h) | RMSE"))
    assert header.startswith("| lead (h) | RMSE model | RMSE jcm | RMSE persistence | RMSE climatology |")
    with pytest.raises(DataError, match="no prediction store given to evaluate"):
        evaluate([], stores["truth_path"], None, tmp_path / "none")


def test_the_command_line_takes_references_by_name(stores, tmp_path):
    from typer.testing import CliRunner

    from atmorep.cli import app

    runner = CliRunner()
    base = ["evaluate", "--truth", str(stores["truth_path"]), "-o", str(tmp_path / "out"), "--no-maps"]
    result = runner.invoke(app, [*base, "--reference", str(stores["jcm"])])
    assert result.exit_code == 2 and "--reference must be KEY=VALUE" in result.output
    twice = ["--reference", f"a={stores['jcm']}"] * 2
    result = runner.invoke(app, [*base, *twice])
    assert result.exit_code == 2 and "--reference a: the name is given twice" in result.output
    result = runner.invoke(app, ["evaluate", "-o", str(tmp_path / "out"), *twice[:2]])
    assert result.exit_code == 2 and "--reference is scored with --truth" in result.output
    result = runner.invoke(app, [*base, str(stores["model"]), "--reference", f"jcm={stores['jcm']}"])
    assert result.exit_code == 0, result.output
    scores = pd.read_csv(tmp_path / "out" / "forecast" / "scores.csv")
    assert {"model", "jcm"} <= set(scores["method"])
