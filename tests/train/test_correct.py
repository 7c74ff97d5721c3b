"""Model correction end to end: another model's values with a known error are corrected towards the truth.

The "other model" is the synthetic truth with a known error (t 2 K too warm, u 20 % too weak). A tiny
model trained on the task ``correct`` for a few dozen steps learns it: its corrected values are closer
to the truth than the raw input, in validation, at inference and in the evaluation's scores.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from atmorep.data.prepare import prepare_dataset
from atmorep.errors import DataError
from atmorep.evaluate.run import evaluate
from atmorep.infer.engine import infer
from atmorep.infer.request import InferenceRequest
from atmorep.train.loop import train
from tests.data.synthetic import internal_dataset
from tests.train.conftest import make_config

SEEDS = {"train": 0, "validation": 1}


def _other_model(ds: xr.Dataset) -> xr.Dataset:
    return ds.assign(t=ds.t + 2.0, u=ds.u * 0.8)


@pytest.fixture(scope="module")
def guide(stores, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("guide")
    return {split: str(prepare_dataset(_other_model(internal_dataset(times=48, nlat=19, nlon=36, seed=seed)),
                                       root / f"{split}.zarr", box=(24, 19, 36), chunk_fraction=1))
            for split, seed in SEEDS.items()}


@pytest.fixture(scope="module")
def trained(stores, guide, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "correct"
    overrides = (f"data.guide.train=[{guide['train']}]", f"data.guide.validation=[{guide['validation']}]")
    config = make_config(stores, run_dir, overrides, tasks={"correct": 1.0}, max_steps=60, validate_every=60)
    train(config)
    return run_dir


def test_a_correction_without_the_other_models_stores_is_refused(stores, tmp_path):
    from atmorep.train.checks import check_train_config

    config = make_config(stores, tmp_path / "run", tasks={"correct": 1.0})
    with pytest.raises(Exception, match="task 'correct' needs another model's values paired with the train"):
        check_train_config(config)


@pytest.mark.slow
def test_a_known_error_is_corrected_in_validation(trained):
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if r["kind"] == "validation"][-1]
    for name in ("t", "u"):
        assert last[f"correct/{name}/mse"] < 0.25 * last[f"correct/{name}/mse_first_guess"], last


@pytest.mark.slow
def test_inference_corrects_the_input_and_the_evaluation_scores_it_against_the_raw_input(
        trained, stores, guide, tmp_path):
    times = tuple(np.datetime64("2001-03-01T00") + np.timedelta64(h, "h") for h in (0, 12, 24))
    output = tmp_path / "corrected.zarr"
    request = InferenceRequest(trained / "checkpoint", stores["validation"], output, task="correct",
                               input=guide["validation"], times=times, batch_size=4)
    infer(request)
    assert xr.open_zarr(output).attrs["input"] == guide["validation"]
    result = evaluate([output], stores["validation"], None, tmp_path / "scores")
    for name in ("t", "u"):
        row = result.summary.set_index("field").loc[name]
        assert row["rmse_model"] < 0.5 * row["rmse_raw"], row
    checkpoint, truth = trained / "checkpoint", stores["validation"]
    with pytest.raises(DataError, match="task 'correct' needs the option input"):
        infer(InferenceRequest(checkpoint, truth, tmp_path / "x.zarr", task="correct", times=times))
    late = prepare_dataset(internal_dataset(times=48, nlat=19, nlon=36, seed=1, start="2001-03-02"),
                           tmp_path / "late.zarr", box=(24, 19, 36), chunk_fraction=1)
    with pytest.raises(DataError, match="late.zarr' has no data at 2001-03-01T00"):
        infer(InferenceRequest(checkpoint, truth, tmp_path / "y.zarr", task="correct", input=late,
                               times=times))
    assert not (tmp_path / "y.zarr").exists()
