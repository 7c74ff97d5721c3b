"""Plug-and-play fields: a multiformer assembled from single-field checkpoints starts as those models."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from atmorep.assemble import assemble
from atmorep.checkpoint import Checkpoint, checkpoint_meta, load_model, write_checkpoint
from atmorep.cli import app
from atmorep.data.statistics import FieldStatistics, Statistics
from atmorep.errors import DataError
from atmorep.model import build_model
from tests.model.conftest import LEVELS, make_config, make_inputs

FIELDS = {"t": {"name": "t", "levels": list(LEVELS["t"]), "token_size": [2, 2, 2]},
          "u": {"name": "u", "levels": list(LEVELS["u"]), "token_size": [2, 4, 4]},
          "v": {"name": "v", "levels": list(LEVELS["u"]), "token_size": [2, 4, 4]}}


def _checkpoint(path, names: tuple[str, ...], seed: int, **model) -> tuple:
    """A checkpoint of fresh weights of the fields ``names``, each coupled with the others."""
    fields = [{**FIELDS[name], "coupled_with": [other for other in names if other != name]} for name in names]
    config = make_config(fields=fields, cross_heads=1, qk_norm=True, **model)
    torch.manual_seed(seed)
    net = build_model(config)
    levels = {name: tuple(FIELDS[name]["levels"]) for name in names}
    statistics = Statistics({name: FieldStatistics(levels[name], (1.0,) * len(levels[name]),
                                                   (2.0,) * len(levels[name])) for name in names})
    meta = checkpoint_meta(config, 10, levels, level_kind="pressure", resolution=1.0,
                           parameters=sum(p.numel() for p in net.parameters()))
    path = write_checkpoint(path, Checkpoint(net.state_dict(), config.model_dump(mode="json"),
                                             statistics.to_dict(), meta))
    return path, net


def _single(tmp_path, name: str, seed: int, **model) -> tuple:
    return _checkpoint(tmp_path / name, (name,), seed, **model)


def _predict(net, names, tokens, modes, alpha) -> dict:
    with torch.no_grad():
        out = net.double().eval()(*({n: part[n] for n in names} for part in (tokens, modes, alpha)))
    return {name: out.fields[name].members for name in names}


def test_the_assembled_model_starts_as_the_separate_models(tmp_path):
    t_path, t_net = _single(tmp_path, "t", 0)
    u_path, u_net = _single(tmp_path, "u", 1)
    out = assemble([t_path, u_path], tmp_path / "tu")
    model, config, statistics = load_model(out)
    assert config.field("t").coupled_with == ["u"] and config.field("u").coupled_with == ["t"]
    assert set(statistics.fields) == {"t", "u"}
    tokens, modes, alpha = make_inputs(config, batch=2, seed=3, dtype=torch.float64)
    with torch.no_grad():
        joint = model.double()(tokens, modes, alpha)
        for name, net in (("t", t_net), ("u", u_net)):
            alone = net.double().eval()({name: tokens[name]}, {name: modes[name]}, {name: alpha[name]})
            torch.testing.assert_close(joint.fields[name].members, alone.fields[name].members, rtol=0,
                                       atol=1e-10)
    coupling = model.fields["t"].encoder[0].attention
    assert coupling.groups == {"self": 4, "u": 1}  # the new cross head is there, its output columns zero
    assert (coupling.out.weight[:, config.model.dim:] == 0).all()


def test_a_field_added_to_an_assembled_model_leaves_its_predictions(tmp_path):
    t_path, _ = _single(tmp_path, "t", 0)
    u_path, _ = _single(tmp_path, "u", 1)
    v_path, v_net = _single(tmp_path, "v", 2)
    pair = assemble([t_path, u_path], tmp_path / "tu", seed=5)
    triple = assemble([pair, v_path], tmp_path / "tuv", seed=6)
    before, pair_config, _ = load_model(pair)
    after, config, _ = load_model(triple)
    assert config.field("t").coupled_with == ["u", "v"]
    tokens, modes, alpha = make_inputs(config, batch=2, seed=4, dtype=torch.float64)
    with torch.no_grad():
        joint = after.double()(tokens, modes, alpha)
        names = ("t", "u")
        old = before.double()(*({n: part[n] for n in names} for part in (tokens, modes, alpha)))
        alone = v_net.double().eval()({"v": tokens["v"]}, {"v": modes["v"]}, {"v": alpha["v"]})
    for name in names:
        torch.testing.assert_close(joint.fields[name].members, old.fields[name].members, rtol=0, atol=1e-10)
    torch.testing.assert_close(joint.fields["v"].members, alone.fields["v"].members, rtol=0, atol=1e-10)
    assert pair_config.field("t").coupled_with == ["u"]


def test_the_order_of_the_parts_does_not_matter(tmp_path):
    t_path, _ = _single(tmp_path, "t", 0)
    u_path, _ = _single(tmp_path, "u", 1)
    v_path, _ = _single(tmp_path, "v", 2)
    pair = assemble([t_path, u_path], tmp_path / "tu", seed=5)
    first = assemble([pair, v_path], tmp_path / "tuv", seed=6)
    second = assemble([v_path, pair], tmp_path / "vtu", seed=6)  # t's existing head towards u moves
    one, config, _ = load_model(first)
    other, other_config, _ = load_model(second)
    assert other_config.field("t").coupled_with == ["v", "u"]
    tokens, modes, alpha = make_inputs(config, batch=2, seed=4, dtype=torch.float64)
    names = ("t", "u", "v")
    expected, got = _predict(one, names, tokens, modes, alpha), _predict(other, names, tokens, modes, alpha)
    for name in names:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-10)


def test_a_dropped_field_takes_its_heads_with_it(tmp_path):
    joint_path, joint = _checkpoint(tmp_path / "tuv", ("t", "u", "v"), seed=7)
    dropped, config, statistics = load_model(assemble([joint_path], tmp_path / "tu", drop=["v"]))
    assert [f.name for f in config.fields] == ["t", "u"] and set(statistics.fields) == {"t", "u"}
    assert config.field("t").coupled_with == ["u"]
    assert not any(".v." in name or name.startswith("fields.v") for name in dropped.state_dict())
    inputs = make_inputs(load_model(joint_path)[1], batch=2, seed=5, dtype=torch.float64)
    # the joint model with its heads towards v silenced predicts t and u exactly as the dropped one
    dim, heads = config.model.dim, config.model.heads
    with torch.no_grad():
        for name in ("t", "u"):
            for block in joint.fields[name].encoder:
                groups = list(block.attention.groups)  # self (heads), then one head per coupled field
                start = dim + (groups.index("v") - 1) * (dim // heads)
                block.attention.out.weight[:, start:start + dim // heads] = 0.0
    expected, got = _predict(joint, ("t", "u", "v"), *inputs), _predict(dropped, ("t", "u"), *inputs)
    for name in ("t", "u"):
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-10)
    with pytest.raises(DataError, match=r"has no field \['w'\]"):
        assemble([joint_path], tmp_path / "out", drop=["w"])
    with pytest.raises(DataError, match="would keep no field"):
        assemble([joint_path], tmp_path / "out", drop=["t", "u", "v"])
    result = CliRunner().invoke(app, ["assemble", str(joint_path), "--drop", "u,v", "-o",
                                      str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    assert [f.name for f in load_model(tmp_path / "t")[1].fields] == ["t"]


def test_parts_that_do_not_fit_are_refused(tmp_path):
    t_path, _ = _single(tmp_path, "t", 0)
    wide, _ = _single(tmp_path / "wide", "u", 1, dim=32)
    with pytest.raises(DataError, match="model.dim = 32"):
        assemble([t_path, wide], tmp_path / "out")
    with pytest.raises(DataError, match="field 't' is in both"):
        assemble([t_path, t_path], tmp_path / "out")
    pair = assemble([t_path, _single(tmp_path, "u", 1)[0]], tmp_path / "tu")
    with pytest.raises(DataError, match=r"\['t', 'u'\] have 1 heads per coupled field; use --cross-heads 1"):
        assemble([pair, _single(tmp_path, "v", 2)[0]], tmp_path / "out", cross_heads=2)
    result = CliRunner().invoke(app, ["assemble", str(t_path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "at least two checkpoints" in result.output
    assert not (tmp_path / "out").exists()
