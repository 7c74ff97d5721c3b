"""The summary of an evaluation: its Markdown table and the forecast's one-shot lead."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import xarray as xr

from atmorep.evaluate.run import one_shot_lead, summary_markdown


def test_summary_markdown_rounds_numbers_and_leaves_unscored_cells_empty():
    summary = pd.DataFrame({"task": ["forecast", "interpolate"], "lead": ["36 h", "all"], "field": ["t", "t"],
                            "rmse_model": [1.23456, 0.5], "rmse_persistence": [2.0, np.nan],
                            "best_baseline": ["persistence", "linear"], "ratio": [0.617284, np.nan]})
    assert summary_markdown(summary).splitlines() == [
        "| task | lead | field | rmse_model | rmse_persistence | best_baseline | ratio |",
        "| --- | --- | --- | ---: | ---: | --- | ---: |",
        "| forecast | 36 h | t | 1.235 | 2 | persistence | 0.6173 |",
        "| interpolate | all | t | 0.5 |  | linear |  |",
    ]


def test_the_one_shot_lead_is_the_forecast_block_in_hours():
    config = {"train": {"forecast_tokens": 2}, "fields": [{"token_size": [3, 9, 9]}]}
    attrs = {"task": "forecast", "time_step_hours": 6.0, "config": json.dumps(config)}
    assert one_shot_lead(xr.Dataset(attrs=attrs)) == 2 * 3 * 6.0
    assert one_shot_lead(xr.Dataset(attrs=attrs | {"task": "interpolate"})) is None
    assert one_shot_lead(xr.Dataset(attrs={"task": "forecast", "time_step_hours": 6.0})) is None


def test_the_one_shot_lead_attribute_comes_before_the_config():
    config = {"train": {"forecast_tokens": 2}, "fields": [{"token_size": [3, 9, 9]}]}
    attrs = {"task": "forecast", "time_step_hours": 6.0, "config": json.dumps(config),
             "one_shot_lead_hours": 24}
    assert one_shot_lead(xr.Dataset(attrs=attrs)) == 24.0
    assert one_shot_lead(xr.Dataset(attrs=attrs | {"task": "infill"})) is None
