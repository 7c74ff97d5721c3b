"""The README's first command, end to end in a reduced configuration, and the quickstart's pieces."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from atmorep.cli import app
from atmorep.config import load_config
from atmorep.quickstart import CONFIG, Period, QuickstartPlan, horizon_lines, science_checks
from atmorep.tasks import get_task

REDUCED = ["--train-days", "1.5", "--eval-days", "1", "--spinup-days", "0.5", "--spinup-stagger-days", "0.5",
           "--train-minutes", "0.3", "--lead-hours", "6", "--case-every-hours", "6",
           "train.validate_every=20", "train.checkpoint_every=20", "train.validation_batches=1",
           "train.optim.warmup_steps=5"]


@pytest.mark.slow
def test_quickstart_runs_end_to_end_and_reuses_its_steps(tmp_path):
    root = tmp_path / "qs"
    runner = CliRunner()
    first = runner.invoke(app, ["quickstart", "--root", str(root), *REDUCED])
    assert first.exit_code == 0, first.output
    for task in ("forecast", "interpolate", "infill", "downscale"):
        assert (root / "predictions" / f"{task}.zarr" / "zarr.json").is_file()
        assert (root / "evaluation" / task / "scores.csv").is_file()
    report = (root / "evaluation" / "report.md").read_text()
    assert all(f"## {task}" in report for task in ("forecast", "interpolate", "infill", "downscale"))
    summary = pd.read_csv(root / "evaluation" / "summary.csv")
    assert set(summary["field"]) == {"t", "u", "v"}
    forecast = summary[summary["task"] == "forecast"]
    assert (forecast["lead"] == "3 h").all()  # the one-shot lead of the tiny box
    assert np.isfinite(forecast[["rmse_model", "rmse_persistence", "spread_skill"]].to_numpy()).all()
    printed = " ".join(first.output.split())  # the terminal wraps long lines
    assert "x persistence (bar 0.5x)" in printed and "x cubic (bar 1x)" in printed
    assert all(f"forecast {name}: beats persistence" in printed for name in ("t", "u", "v"))
    assert "of 6 h scored" in printed or "at every lead to 6 h" in printed

    again = runner.invoke(app, ["quickstart", "--root", str(root), *REDUCED])
    assert again.exit_code == 0, again.output
    assert "training finished before" in again.output
    tasks = ("forecast", "interpolate", "infill", "downscale")
    assert all(f"{task}: reusing" in again.output for task in tasks)


def test_case_times_keep_every_window_and_its_truth_inside_the_test_period(tmp_path, monkeypatch):
    config = load_config(CONFIG)
    axis = np.arange(np.datetime64("2002-01-01T00"), np.datetime64("2002-01-03T00"), np.timedelta64(1, "h"))

    class FakeStore:
        def __init__(self, path):
            self.time = axis.astype("datetime64[s]")

    monkeypatch.setattr("atmorep.infer.request.Store", FakeStore)
    from atmorep.quickstart import case_times

    plan = QuickstartPlan(root=tmp_path, periods=(Period("test", "2002-01-01", 2, 3),), forecast_lead_hours=6,
                          case_every_hours=12, forecast_every_hours=18)
    forecast = case_times(plan, "forecast", config)
    layout = get_task("forecast").layout(config)
    assert forecast[0] == axis[layout.reference]  # the first window starts with the period
    assert all(t + np.timedelta64(6, "h") <= axis[-1] for t in forecast)
    assert np.all(np.diff(forecast) == np.timedelta64(18, "h"))  # forecasts have their own spacing
    interpolate = case_times(plan, "interpolate", config)
    assert np.all(np.diff(interpolate) == np.timedelta64(12, "h"))
    gap = get_task("interpolate").layout(config)
    assert interpolate[0] == axis[gap.reference]
    assert all(t + np.timedelta64(gap.window - 1 - gap.reference, "h") <= axis[-1] for t in interpolate)


def test_science_checks_say_whether_the_model_meets_each_bar():
    frame = pd.DataFrame({"task": ["forecast", "forecast", "interpolate", "infill"],
                          "lead": ["3 h", "3 h", "all", "all"], "field": ["t", "u", "t", "t"],
                          "rmse_model": [0.4, 2.0, 0.1, 1.0],
                          "rmse_persistence": [1.0, 1.0, np.nan, np.nan],
                          "rmse_trend": [0.5, 1.5, np.nan, np.nan],
                          "rmse_linear": [np.nan, np.nan, 0.3, np.nan],
                          "rmse_cubic": [np.nan, np.nan, 0.09, np.nan],
                          "rmse_spatial": [np.nan, np.nan, np.nan, 2.0],
                          "best_baseline": ["trend", "persistence", "cubic", "spatial"],
                          "spread_skill": [0.9, 3.0, 1.1, 1.0], "blockiness": [1.0, 1.5, np.nan, 1.05]})
    lines = science_checks(frame)
    assert len(lines) == 4
    assert lines[0].startswith("forecast t (lead 3 h)")
    assert "0.4x persistence (bar 0.5x) ok" in lines[0] and "0.8x trend (bar 1x) ok" in lines[0]
    assert "spread/skill 0.9 in [0.8, 1.2] ok" in lines[0] and "blockiness 1 (bar 1.1) ok" in lines[0]
    assert "2x persistence (bar 0.5x) MISSED" in lines[1] and "1.33x trend (bar 1x) MISSED" in lines[1]
    assert "OUT" not in lines[1] and "spread/skill 3 in [0.8, 1.2] MISSED" in lines[1]
    assert "blockiness 1.5 (bar 1.1) MISSED" in lines[1]
    assert "0.333x linear (bar 0.5x) ok" in lines[2] and "1.11x cubic (bar 1x) MISSED" in lines[2]
    assert "blockiness" not in lines[2]
    assert "0.5x spatial (bar 1x) ok" in lines[3]


def test_the_horizon_is_the_first_lead_where_the_model_is_not_ahead_of_persistence():
    rows = []
    for lead, model, persistence in [(1, 0.1, 0.5), (2, 0.4, 0.6), (3, 0.8, 0.7), (4, 0.6, 0.9)]:
        for level, shift in ((0.5, 0.0), (0.8, 0.02)):  # the level mean decides
            rows += [{"field": "t", "method": "model", "metric": "rmse", "level": level, "lead": lead,
                      "value": model + shift},
                     {"field": "t", "method": "persistence", "metric": "rmse", "level": level, "lead": lead,
                      "value": persistence + shift},
                     {"field": "u", "method": "model", "metric": "rmse", "level": level, "lead": lead,
                      "value": 0.5 * persistence},
                     {"field": "u", "method": "persistence", "metric": "rmse", "level": level, "lead": lead,
                      "value": persistence},
                     {"field": "t", "method": "model", "metric": "acc", "level": level, "lead": lead,
                      "value": 9.0}]
    lines = horizon_lines(pd.DataFrame(rows))
    assert lines[0].startswith("forecast t: beats persistence up to 2 h, not at 3 h (of 4 h scored; worst")
    assert lines[1] == "forecast u: beats persistence at every lead to 4 h (worst 0.5x)"
