"""``atmorep hybrid train|evaluate`` end to end on a synthetic run, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

pytest.importorskip("dinosaur_torch")

from atmorep.cli import app  # noqa: E402


def _invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _config(tmp_path: Path, store: Path, mode: str) -> Path:
    path = tmp_path / f"{mode}.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"train": str(store)},
        "core": {"truncation": 21, "time_step_minutes": 60, "interval_hours": 6},
        "correction": {"width": 8, "depth": 1},
        "train": {"mode": mode, "minutes": 5, "max_steps": 3, "batch_size": 2, "rollout": 2},
        "run_dir": str(tmp_path / mode),
    }))
    return path


@pytest.mark.slow
def test_train_offline_and_online_then_evaluate(sigma_store, tmp_path):
    for mode in ("offline", "online"):
        result = _invoke("hybrid", "train", "--config", _config(tmp_path, sigma_store, mode))
        assert result.exit_code == 0, result.output
        assert f"{mode}: 3 steps" in result.output
        meta = json.loads((tmp_path / mode / "hybrid.json").read_text())
        assert meta["training"]["steps"] == 3 and meta["config"]["train"]["mode"] == mode
    output = tmp_path / "scores"
    result = _invoke("hybrid", "evaluate", tmp_path / "offline", tmp_path / "online", "--truth", sigma_store,
                     "--climatology", sigma_store, "-o", output, "--days", "1", "--every-days", "1",
                     "--free-run-days", "2")
    assert result.exit_code == 0, result.output
    scores = pd.read_csv(output / "scores.csv")
    assert set(scores["model"]) == {"core", "offline", "online", "persistence", "climatology"}
    assert sorted(set(scores["lead"])) == [6.0, 12.0, 18.0, 24.0]
    persistence = scores[(scores["model"] == "persistence") & (scores["field"] == "u")]
    assert persistence["rmse"].max() < 1e-5  # a steady jet: persistence is exact for u
    runs = pd.read_csv(output / "free_run.csv")
    assert runs["bounded"].all() and (runs["days"] == 2.0).all()
    assert (runs["small_scale_power"] >= 0).all()  # finite: the runs were scored
    assert (output / "scores.png").stat().st_size > 0 and "## Free runs" in (output / "report.md").read_text()
    for extra, message in ((["--days", "0.1"], "at least one hybrid step (6 h)"),
                           (["--free-run-days", "0.1"], "at least one hybrid step (6 h)")):
        result = _invoke("hybrid", "evaluate", tmp_path / "online", "--truth", sigma_store, "--climatology",
                         sigma_store, "-o", output, *extra)
        assert result.exit_code == 2 and message in result.output
    result = _invoke("hybrid", "evaluate", tmp_path / "online", tmp_path / "online", "--truth", sigma_store,
                     "--climatology", sigma_store, "-o", output)
    assert result.exit_code == 2 and "give them distinct names" in result.output


def test_bad_input_is_one_line(sigma_store, tmp_path):
    config = _config(tmp_path, sigma_store, "online")
    result = _invoke("hybrid", "train", "--config", config, "train.rollout=0")
    assert result.exit_code == 2 and "train.rollout" in result.output and "Traceback" not in result.output
    result = _invoke("hybrid", "train", "--config", config, "train.rollout=40")
    assert result.exit_code == 2
    assert "the training period holds 17 states; a rollout of 40 steps needs 41" in result.output
    result = _invoke("hybrid", "train", "--config", config, "core.time_step_minutes=50")
    assert result.exit_code == 2 and "interval_hours 6 must be a whole number of time steps" in result.output
    result = _invoke("hybrid", "train", "--config", config, "core.interval_hours=5")
    assert result.exit_code == 2
    assert "times are 6 h apart; the hybrid step of 5 h must be a multiple" in result.output
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    result = _invoke("hybrid", "train", "--config", config, f"run_dir={precious}")
    assert result.exit_code == 2 and "exists and is not a hybrid checkpoint" in result.output
    assert (precious / "notes.txt").read_text() == "keep me"
    result = _invoke("hybrid", "evaluate", tmp_path / "nothing", "--truth", sigma_store, "--climatology",
                     sigma_store, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "is not a hybrid checkpoint" in result.output
    result = _invoke("hybrid", "evaluate", tmp_path / "nothing", "--truth", sigma_store, "--climatology",
                     sigma_store, "-o", tmp_path / "out", "--days", "0")
    assert result.exit_code == 2 and "must be positive" in result.output
