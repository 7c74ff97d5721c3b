"""The grid tail's content loss: zero at the truth, gradients into the tail only, its errors, the control."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from atmorep.config import ConfigError
from atmorep.distance.network import EncoderSpec, LagClassifier
from atmorep.distance.saved import write_distance
from atmorep.tails.backbone import Backbone
from atmorep.tails.coarse import CoarsePeriod
from atmorep.tails.config import ContentLoss, Target, resolve_finetune_config
from atmorep.tails.content import ContentTerm, channel_indices
from atmorep.tails.finetune import features_of, finetune
from atmorep.tails.registry import get_tail
from tests.tails.conftest import PERIODS, grid_config, site_config

SPEC = EncoderSpec(width=4, stages=2, blocks=1, head_width=8)


def _distance_model(path, channels: list[tuple[str, float]], seed: int = 0):
    """A small distance model of ``channels`` with weights of ``seed`` (as if trained)."""
    torch.manual_seed(seed)
    classifier = LagClassifier(len(channels), 3, SPEC)
    with torch.no_grad():
        for module in classifier.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.normal_(1.0, 0.3)  # the residual branches do something
    rng = np.random.default_rng(seed)
    first = torch.from_numpy(rng.normal(260.0, 8.0, (6, len(channels), 16, 16)).astype(np.float32))
    second = first + torch.from_numpy(rng.normal(0.0, 1.0, first.shape).astype(np.float32))
    normalisation = {"channels": [{"field": f, "level": level, "mean": 260.0, "scale": 5.0}
                                  for f, level in channels]}
    meta = {"channels": [[f, level] for f, level in channels], "lags": 3, "network": SPEC.model_dump(),
            "patch": 16}
    return write_distance(path, classifier, {}, normalisation, (first, second), meta)


@pytest.fixture(scope="module")
def distance(tails_root):
    return _distance_model(tails_root / "distance-t500", [("t", 500.0)])


@pytest.fixture(scope="module")
def setting(backbone, coarse, fine, tails_root):
    """The backbone, the training period's grid pairs and a grid tail built on them."""
    config = resolve_finetune_config(grid_config(backbone, coarse, fine, tails_root / "unused"))
    model = Backbone(str(backbone))
    period = CoarsePeriod(str(coarse), model, config.tail.fields, *config.periods.bounds("train"))
    recipe = get_tail("grid")
    pairs, setup = recipe.fit(config.tail, period)
    tail = recipe.build(config.tail, model, recipe.sizes(pairs, setup))
    return model, pairs, tail, config.tail.fields


def _batch(pairs, count: int = 2, seed: int = 0):
    boxes = pairs.coarse.random_boxes(np.random.default_rng(seed), count)
    return boxes, pairs.batch(boxes)


@pytest.mark.parametrize("members", ["each", "mean"])
def test_the_content_loss_is_zero_at_the_truth_and_positive_elsewhere(setting, distance, members):
    _, pairs, _, fields = setting
    term = ContentTerm(ContentLoss(distance=str(distance), weight=1.0, members=members), pairs, fields)
    assert term.channels == [0]
    boxes, batch = _batch(pairs)
    exact = ((batch.truth - batch.guess) / batch.scale)[:, None].expand(-1, 3, -1)  # [M, 3, P]
    assert float(term(exact, batch, len(boxes))) == pytest.approx(0.0, abs=1e-6)
    guess = torch.zeros_like(exact)  # every member is the bicubic first guess
    assert float(term(guess, batch, len(boxes))) > 1e-3
    images = term.images(batch.truth[:, None], len(boxes))  # [B, 1, T, C, fH, fW], physical
    t_index = [t.label for t in fields].index("t@500")
    physical = pairs.fine.truth[t_index]  # [T, Hf, Wf]
    box = boxes[0]
    f, bt, bh = pairs.fine.factor, *pairs.coarse.backbone.box[:2]
    columns = (f * box.k0 + np.arange(images.shape[-1])) % physical.shape[-1]
    expected = physical[box.t0:box.t0 + bt, f * box.i0:f * (box.i0 + bh)][..., columns]
    assert np.allclose(images[0, 0, :, 0].numpy(), expected, rtol=1e-5, atol=1e-3)


