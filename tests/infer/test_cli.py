"""``atmorep infer`` and ``atmorep evaluate`` on the command line: results, and one-line errors."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from atmorep.cli import app
from atmorep.prediction_store import open_prediction


def _invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert text.startswith("error:") and "Traceback" not in text, text
    assert len(text.splitlines()) == 1 or "\n" not in text.replace("\n ", " "), text
    for word in words:
        assert word in text, text


@pytest.fixture(scope="module")
def predictions(checkpoint, truth_store, tmp_path_factory):
    """A forecast and an interpolation written by the command line."""
    root = tmp_path_factory.mktemp("cli")
    forecast, interpolate = root / "forecast.zarr", root / "interpolate.zarr"
    first = _invoke("infer", "--checkpoint", checkpoint.parent, "--data", truth_store, "-o", forecast,
                    "--start", "2001-03-01T04", "--end", "2001-03-01T16", "--every", "6h",
                    "--lead-hours", "3", "--batch-size", "5")
    assert first.exit_code == 0, first.output
    second = _invoke("infer", "--checkpoint", checkpoint, "--data", truth_store, "-o", interpolate,
                     "--task", "interpolate", "--time", "2001-03-01T05", "--time", "2001-03-01T09")
    assert second.exit_code == 0, second.output
    return {"forecast": forecast, "interpolate": interpolate, "root": root}


def test_infer_writes_the_cases_asked_for(predictions):
    forecast = open_prediction(predictions["forecast"])
    assert forecast.attrs["task"] == "forecast" and forecast.sizes["time"] == 3
    assert [int(h) for h in forecast["prediction_timedelta"].values / 3_600_000_000_000] == [1, 2, 3]
    interpolate = open_prediction(predictions["interpolate"])
    assert interpolate.attrs["task"] == "interpolate" and interpolate.sizes["time"] == 2


def test_evaluate_writes_tables_summary_and_report(predictions, truth_store):
    out = predictions["root"] / "evaluation"
    result = _invoke("evaluate", predictions["forecast"], predictions["interpolate"], "--truth", truth_store,
                     "--climatology", truth_store, "-o", out, "--no-maps")
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["task"].unique()) == ["forecast", "interpolate"]
    assert set(summary["field"]) == {"t", "u"}
    assert (out / "forecast" / "scores.csv").is_file() and (out / "report.md").is_file()
    assert {"rmse_persistence", "rmse_trend", "rmse_linear", "rmse_cubic"} <= set(summary.columns)
    assert "RMSE of the model and the baselines" in " ".join(result.output.split())


@pytest.mark.parametrize("args, words", [
    (("--time", "2009-01-01T00"), ("2009-01-01", "is not a time step")),
    (("--time", "2001-03-01T04", "--lead-hours", "1.5"), ("lead time 1.5 h",)),
    (("--time", "2001-03-01T04", "--region", "0", "10", "0", "20"), ("smaller than the model's box",)),
    (("--time", "2001-03-01T04", "--task", "dream"), ("unknown inference task 'dream'",)),
    (("--time", "2001-03-01T04", "--rollout", "median"), ("--rollout",)),
    (("--start", "2001-03-01T04"), ("--start and --end",)),
])
def test_infer_bad_input_is_one_line_with_exit_2_and_writes_nothing(checkpoint, truth_store, tmp_path, args,
                                                                     words):
    out = tmp_path / "out.zarr"
    result = _invoke("infer", "--checkpoint", checkpoint, "--data", truth_store, "-o", out, *args)
    _one_line_error(result, *words)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_infer_names_a_missing_checkpoint(truth_store, tmp_path):
    result = _invoke("infer", "--checkpoint", tmp_path / "nothing", "--data", truth_store, "-o",
                     tmp_path / "o.zarr", "--time", "2001-03-01T04")
    _one_line_error(result, "nothing", "checkpoint")


def test_evaluate_names_a_missing_prediction(truth_store, tmp_path):
    result = _invoke("evaluate", tmp_path / "missing.zarr", "--truth", truth_store, "-o", tmp_path / "e")
    _one_line_error(result, "missing.zarr")


def test_attention_writes_maps_and_prints_the_coupling(checkpoint, truth_store, tmp_path):
    result = _invoke("attention", "--checkpoint", checkpoint.parent, "--data", truth_store, "--time",
                     "2001-03-01T10", "--region", -20, 20, 350, 40, "-o", tmp_path / "maps")
    assert result.exit_code == 0, result.output
    assert "encoder layer 0: t: t " in " ".join(result.output.split())
    assert (tmp_path / "maps" / "figures" / "coupling.png").is_file()
    again = _invoke("attention", "--checkpoint", checkpoint, "--data", truth_store, "--time", "2001-03-01T10",
                    "--field", "q", "-o", tmp_path / "other")
    _one_line_error(again, "--field q")
    assert not (tmp_path / "other").exists()
