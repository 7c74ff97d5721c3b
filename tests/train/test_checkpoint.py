"""Checkpoints: round trip, atomic replacement, recovery of an interrupted write, migrations, errors."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
import torch

from atmorep import checkpoint as ckpt
from atmorep.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_meta,
    find_checkpoint,
    load_model,
    read_checkpoint,
    read_train_state,
    write_checkpoint,
)
from atmorep.config import resolve_config
from atmorep.data.statistics import FieldStatistics, Statistics
from atmorep.io import temporary_sibling
from atmorep.model.multiformer import build_model

LEVELS = {"t": (850.0, 500.0), "u": (850.0,)}


@pytest.fixture
def config():
    fields = [{"name": "t", "levels": list(LEVELS["t"]), "token_size": [2, 2, 2], "coupled_with": ["u"]},
              {"name": "u", "levels": list(LEVELS["u"]), "token_size": [2, 4, 4], "predicted": False}]
    return resolve_config({"fields": fields, "data": {"box": {"time": 4, "latitude": 8, "longitude": 8}},
                           "model": {"dim": 16, "encoder_layers": 1, "decoder_layers": 1, "heads": 2}})


@pytest.fixture
def statistics():
    return Statistics({"t": FieldStatistics((850.0, 500.0), (280.0, 250.0), (10.0, 8.0)),
                       "u": FieldStatistics((850.0,), (1.5,), (7.0,))})


def _contents(config, statistics, step=3, seed=0) -> Checkpoint:
    torch.manual_seed(seed)
    model = build_model(config)
    meta = checkpoint_meta(config, step, LEVELS, level_kind="pressure", resolution=1.0,
                           parameters=sum(p.numel() for p in model.parameters()))
    return Checkpoint(model.state_dict(), config.model_dump(mode="json"), statistics.to_dict(), meta)


def _absolute(config):
    """``config`` in the formulation before the first guess (checkpoint formats 0 and 1)."""
    data = config.model_dump(mode="json")
    return resolve_config({**data, "model": {**data["model"], "first_guess": False}})


STAGE_GROUPED_NAME = ckpt.name_rules(  # current parameter names -> those of format 4 and before
    (r"^fields\.([^.]+)\.embedding\.", r"embeddings.\1."),
    (r"^fields\.([^.]+)\.encoder\.(\d+)\.", r"encoder.layers.\2.blocks.\1."),
    (r"^fields\.([^.]+)\.decoder\.", r"decoders.\1."), (r"^fields\.([^.]+)\.tail\.", r"tails.\1."))


def _stage_grouped(weights: dict) -> dict:
    """Weights under the names of format 4 and before (each stage's modules together)."""
    return {STAGE_GROUPED_NAME(name): value for name, value in weights.items()}


def _version_one(contents: Checkpoint) -> Checkpoint:
    """Contents as format version 1 wrote them: no ``first_guess`` key in the model config, each stage's
    weights together."""
    model = {key: value for key, value in contents.config["model"].items() if key != "first_guess"}
    return replace(contents, weights=_stage_grouped(contents.weights),
                   config={**contents.config, "model": model}, meta={**contents.meta, "version": 1})


def test_version_one_checkpoints_load_as_the_absolute_formulation(config, statistics, tmp_path):
    contents = _contents(_absolute(config), statistics)
    write_checkpoint(tmp_path / "v1", _version_one(contents))
    model, loaded, _ = load_model(tmp_path / "v1")
    assert loaded.model.first_guess is False
    for name, value in contents.weights.items():
        assert torch.equal(model.state_dict()[name], value), name
    assert read_checkpoint(tmp_path / "v1").meta["version"] == ckpt.FORMAT_VERSION


def test_version_one_weights_under_a_first_guess_config_fail_with_one_line(config, statistics, tmp_path):
    contents = _contents(_absolute(config), statistics)
    mixed = replace(contents, config=config.model_dump(mode="json"))  # weights without a first guess
    write_checkpoint(tmp_path / "mixed", mixed)
    with pytest.raises(CheckpointError, match="weights do not fit the model of its config") as error:
        load_model(tmp_path / "mixed")
    assert "\n" not in str(error.value)


def test_version_four_names_move_under_each_field(config, statistics, tmp_path):
    contents = _contents(config, statistics)
    old = replace(contents, weights=_stage_grouped(contents.weights), meta={**contents.meta, "version": 4})
    assert "encoder.layers.0.blocks.t.attention.query.weight" in old.weights
    write_checkpoint(tmp_path / "v4", old)
    model, _, _ = load_model(tmp_path / "v4")
    assert all(torch.equal(model.state_dict()[name], value) for name, value in contents.weights.items())
    assert ckpt.migrated_name("tails.t.scale", 2) == "fields.t.tail.scale"
    assert ckpt.migrated_name("decoders.t.blocks.1.context_norm.weight", 3) == (
        "fields.t.decoder.blocks.1.context_norms.encoder.weight")


def test_version_two_checkpoints_load_with_uncalibrated_spread(config, statistics, tmp_path):
    contents = _contents(config, statistics)
    weights = {name: value for name, value in _stage_grouped(contents.weights).items()
               if not name.endswith(".spread")}
    assert len(weights) == len(contents.weights) - 1  # the one predicted field's tail
    old = replace(contents, weights=weights, meta={**contents.meta, "version": 2})
    write_checkpoint(tmp_path / "v2", old)
    model, _, _ = load_model(tmp_path / "v2")
    assert torch.equal(model.tails["t"].spread, torch.ones_like(model.tails["t"].scale))
    assert read_checkpoint(tmp_path / "v2").meta["version"] == ckpt.FORMAT_VERSION


def test_version_three_decoder_norms_load_under_the_one_block_class(config, statistics, tmp_path):
    contents = _contents(config, statistics)
    renamed = {name.replace("context_norms.encoder.", "context_norm."): value
               for name, value in _stage_grouped(contents.weights).items()}
    assert renamed.keys() != contents.weights.keys()  # the decoder's norm had another name
    old = replace(contents, weights=renamed, meta={**contents.meta, "version": 3})
    write_checkpoint(tmp_path / "v3", old)
    model, _, _ = load_model(tmp_path / "v3")
    assert all(torch.equal(model.state_dict()[name], value) for name, value in contents.weights.items())


def test_version_five_gains_the_model_kind_of_first_guess(config, statistics, tmp_path):
    contents = _contents(config, statistics)
    kinds = {"fields.t.embedding.kind_tokens": lambda v: v[:6], "fields.t.tail.scale": lambda v: v[:, :6],
             "fields.t.tail.spread": lambda v: v[:, :6]}
    weights = {name: kinds.get(name, lambda v: v)(value) for name, value in contents.weights.items()}
    old = replace(contents, weights=weights, meta={**contents.meta, "version": 5})
    write_checkpoint(tmp_path / "v5", old)
    model, _, _ = load_model(tmp_path / "v5")
    state = model.state_dict()
    assert torch.equal(state["fields.t.embedding.kind_tokens"][:6], weights["fields.t.embedding.kind_tokens"])
    assert (state["fields.t.embedding.kind_tokens"][6] == 0).all()  # the kind "model" starts silent
    for name in ("fields.t.tail.scale", "fields.t.tail.spread"):
        assert torch.equal(state[name][:, :6], weights[name]) and (state[name][:, 6] == 1).all()
    moment = ckpt.migrated_tensor("fields.t.embedding.kind_tokens", torch.ones(6, 3), 5)
    assert moment.shape == (7, 3) and (moment[6] == 0).all() and (moment[:6] == 1).all()


def test_residual_scales_and_spread_factors_round_trip(config, statistics, tmp_path):
    contents = _contents(config, statistics)
    scales = {name: value for name, value in contents.weights.items() if name.endswith(("scale", "spread"))}
    assert {"fields.t.tail.scale", "fields.t.tail.spread",
            "fields.t.embedding.difference_scale"} <= set(scales)
    weights = {name: value + 0.25 if name in scales else value for name, value in contents.weights.items()}
    write_checkpoint(tmp_path / "ckpt", replace(contents, weights=weights))
    model, _, _ = load_model(tmp_path / "ckpt")
    for name in scales:
        assert torch.equal(model.state_dict()[name], weights[name]), name


def test_round_trip_gives_equal_weights_config_and_statistics(config, statistics, tmp_path):
    contents = _contents(config, statistics)
    generator = torch.get_rng_state()
    write_checkpoint(tmp_path / "ckpt", contents, {"step": 3, "rng": [generator]})
    model, loaded_config, loaded_statistics = load_model(tmp_path / "ckpt")
    assert loaded_config == config
    assert loaded_statistics == statistics
    state = model.state_dict()
    assert state.keys() == contents.weights.keys()
    assert all(torch.equal(state[name], value) for name, value in contents.weights.items())
    assert not model.training
    meta = json.loads((tmp_path / "ckpt" / "meta.json").read_text())
    assert meta["format"] == "atmorep-checkpoint" and meta["version"] == ckpt.FORMAT_VERSION
    assert meta["levels"] == {"t": [850.0, 500.0], "u": [850.0]} and meta["predicted"] == ["t"]
    assert meta["token_size"] == {"t": [2, 2, 2], "u": [2, 4, 4]} and meta["box"] == [4, 8, 8]
    assert torch.equal(read_train_state(tmp_path / "ckpt")["rng"][0], generator)


def test_a_failed_write_leaves_the_previous_checkpoint_intact(config, statistics, tmp_path, monkeypatch):
    first = _contents(config, statistics, step=3, seed=0)
    write_checkpoint(tmp_path / "ckpt", first)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(tmp_path / "ckpt", _contents(config, statistics, step=5, seed=1), {"step": 5})
    read = read_checkpoint(tmp_path / "ckpt")
    assert read.step == 3
    assert all(torch.equal(read.weights[k], v) for k, v in first.weights.items())
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no temporary left behind


def test_find_checkpoint_recovers_one_moved_aside_by_an_interrupted_write(config, statistics, tmp_path):
    assert find_checkpoint(tmp_path) is None
    write_checkpoint(tmp_path / "checkpoint", _contents(config, statistics))
    assert find_checkpoint(tmp_path) == tmp_path / "checkpoint"
    old = temporary_sibling(tmp_path / "checkpoint", "old")
    os.replace(tmp_path / "checkpoint", old)  # killed between the two renames of a replacement
    assert find_checkpoint(tmp_path) == old
    assert read_checkpoint(old).step == 3


def test_migrations_upgrade_old_formats_in_turn(config, statistics, tmp_path, monkeypatch):
    contents = _version_one(_contents(_absolute(config), statistics))  # formats before 2: no first guess
    renamed = {name.replace("tails.", "heads."): value for name, value in contents.weights.items()}
    old = replace(contents, weights=renamed, meta={**contents.meta, "version": 0})
    write_checkpoint(tmp_path / "old", old)
    with pytest.raises(CheckpointError, match="no migration from checkpoint format version 0"):
        load_model(tmp_path / "old")

    def rename_heads(checkpoint: Checkpoint) -> Checkpoint:
        weights = {name.replace("heads.", "tails."): value for name, value in checkpoint.weights.items()}
        return replace(checkpoint, weights=weights)

    monkeypatch.setitem(ckpt.MIGRATIONS, 0, rename_heads)
    model, _, _ = load_model(tmp_path / "old")
    assert torch.equal(model.state_dict()["fields.t.tail.weight"], contents.weights["tails.t.weight"])
    assert read_checkpoint(tmp_path / "old").meta["version"] == ckpt.FORMAT_VERSION


def test_newer_and_foreign_checkpoints_are_refused(config, statistics, tmp_path):
    contents = _contents(config, statistics)
    write_checkpoint(tmp_path / "new", replace(contents, meta={**contents.meta, "version": 99}))
    with pytest.raises(CheckpointError, match="newer than this atmorep reads"):
        read_checkpoint(tmp_path / "new")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "meta.json").write_text('{"format": "other"}')
    with pytest.raises(CheckpointError, match="does not describe an atmorep checkpoint"):
        read_checkpoint(tmp_path / "foreign")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="cannot resume training"):
        write_checkpoint(tmp_path / "inference", contents)
        read_train_state(tmp_path / "inference")


