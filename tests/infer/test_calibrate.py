"""Spread calibration on tiled predictions: after it, each task's spread/skill on its store is one."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from atmorep.calibrate import CalibrationRequest, _spread_skill, calibrate, is_calibrated
from atmorep.checkpoint import read_checkpoint, read_meta
from atmorep.errors import DataError
from atmorep.infer.engine import infer
from atmorep.infer.predictor import BoxPredictor
from atmorep.infer.request import InferenceRequest, case_times
from atmorep.train.calibration import FACTOR_RANGE, task_kinds

TASKS = ("forecast", "interpolate", "infill", "downscale")
REGION = (-30.0, 30.0, 0.0, 90.0)


def _request(checkpoint: Path, store: Path) -> CalibrationRequest:
    return CalibrationRequest(checkpoint, store, TASKS, every_hours=12.0, infill_region=REGION, device="cpu",
                              precision="float32")


def test_calibration_makes_every_tasks_spread_skill_one_on_its_store(checkpoint, truth_store, tmp_path):
    copy = shutil.copytree(checkpoint, tmp_path / "checkpoint")
    before = read_checkpoint(copy).weights
    request = _request(copy, truth_store)
    assert not is_calibrated(request)
    result = calibrate(request)
    after = read_checkpoint(copy).weights
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.endswith(".spread") for name in changed)
    assert is_calibrated(request) and not is_calibrated(replace(request, tasks=TASKS[:2]))
    assert not is_calibrated(replace(request, infill_region=(0.0, 30.0, 0.0, 90.0)))
    assert read_meta(copy)["spread_calibration"]["spread_skill_before"] == result.before

    predictor, checked = BoxPredictor.from_checkpoint(copy, "cpu", "float32"), 0
    for task in TASKS:
        output = tmp_path / f"{task}.zarr"
        infer(InferenceRequest(copy, truth_store, output, task=task,
                               times=case_times(truth_store, task, predictor.config, 12.0),
                               infill_region=REGION if task == "infill" else None, batch_size=16,
                               device="cpu", precision="float32"), predictor=predictor)
        for name, ratio in _spread_skill(output, truth_store).items():
            factor = after[f"fields.{name}.tail.spread"][:, task_kinds()[task]]
            assert result.before[task][name] != pytest.approx(1.0, abs=0.05)  # there was something to fix
            if ((factor > FACTOR_RANGE[0]) & (factor < FACTOR_RANGE[1])).all():
                assert ratio == pytest.approx(1.0, abs=1e-3), (task, name)
                checked += 1
    assert checked >= 6  # of the 8 task and field pairs


def test_calibration_refuses_unknown_tasks(checkpoint, truth_store, tmp_path):
    copy = shutil.copytree(checkpoint, tmp_path / "checkpoint")
    with pytest.raises(DataError, match="tasks must be among"):
        calibrate(CalibrationRequest(copy, truth_store, ("reconstruct",)))


def test_the_command_calibrates_and_bad_input_is_one_line_leaving_the_checkpoint(checkpoint, truth_store,
                                                                                 store_without_u, tmp_path):
    from tests.infer.test_cli import _invoke, _one_line_error

    copy = shutil.copytree(checkpoint, tmp_path / "run" / "checkpoint")
    original = read_checkpoint(copy).weights
    for args, words in [(("--task", "reconstruct"), ("tasks must be among",)),
                        (("--every-hours", "0"), ("must be positive",)),
                        (("--data", store_without_u), ("'u'",))]:
        options = {"--data": truth_store, **dict(zip(args[::2], args[1::2]))}
        flat = [value for item in options.items() for value in item]
        result = _invoke("calibrate", "--checkpoint", copy.parent, *flat)
        _one_line_error(result, *words)
        kept = read_checkpoint(copy).weights
        assert all(torch.equal(value, kept[name]) for name, value in original.items())
    result = _invoke("calibrate", "--checkpoint", copy.parent, "--data", truth_store, "--task", "downscale",
                     "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "downscale: spread/skill before calibration" in result.output
    assert is_calibrated(CalibrationRequest(copy.parent, truth_store, ("downscale",), device="cpu"))


def test_a_recalibrated_checkpoint_is_not_the_one_a_prediction_was_made_with(checkpoint, truth_store,
                                                                             tmp_path):
    from atmorep.prediction_store import open_prediction
    from atmorep.quickstart import _same_checkpoint

    copy = shutil.copytree(checkpoint, tmp_path / "checkpoint")
    output = tmp_path / "downscale.zarr"
    predictor = BoxPredictor.from_checkpoint(copy, "cpu", "float32")
    times = case_times(truth_store, "downscale", predictor.config, 24.0)
    infer(InferenceRequest(copy, truth_store, output, task="downscale", times=times, device="cpu",
                           precision="float32"), predictor=predictor)
    assert _same_checkpoint(open_prediction(output).attrs, copy)
    calibrate(CalibrationRequest(copy, truth_store, ("downscale",), device="cpu", precision="float32"))
    assert not _same_checkpoint(open_prediction(output).attrs, copy)  # same step, other spread factors


def test_a_forecast_calibrated_to_a_lead_gets_factors_per_lead_that_scale_only_its_spread(
        checkpoint, truth_store, tmp_path):
    import numpy as np

    from atmorep.calibrate import _by_level
    from atmorep.checkpoint import write_checkpoint
    from atmorep.evaluate.scoring import score
    from atmorep.infer.lead_spread import LEAD_SPREAD, LeadSpread

    copy = shutil.copytree(checkpoint, tmp_path / "checkpoint")
    result = calibrate(replace(_request(copy, truth_store), tasks=("forecast",), lead_hours=6.0))
    fitted = LeadSpread.from_meta(read_meta(copy))
    assert fitted is not None and fitted.lead_hours == tuple(float(h) for h in range(1, 7))
    assert result.lead_spread.lead_hours == fitted.lead_hours
    raw = shutil.copytree(copy, tmp_path / "raw")  # the same checkpoint without the factors per lead
    contents = read_checkpoint(raw)
    kept = {key: value for key, value in contents.meta.items() if key != LEAD_SPREAD}
    write_checkpoint(raw, replace(contents, meta=kept))

    def ratios(path: Path, name: str) -> dict[str, np.ndarray]:
        predictor = BoxPredictor.from_checkpoint(path, "cpu", "float32")
        output = tmp_path / f"{name}.zarr"
        times = case_times(truth_store, "forecast", predictor.config, 12.0, 6.0)
        infer(InferenceRequest(path, truth_store, output, task="forecast", times=times, lead_hours=6.0,
                               rollout="members", batch_size=16, device="cpu", precision="float32"),
              predictor=predictor)
        table = score(output, truth_store, baselines=False).table
        rows = table[(table["method"] == "model") & (table["metric"] == "spread_skill")]
        return {field: _by_level(part, predictor.levels[field], np.arange(1.0, 7.0))
                for field, part in rows.groupby("field")}

    scaled, unscaled = ratios(copy, "scaled"), ratios(raw, "unscaled")
    for name, values in fitted.factors.items():
        np.testing.assert_allclose(scaled[name], unscaled[name] * values, rtol=1e-4)  # the spread alone moves
        assert np.abs(np.log(scaled[name])).mean() < np.abs(np.log(unscaled[name])).mean()
