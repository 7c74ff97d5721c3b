"""A training process killed with SIGKILL resumes from its last checkpoint as if never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.train.conftest import write_config

# a data-loader worker process, as in configs/tiny.yaml: the resumed stream starts in a fresh one
OPTIONS = {"max_steps": 40, "checkpoint_every": 5}
WORKERS = "data.num_workers=1"


def _losses(run_dir) -> list[float]:
    records = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [r["loss"] for r in records if r["kind"] == "train"]


def _checkpoint_step(run_dir) -> int:
    meta = run_dir / "checkpoint" / "meta.json"
    return json.loads(meta.read_text())["step"] if meta.is_file() else 0


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_losses_of_an_uninterrupted_run(stores, tmp_path):
    run_dir = tmp_path / "run"
    path = write_config(tmp_path / "run.yaml", stores, run_dir, **OPTIONS)
    command = [sys.executable, "-m", "atmorep.cli", "train", "--config", str(path), WORKERS]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _checkpoint_step(run_dir) < 5 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = _checkpoint_step(run_dir)
    assert 5 <= killed_at < OPTIONS["max_steps"]

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    # the reference runs as a process too: same thread count, so the same reduction order
    reference = subprocess.run([*command, f"train.run_dir={tmp_path / 'reference'}"], capture_output=True,
                               text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr
    assert _losses(run_dir) == _losses(tmp_path / "reference")
