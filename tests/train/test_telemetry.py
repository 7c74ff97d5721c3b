"""Metrics records, throughput and the FLOP estimate."""

from __future__ import annotations

import json

import pytest
import torch

from atmorep.model.multiformer import build_model
from atmorep.train import telemetry
from atmorep.train.telemetry import MetricsLogger, flops_per_sample, peak_flops
from tests.model.conftest import LEVELS, make_config


def test_metrics_file_restarts_from_the_given_history(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 9, "loss": 5.0}\n')  # an orphan
    history = [{"kind": "train", "step": 1, "loss": 2.0}]
    logger = MetricsLogger(tmp_path, enabled=True, history=history, start_step=1)
    logger.log({"kind": "validation", "step": 2, "loss": 1.5, "note": "text is kept, not plotted"})
    logger.close()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2] and lines[1]["note"] == "text is kept, not plotted"
    assert logger.history == lines


def test_other_ranks_write_nothing(tmp_path):
    logger = MetricsLogger(tmp_path, enabled=False)
    logger.log({"kind": "train", "step": 1, "loss": 1.0})
    logger.close()
    assert list(tmp_path.iterdir()) == [] and len(logger.history) == 1


def test_peak_flops_by_gpu_name(monkeypatch):
    assert peak_flops(torch.device("cpu")) is None
    for name, peak in [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
                       ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12), ("Tesla V100", None)]:
        monkeypatch.setattr(telemetry.torch.cuda, "get_device_name", lambda device, name=name: name)
        assert peak_flops(torch.device("cuda", 0)) == peak


def test_flops_per_sample_counts_each_field_with_its_own_tokens():
    config = make_config()  # t: 2 levels x (2, 4, 4) tokens of (2, 2, 2); u: 1 level x (2, 2, 2)
    model = build_model(config)
    tokens = {"t": 2 * 2 * 4 * 4, "u": 1 * 2 * 2 * 2}
    own = {name: sum(p.numel() for p in model.fields[name].parameters()) for name in tokens}
    shared = sum(p.numel() for p in model.parameters()) - sum(own.values())
    expected = 6 * (own["t"] * tokens["t"] + own["u"] * tokens["u"] + shared * sum(tokens.values()))
    assert flops_per_sample(model, config, LEVELS) == pytest.approx(expected)
    assert flops_per_sample(model, config, LEVELS) < 6 * sum(p.numel() for p in model.parameters()) * 40