def test_gradients_reach_the_tail_and_not_the_distance_model(setting, distance):
    model, pairs, tail, fields = setting
    term = ContentTerm(ContentLoss(distance=str(distance), weight=1.0), pairs, fields)
    boxes, batch = _batch(pairs, seed=1)
    tail.train()
    tail.zero_grad(set_to_none=True)
    with torch.no_grad():
        features = features_of(model, pairs.coarse, boxes)
    loss = term(tail.residuals(features, batch), batch, len(boxes))
    loss.backward()
    grads = [p.grad for p in tail.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(not p.requires_grad and p.grad is None for p in term.model.classifier.parameters())
    assert not term.model.classifier.training


def test_the_random_control_is_used_when_asked(setting, distance):
    _, pairs, _, fields = setting
    trained = ContentTerm(ContentLoss(distance=str(distance), weight=1.0), pairs, fields)
    control = ContentTerm(ContentLoss(distance=f"random:{distance}", weight=1.0, seed=3), pairs, fields)
    assert control.model.meta["random_of"] == trained.model.meta["path"]
    assert control.model.meta["random_seed"] == 3
    a = dict(trained.model.classifier.named_parameters())
    b = dict(control.model.classifier.named_parameters())
    assert not torch.equal(a["encoder.stem.0.weight"], b["encoder.stem.0.weight"])
    boxes, batch = _batch(pairs)
    zero = torch.zeros(batch.guess.shape[0], 1, batch.guess.shape[1])
    assert float(trained(zero, batch, len(boxes))) != pytest.approx(float(control(zero, batch, len(boxes))))


def test_a_channel_the_tail_does_not_predict_is_a_one_line_error(tails_root, backbone, coarse, fine,
                                                                 tmp_path):
    other = _distance_model(tails_root / "distance-u850", [("u", 850.0)])
    config = grid_config(backbone, coarse, fine, tmp_path / "run",
                         content_loss={"distance": str(other), "weight": 0.5})
    with pytest.raises(ConfigError) as error:
        finetune(resolve_finetune_config(config))
    message = str(error.value)
    assert "\n" not in message and "u@850" in message and "t@500" in message
    assert "train.content_loss.distance" in message
    with pytest.raises(ConfigError, match="t@850"):
        channel_indices([("t", 850.0)], [Target(field="t", level=500.0)], "here")


def test_only_a_grid_tail_takes_a_content_loss(backbone, coarse, observations, distance, tmp_path):
    config = site_config(backbone, coarse, observations, tmp_path / "run",
                         content_loss={"distance": str(distance), "weight": 0.5})
    with pytest.raises(ConfigError, match="predicts a grid"):
        finetune(resolve_finetune_config(config))


@pytest.mark.parametrize("content, key", [({"distance": "x", "weight": 0.0}, "weight"),
                                          ({"distance": "x", "weight": 1.0, "members": "all"}, "members"),
                                          ({"distance": "random:", "weight": 1.0}, "distance"),
                                          ({"distance": "x", "weight": 1.0, "images": 0}, "images"),
                                          ({"weight": 1.0, "extra": 2}, "extra")])
def test_bad_content_loss_settings_name_the_key(backbone, coarse, fine, tmp_path, content, key):
    config = grid_config(backbone, coarse, fine, tmp_path / "run", content_loss=content)
    with pytest.raises(ConfigError, match=key):
        resolve_finetune_config(config)


def test_finetuning_with_a_content_loss_logs_it_and_records_it(backbone, coarse, fine, distance, tmp_path):
    content = {"distance": str(distance), "weight": 0.5, "images": 5}
    config = resolve_finetune_config(grid_config(backbone, coarse, fine, tmp_path / "run", log_every=1,
                                                 content_loss=content))
    result = finetune(config)
    meta = json.loads((result.checkpoint / "tail.json").read_text())
    assert meta["content_loss"]["distance"] == str(distance) and meta["content_loss"]["weight"] == 0.5
    assert meta["content_loss"]["channels"] == [["t", 500.0]]
    assert meta["losses"] == {"crps_fair": 1.0, "mse_member": 0.1}
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["content"]) and r["content"] > 0 for r in records)
    plain = finetune(resolve_finetune_config(grid_config(backbone, coarse, fine, tmp_path / "plain")))
    assert json.loads((plain.checkpoint / "tail.json").read_text())["content_loss"] is None
    assert PERIODS["train"][0] in json.dumps(meta["periods"])