def test_weights_that_do_not_fit_the_config_are_refused(config, statistics, tmp_path):
    contents = _contents(config, statistics)
    bigger = config.model_dump(mode="json")
    bigger["model"]["dim"] = 32
    write_checkpoint(tmp_path / "ckpt", replace(contents, config=bigger))
    with pytest.raises(CheckpointError, match="size mismatch"):
        load_model(tmp_path / "ckpt")
    weights = dict(contents.weights)
    weights.pop("fields.t.tail.bias")
    write_checkpoint(tmp_path / "partial", replace(contents, weights=weights))
    with pytest.raises(CheckpointError, match=r"missing \['fields.t.tail.bias'\]"):
        load_model(tmp_path / "partial")


def test_fields_load_one_by_one_and_mismatches_are_named(config, statistics, tmp_path):
    write_checkpoint(tmp_path / "source", _contents(config, statistics, seed=0))
    source = read_checkpoint(tmp_path / "source").weights
    torch.manual_seed(1)
    model = build_model(config)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    assert ckpt.load_fields(model, tmp_path / "source", ["u"]) == {"u": []}
    after = model.state_dict()
    for name, value in after.items():
        expected = source[name] if name.startswith("fields.u.") else before[name]
        assert torch.equal(value, expected), name
    ckpt.freeze_fields(model, ["u"])
    assert not any(p.requires_grad for p in model.fields["u"].parameters())
    assert all(p.requires_grad for p in model.fields["t"].parameters())
    with pytest.raises(CheckpointError, match="has no field 'v'"):
        ckpt.load_fields(model, tmp_path / "source", ["v"])
    wider = config.model_dump(mode="json")
    wider["model"]["dim"] = 32
    with pytest.raises(CheckpointError, match=r"'fields\.t\.\S+' has shape \(\d+.*\), the model's has"):
        ckpt.load_fields(build_model(resolve_config(wider)), tmp_path / "source", ["t"])
    with pytest.raises(CheckpointError, match="train.freeze: the model has no field 'v'"):
        ckpt.freeze_fields(model, ["v"])
