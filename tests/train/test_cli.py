"""``atmorep train`` through the command line: a short run, and a bad key reported on one line."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from atmorep.cli import app
from tests.train.conftest import write_config


def test_train_command_runs_and_summarises(stores, tmp_path):
    path = write_config(tmp_path / "run.yaml", stores, tmp_path / "run")
    result = CliRunner().invoke(app, ["train", "--config", str(path), "train.max_steps=3"])
    assert result.exit_code == 0, result.output
    assert "trained to step 3 (max_steps)" in result.output
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    assert steps[:3] == [1, 2, 3]
    resumed = CliRunner().invoke(app, ["train", "--config", str(path), "train.max_steps=4", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "trained to step 4" in resumed.output


def test_a_bad_key_exits_2_with_one_line_and_no_traceback(stores, tmp_path):
    path = write_config(tmp_path / "run.yaml", stores, tmp_path / "run")
    process = subprocess.run([sys.executable, "-m", "atmorep.cli", "train", "--config", str(path),
                              "train.bogus=1"], capture_output=True, text=True, timeout=120)
    assert process.returncode == 2
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown key 'train.bogus'" in lines[0]
    assert "Traceback" not in process.stderr + process.stdout
    assert not (tmp_path / "run").exists()
