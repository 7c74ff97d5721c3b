"""The saved distance model: features, distance properties, round trip, the random control."""

from __future__ import annotations

import json

import pytest
import torch

from atmorep.checkpoint import CheckpointError
from atmorep.distance import load_distance, random_distance
from atmorep.distance.network import EncoderSpec, LagClassifier, ResidualEncoder
from atmorep.distance.saved import META, write_distance
from atmorep.errors import DataError


def _states(model, batch=3, height=4, width=8, seed=0):
    """Physical states near the model's means, ``[B, C, H, W]``."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, len(model.channels), height, width, generator=generator)
    return model.mean.reshape(1, -1, 1, 1) + model.scale.reshape(1, -1, 1, 1) * noise


@pytest.mark.parametrize(("stages", "shape", "expected"), [(2, (12, 20), (6, 10)), (3, (9, 33), (3, 9))])
def test_features_work_on_non_square_inputs(stages, shape, expected):
    spec = EncoderSpec(width=4, stages=stages, blocks=1)
    encoder = ResidualEncoder(2, spec).eval()
    features = encoder(torch.randn(2, 2, *shape))
    assert features.shape == (2, spec.features, *expected)


def test_the_distance_is_zero_for_identical_states_symmetric_and_positive(trained):
    model = load_distance(trained)
    a, b = _states(model, seed=1), _states(model, seed=2)
    assert torch.equal(model.distance(a, a), torch.zeros(3))
    assert torch.allclose(model.distance(a, b), model.distance(b, a))
    assert torch.all(model.distance(a, b) > 0)
    assert model.features(_states(model, height=8, width=16)).shape[2:] == (4, 8)


def test_the_unit_is_the_mean_distance_of_the_calibration_pairs(trained):
    model = load_distance(trained)
    first, second = model.calibration
    with torch.no_grad():
        assert model.distance(first, second).mean().item() == pytest.approx(1.0, rel=1e-5)
        control = random_distance(model, seed=3)
        assert control.distance(first, second).mean().item() == pytest.approx(1.0, rel=1e-5)


def test_the_distance_is_differentiable_in_its_inputs_with_frozen_weights(trained):
    model = load_distance(trained)
    a = _states(model, seed=4).requires_grad_(True)
    model.distance(a, _states(model, seed=5)).sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in model.encoder.parameters())
    assert not model.encoder.training


def test_a_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    classifier = LagClassifier(2, 4, EncoderSpec(width=4, stages=2, blocks=1, head_width=8))
    with torch.no_grad():  # non-trivial batch-norm statistics and weights
        for module in classifier.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    classifier.eval()
    normalisation = {"channels": [{"field": "t", "level": 850.0, "mean": 280.0, "scale": 10.0},
                                  {"field": "u", "level": 500.0, "mean": 5.0, "scale": 8.0}]}
    calibration = (280 + 10 * torch.randn(6, 2, 4, 8), 280 + 10 * torch.randn(6, 2, 4, 8))
    meta = {"channels": ["t@850", "u@500"], "lags": 4, "network": {"width": 4, "stages": 2, "blocks": 1,
                                                                   "head_width": 8}}
    write_distance(tmp_path / "model", classifier, {}, normalisation, calibration, meta)
    model = load_distance(tmp_path)  # the run directory holding model/
    assert model.channels == [("t", 850.0), ("u", 500.0)]
    a, b = 280 + 10 * torch.randn(5, 2, 4, 8), 280 + 10 * torch.randn(5, 2, 4, 8)
    with torch.no_grad():
        expected = classifier(model.normalise(a), model.normalise(b))
        assert torch.equal(model.logits(a, b), expected)
        again = load_distance(tmp_path / "model")
        assert torch.equal(again.distance(a, b), model.distance(a, b))
        assert torch.equal(again.features(a), classifier.encoder(model.normalise(a)))


def test_random_distance_differs_but_has_the_same_shapes(trained):
    model = load_distance(trained)
    control, same = random_distance(model, seed=7), random_distance(model, seed=7)
    a, b = _states(model, seed=8), _states(model, seed=9)
    with torch.no_grad():
        assert control.features(a).shape == model.features(a).shape
        assert control.channels == model.channels and torch.equal(control.scale, model.scale)
        assert not torch.allclose(control.features(a), model.features(a))
        assert not torch.allclose(control.distance(a, b), model.distance(a, b))
        assert torch.equal(control.distance(a, b), same.distance(a, b))
        assert not torch.equal(random_distance(model, seed=8).distance(a, b), control.distance(a, b))
    state = torch.get_rng_state()
    random_distance(model, seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is untouched


def test_wrong_inputs_and_directories_give_one_line_errors(trained, tmp_path):
    model = load_distance(trained)
    with pytest.raises(DataError, match=r"expected states \[B, 2, H, W\] \(channels t@850, u@500"):
        model.distance(torch.zeros(2, 3, 4, 8), torch.zeros(2, 3, 4, 8))
    with pytest.raises(DataError, match="differ in shape"):
        model.distance(_states(model), _states(model, width=16))
    with pytest.raises(CheckpointError, match="neither a distance model nor a run directory"):
        load_distance(tmp_path)
    (tmp_path / META).write_text(json.dumps({"format": "atmorep-checkpoint"}))
    with pytest.raises(CheckpointError, match="does not describe a distance model"):
        load_distance(tmp_path)
