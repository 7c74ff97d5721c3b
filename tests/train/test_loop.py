"""The training loop end to end on a tiny model: learning, outputs, exact resumption, failures."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal

import pytest
import torch
import yaml

from atmorep.checkpoint import load_model, read_checkpoint, read_train_state
from atmorep.config import ConfigError, load_config
from atmorep.data.dataset import BoxDataset
from atmorep.model.multiformer import build_model
from atmorep.runtime import make_runtime, seed_everything
from atmorep.train import loop
from atmorep.train.checks import with_levels
from atmorep.train.command import train_command
from atmorep.train.distributed import ParallelModel
from atmorep.train.loop import TrainingError, train
from atmorep.train.residual_scales import initialise_scales
from atmorep.train.schedule import lr_factor
from atmorep.train.validation import Validator
from tests.train.conftest import make_config, write_config


def _metrics(run_dir, kind: str = "train") -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def _patch_step(monkeypatch, at_call: int, action) -> None:
    """Replace ``train_step`` in the loop by one that runs ``action(result)`` on its ``at_call``-th call."""
    original, calls = loop.train_step, {"n": 0}

    def patched(*args, **kwargs):
        calls["n"] += 1
        result = original(*args, **kwargs)
        return action(result) if calls["n"] == at_call else result

    monkeypatch.setattr(loop, "train_step", patched)


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return read_checkpoint(run_dir / "checkpoint").weights


def test_training_lowers_the_validation_loss_and_beats_climatology(stores, tmp_path):
    config = make_config(stores, tmp_path / "run", max_steps=24, log_every=8)
    dataset = BoxDataset(config.data.train, config.fields, config.data)
    resolved = with_levels(config, dataset.levels)
    seed_everything(config.train.seed)  # the initial weights of the run
    initial = build_model(resolved)
    initialise_scales(initial, resolved, dataset.statistics)  # as the run does: the loss's units
    validator = Validator(resolved, make_runtime("cpu", "float32"), dataset.statistics)
    before = validator.run(ParallelModel(initial, initial))

    result = train(config)

    after = result.validation
    assert result.step == 24 and result.stop_reason == "max_steps" and len(result.losses) == 24
    assert after["loss"] < before["loss"]
    for field in ("t", "u"):
        assert after[f"forecast/{field}/mse"] < after[f"forecast/{field}/mse_climatology"]
        assert after[f"forecast/{field}/skill"] > 0
    # fixed validation batches: climatology is the same before and after training
    climatology = "forecast/t/mse_climatology"
    assert after[climatology] == pytest.approx(before[climatology], rel=1e-6)


def test_a_run_writes_config_metrics_tensorboard_and_checkpoint(stores, tmp_path):
    run_dir = tmp_path / "run"
    config = make_config(stores, run_dir, max_steps=4, log_every=2, validate_every=2)
    result = train(config)
    saved = load_config(run_dir / "config.yaml")
    assert [f.levels for f in saved.fields] == [[500.0, 850.0], [500.0, 850.0]]  # resolved from the store
    records = _metrics(run_dir)
    assert [r["step"] for r in records] == [2, 4]
    assert all(r["samples_per_s"] > 0 and r["tokens_per_s"] > 0 and r["lr"] > 0 for r in records)
    assert records[1]["loss"] == pytest.approx(sum(result.losses[2:]) / 2)
    optim = config.train.optim  # the rate used by the logged step (0-based index step - 1)
    expected_lr = [optim.lr * lr_factor(step - 1, optim, 4) for step in (2, 4)]
    assert [r["lr"] for r in records] == pytest.approx(expected_lr)
    assert [r["step"] for r in _metrics(run_dir, "validation")] == [2, 4]
    written = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert read_train_state(run_dir / "checkpoint")["metrics"] == written
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(run_dir / "tensorboard"))
    meta = read_checkpoint(run_dir / "checkpoint").meta
    assert meta["step"] == 4 and meta["fields"] == ["t", "u"] and meta["box"] == [6, 8, 8]
    assert meta["levels"] == {"t": [500.0, 850.0], "u": [500.0, 850.0]}
    model, config, statistics = load_model(run_dir / "checkpoint")
    assert config == saved and statistics["t"].levels == (500.0, 850.0)
    assert sum(p.numel() for p in model.parameters()) == meta["parameters"]


def test_resume_after_a_stop_continues_bit_identically(stores, tmp_path):
    options = {"optim": {"warmup_steps": 2, "decay": "constant"}}
    model = ("model.dropout=0.1",)  # dropout draws from torch's generator: its state must be restored
    whole = train(make_config(stores, tmp_path / "a", model, max_steps=8, **options))
    first = train(make_config(stores, tmp_path / "b", model, max_steps=4, **options))
    second = train(make_config(stores, tmp_path / "b", model, max_steps=8, **options), resume=True)
    assert first.losses + second.losses == whole.losses
    assert [r["loss"] for r in _metrics(tmp_path / "b")] == [r["loss"] for r in _metrics(tmp_path / "a")]
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_sigterm_stops_with_a_checkpoint_and_resume_matches_cosine_schedule(stores, tmp_path, monkeypatch):
    whole = train(make_config(stores, tmp_path / "a"))

    def terminate(result):
        os.kill(os.getpid(), signal.SIGTERM)
        return result

    _patch_step(monkeypatch, 4, terminate)
    stopped = train(make_config(stores, tmp_path / "b"))
    assert stopped.stop_reason == "signal" and stopped.step == 4
    assert read_checkpoint(tmp_path / "b" / "checkpoint").step == 4
    monkeypatch.undo()
    resumed = train(make_config(stores, tmp_path / "b"), resume=True)
    assert stopped.losses + resumed.losses == whole.losses


def test_a_crashed_run_resumes_from_its_last_checkpoint(stores, tmp_path, monkeypatch):
    options = {"checkpoint_every": 2, "max_steps": 7}
    whole = train(make_config(stores, tmp_path / "a", **options))

    def crash(result):
        raise RuntimeError("simulated crash")

    _patch_step(monkeypatch, 6, crash)  # during step 6: checkpoint of step 4, step 5 logged
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(make_config(stores, tmp_path / "b", **options))
    assert [r["step"] for r in _metrics(tmp_path / "b")] == [1, 2, 3, 4, 5]
    monkeypatch.undo()
    resumed = train(make_config(stores, tmp_path / "b", **options), resume=True)
    assert resumed.losses == whole.losses[4:]
    assert [r["loss"] for r in _metrics(tmp_path / "b")] == [r["loss"] for r in _metrics(tmp_path / "a")]
    state = read_train_state(tmp_path / "b" / "checkpoint")
    assert state["step"] == 7 and state["sampler"] == {"epoch": 1, "next_batch": 2}


def test_a_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(stores, tmp_path, monkeypatch):
    _patch_step(monkeypatch, 5, lambda result: dataclasses.replace(result, loss=result.loss * math.nan))
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"step 5: the loss is nan.*step 4\) is intact"):
        train(make_config(stores, run_dir, checkpoint_every=2))
    assert read_checkpoint(run_dir / "checkpoint").step == 4
    model, _, _ = load_model(run_dir / "checkpoint")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_max_minutes_stops_cleanly_with_a_checkpoint(stores, tmp_path):
    result = train(make_config(stores, tmp_path / "run", max_minutes=1e-9))
    assert result.stop_reason == "max_minutes" and result.step == 1
    assert read_checkpoint(tmp_path / "run" / "checkpoint").step == 1


def test_accumulation_draws_several_batches_per_step(stores, tmp_path):
    result = train(make_config(stores, tmp_path / "run", ("train.optim.accumulate=2",), max_steps=3))
    assert result.step == 3
    assert read_train_state(tmp_path / "run" / "checkpoint")["sampler"] == {"epoch": 1, "next_batch": 1}


def test_run_directory_with_a_checkpoint_needs_resume(stores, tmp_path):
    train(make_config(stores, tmp_path / "run", max_steps=1))
    with pytest.raises(TrainingError, match="already holds a checkpoint"):
        train(make_config(stores, tmp_path / "run", max_steps=2))
    with pytest.raises(loop.CheckpointError, match="no checkpoint to resume from"):
        train(make_config(stores, tmp_path / "other", max_steps=2), resume=True)


def test_resume_refuses_a_different_model_but_accepts_new_training_options(stores, tmp_path):
    train(make_config(stores, tmp_path / "run", max_steps=1))
    with pytest.raises(loop.CheckpointError, match="'model' differs"):
        train(make_config(stores, tmp_path / "run", ("model.dim=48",), max_steps=2), resume=True)
    with pytest.raises(loop.CheckpointError, match="'fields' differs"):
        train(make_config(stores, tmp_path / "run", ("fields.u.coupled_with=[]",), max_steps=2), resume=True)
    changed = ("fields.t.loss_weight=2", "fields.u.masking.max_ratio=0.5", "train.losses={stats: 1}")
    assert train(make_config(stores, tmp_path / "run", changed, max_steps=2), resume=True).step == 2


@pytest.mark.parametrize(("override", "key"), [
    ("train.bogus=1", "train.bogus"),
    ("train.max_steps=many", "train.max_steps"),
    ("train.losses={crps_fair: 1, wasserstein: 1}", "train.losses.wasserstein"),
    ("train.tasks={bert: 1, nowcast: 1}", "train.tasks.nowcast"),
    ("train.forecast_tokens=3", "train.forecast_tokens"),
    ("data.train=[]", "data.train"),
    ("train.init_fields=[t]", "train.init_fields"),
    ("train.freeze=[q]", "train.freeze"),
])
def test_bad_configs_raise_config_error_naming_the_key(stores, tmp_path, override, key):
    path = write_config(tmp_path / "run.yaml", stores, tmp_path / "run")
    with pytest.raises(ConfigError) as error:
        train_command(path, [override])
    assert key in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


def test_train_command_applies_overrides(stores, tmp_path):
    path = write_config(tmp_path / "run.yaml", stores, tmp_path / "run")
    result = train_command(path, ["train.max_steps=2"])
    assert result.step == 2
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["max_steps"] == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_gpu_run_autocasts_the_trunk_and_reports_utilisation(stores, tmp_path):
    result = train(make_config(stores, tmp_path / "run", ("train.device=cuda",), max_steps=3, log_every=1))
    assert all(math.isfinite(loss) for loss in result.losses)
    records = _metrics(tmp_path / "run")
    if torch.cuda.is_bf16_supported() and loop.peak_flops(torch.device("cuda")):
        assert all(0 < record["mfu"] < 1 for record in records)
    model, _, _ = load_model(tmp_path / "run" / "checkpoint", device="cuda")
    assert next(model.parameters()).device.type == "cuda"


def test_a_run_starts_from_a_checkpoints_fields_and_keeps_frozen_ones_fixed(stores, tmp_path):
    train(make_config(stores, tmp_path / "first", max_steps=2))
    first = _weights(tmp_path / "first")
    overrides = (f"train.init={tmp_path / 'first'}", "train.freeze=[t]")
    config = make_config(stores, tmp_path / "second", overrides, max_steps=3, calibrate_spread=False)
    train(config)
    second = _weights(tmp_path / "second")
    t_weights = [name for name in first if name.startswith("fields.t.") and not name.endswith(".spread")]
    assert t_weights and all(torch.equal(second[name], first[name]) for name in t_weights)  # frozen
    u_weights = [name for name in first if name.startswith("fields.u.") and name.endswith(".weight")]
    assert any(not torch.equal(second[name], first[name]) for name in u_weights)  # started from it, trained


def test_a_format_4_training_checkpoint_resumes_bit_identically(stores, tmp_path):
    """Weights and optimiser state under the names of format 4 are renamed on resume, not dropped."""
    import shutil

    from atmorep.checkpoint import write_checkpoint
    from tests.train.test_checkpoint import STAGE_GROUPED_NAME as rename
    from tests.train.test_checkpoint import _stage_grouped

    options = {"optim": {"warmup_steps": 2, "decay": "constant"}}
    first = train(make_config(stores, tmp_path / "new", max_steps=3, **options))
    shutil.copytree(tmp_path / "new", tmp_path / "old")
    directory = tmp_path / "old" / "checkpoint"
    contents, state = read_checkpoint(directory), read_train_state(directory)
    optimizer = state["optimizer"]
    state["optimizer"] = {**optimizer, "state": {rename(k): v for k, v in optimizer["state"].items()},
                          "param_groups": [{**g, "params": [rename(p) for p in g["params"]]}
                                           for g in optimizer["param_groups"]]}
    old = dataclasses.replace(contents, weights=_stage_grouped(contents.weights),
                              meta={**contents.meta, "version": 4})
    write_checkpoint(directory, old, train_state=state)
    assert "tails.t.weight" in read_train_state(directory)["optimizer"]["state"]
    resumed = {name: train(make_config(stores, tmp_path / name, max_steps=6, **options), resume=True)
               for name in ("new", "old")}
    assert first.step == 3 and resumed["old"].losses == resumed["new"].losses
    a, b = _weights(tmp_path / "new"), _weights(tmp_path / "old")
    assert all(torch.equal(a[name], b[name]) for name in a)
