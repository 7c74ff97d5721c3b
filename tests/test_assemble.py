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


def _single(tmp_path, name: str, seed: int, **model) -> tuple:
    config = make_config(fields=[FIELDS[name]], cross_heads=1, qk_norm=True, **model)
    torch.manual_seed(seed)
    net = build_model(config)
    levels = {name: tuple(FIELDS[name]["levels"])}
    statistics = Statistics({name: FieldStatistics(levels[name], (1.0,) * len(levels[name]),
                                                   (2.0,) * len(levels[name]))})
    meta = checkpoint_meta(config, 10, levels, level_kind="pressure", resolution=1.0,
                           parameters=sum(p.numel() for p in net.parameters()))
    path = write_checkpoint(tmp_path / name, Checkpoint(net.state_dict(), config.model_dump(mode="json"),
                                                        statistics.to_dict(), meta))
    return path, net


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


def test_parts_that_do_not_fit_are_refused(tmp_path):
    t_path, _ = _single(tmp_path, "t", 0)
    wide, _ = _single(tmp_path / "wide", "u", 1, dim=32)
    with pytest.raises(DataError, match="model.dim = 32"):
        assemble([t_path, wide], tmp_path / "out")
    with pytest.raises(DataError, match="field 't' is in both"):
        assemble([t_path, t_path], tmp_path / "out")
    result = CliRunner().invoke(app, ["assemble", str(t_path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "at least two checkpoints" in result.output
    assert not (tmp_path / "out").exists()
