"""Training: the run directory, determinism, the learning-rate schedule and the command line."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from atmorep.cli import app
from atmorep.distance import load_distance
from atmorep.distance.train import learning_rate_factor, train_distance
from tests.distance.conftest import config_dict, make_config


def test_a_run_writes_metrics_the_resolved_config_and_the_model(trained):
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records if "val_accuracy" in r] == [3, 6]
    assert all(0 <= r["val_accuracy"] <= 1 for r in records if "val_accuracy" in r)
    config = yaml.safe_load((trained / "distance.yaml").read_text())
    assert config["pairs"]["lags"] == 4 and config["train"]["max_steps"] == 6
    model = load_distance(trained)
    assert model.meta["step"] == 6 and model.meta["channels"] == ["t@850", "u@500"]
    assert model.meta["lag1_distance"] > 0 and model.calibration[0].shape == (16, 2, 4, 8)
    assert model.meta["validation"]["accuracy"] == records[-1]["val_accuracy"]


def test_training_is_deterministic_given_the_seed(stores, tmp_path):
    first = train_distance(make_config(stores, tmp_path / "a", max_steps=3))
    second = train_distance(make_config(stores, tmp_path / "b", max_steps=3))
    assert first.validation == second.validation
    a, b = (load_file(str(run.model / "model.safetensors")) for run in (first, second))
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_the_learning_rate_warms_up_then_decays_to_its_floor():
    assert learning_rate_factor(0, 0.0, warmup=4, floor=0.1) == 0.25
    assert learning_rate_factor(4, 0.0, warmup=4, floor=0.1) == 1.0
    assert learning_rate_factor(10, 0.5, warmup=4, floor=0.1) == pytest.approx(0.55)
    assert learning_rate_factor(10, 1.5, warmup=4, floor=0.1) == pytest.approx(0.1)


def test_the_command_line_trains_with_overrides_and_names_a_bad_key(stores, tmp_path):
    path = tmp_path / "distance.yaml"
    path.write_text(yaml.safe_dump(config_dict(stores, tmp_path / "run")))
    runner = CliRunner()
    done = runner.invoke(app, ["distance", "train", "--config", str(path), "train.max_steps=2"])
    assert done.exit_code == 0, done.output
    assert load_distance(tmp_path / "run").meta["step"] == 2
    bad = runner.invoke(app, ["distance", "train", "--config", str(path), "train.stepz=2"])
    assert bad.exit_code == 2
    assert "unknown key 'train.stepz'" in bad.output and len(bad.output.strip().splitlines()) == 1


def test_the_command_line_scores_and_refuses_a_missing_store(trained, stores, tmp_path):
    runner = CliRunner()
    scored = runner.invoke(app, ["distance", "score", "--checkpoint", str(trained), "--data",
                                 stores["validation"], "--control", stores["control"], "-o", str(tmp_path)])
    assert scored.exit_code == 0, scored.output
    assert "diurnal oracle" in scored.output and (tmp_path / "summary.md").is_file()
    missing = runner.invoke(app, ["distance", "score", "--checkpoint", str(trained), "--data",
                                  str(tmp_path / "none.zarr"), "-o", str(tmp_path)])
    assert missing.exit_code == 2 and "none.zarr" in missing.output
