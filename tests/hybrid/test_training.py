"""Training settings and what a training run reports: modes, warm start, refusals."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

pytest.importorskip("dinosaur_torch")

from atmorep.errors import DataError  # noqa: E402
from atmorep.hybrid.config import resolve_hybrid_config  # noqa: E402
from atmorep.hybrid.run import build_model  # noqa: E402
from atmorep.hybrid.state import read_truth  # noqa: E402
from atmorep.hybrid.training import TrainSettings, train  # noqa: E402


def test_a_warm_start_belongs_to_an_online_run_within_its_budget():
    assert TrainSettings(mode="online", minutes=10, offline_minutes=3).offline_minutes == 3
    assert TrainSettings(mode="offline", minutes=2, offline_minutes=5).mode == "offline"  # offline throughout
    with pytest.raises(ValidationError, match="offline_minutes 2, the offline warm start of an online run, "
                                              "must be less than its minutes"):
        TrainSettings(mode="online", minutes=2, offline_minutes=2)


def test_steps_are_counted_by_kind_and_the_correction_moves(sigma_store, tmp_path):
    config = resolve_hybrid_config({"data": {"train": str(sigma_store)}, "run_dir": str(tmp_path / "run"),
                                    "correction": {"width": 4, "depth": 1}})
    truth = read_truth(sigma_store, None, None, 21, 6)
    model, cores = build_model(config, truth)
    assert cores.shape == truth.fields.shape
    before = model.correction.out.weight.detach().clone()
    warm = TrainSettings(mode="online", minutes=60, offline_minutes=59, max_steps=4, batch_size=2, rollout=2)
    assert train(model, truth, warm)["offline_steps"] == 4  # all within the warm start
    online = TrainSettings(mode="online", max_steps=2, batch_size=2, rollout=2)
    assert train(model, truth, online)["offline_steps"] == 0
    assert not model.correction.out.weight.detach().equal(before)
    model.correction = None
    with pytest.raises(DataError, match="the model has no correction to train"):
        train(model, truth, online)
