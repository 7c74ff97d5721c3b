"""One training step and the evaluation of a batch: masking streams, loss composition, climatology."""

from __future__ import annotations

import math

import pytest
import torch

from atmorep.data.dataset import BoxDataset
from atmorep.model.multiformer import build_model
from atmorep.model.output import FieldPrediction, ModelOutput
from atmorep.runtime import make_runtime
from atmorep.tasks.masking import MaskedField
from atmorep.train.checks import with_levels
from atmorep.train.step import evaluate_batch, field_losses, masking_generator, train_step
from tests.train.conftest import make_config


@pytest.fixture
def setup(stores, tmp_path):
    config = make_config(stores, tmp_path / "run", latitude_weighting=False)
    dataset = BoxDataset(config.data.train, config.fields, config.data)
    config = with_levels(config, dataset.levels)
    torch.manual_seed(0)
    return config, build_model(config), dataset.make_batch(0, 0)


def test_masking_generators_depend_only_on_seed_rank_step_and_micro_batch():
    def draw(*key):
        return torch.rand(4, generator=masking_generator(*key)).tolist()

    assert draw(0, 0, 5, 0) == draw(0, 0, 5, 0)
    keys = [(0, 0, 5, 0), (1, 0, 5, 0), (0, 1, 5, 0), (0, 0, 6, 0), (0, 0, 5, 1)]
    assert len({tuple(draw(*key)) for key in keys}) == len(keys)


def test_train_step_combines_field_and_loss_weights(setup):
    config, model, batch = setup
    result = train_step(model, batch, config, masking_generator(0, 0, 0), make_runtime("cpu", "float32"))
    assert result.task in config.train.tasks and math.isfinite(result.loss.item())
    assert set(result.components) == {f"{f}/{loss}" for f in ("t", "u") for loss in config.train.losses}
    expected = sum(config.field(f).loss_weight * weight * result.components[f"{f}/{loss}"]
                   for f in ("t", "u") for loss, weight in config.train.losses.items())
    assert result.loss.item() == pytest.approx(float(expected), rel=1e-6)
    assert result.tokens == batch.batch_size * 2 * (2 * 3 * 2 * 2)  # B * fields * (L nT nH nW)
    result.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bfloat16_autocast_covers_the_trunk_only(setup):
    config, model, batch = setup
    runtime = make_runtime("cpu", "bfloat16")
    result = train_step(model, batch, config, masking_generator(0, 0, 0), runtime)
    assert runtime.dtype == torch.bfloat16 and result.loss.dtype == torch.float32
    assert math.isfinite(result.loss.item())


def test_latitude_weights_follow_the_token_centre_latitudes():
    target = torch.tensor([[1.0], [3.0]])  # two target tokens, one value each
    modes = torch.tensor([[[[[1, 1]]]]], dtype=torch.int8)  # [B, L, nT, nH, nW] = [1, 1, 1, 1, 2]
    clean = target.reshape(1, 1, 1, 1, 2, 1)  # [M, D] -> [B, L, nT, nH, nW, D]
    masked = {"t": MaskedField(tokens=torch.zeros_like(clean), modes=modes, target=clean)}
    alpha = torch.zeros(1, 1, 1, 1, 2, 7)
    alpha[..., 0, 4], alpha[..., 1, 4] = 0.0, 60.0  # latitude column
    output = ModelOutput({"t": FieldPrediction.from_members(torch.zeros(2, 3, 1))})
    weights = field_losses(output, masked, {"t": alpha}, latitude_weighting=True)["t"].weights
    assert weights.tolist() == pytest.approx([4 / 3, 2 / 3])  # cos 0 : cos 60 = 2 : 1, mean 1
    assert field_losses(output, masked, {"t": alpha}, latitude_weighting=False)["t"].weights is None


def test_evaluation_is_fixed_and_climatology_is_the_mean_square_of_the_targets(setup):
    config, model, batch = setup
    model.eval()
    runtime = make_runtime("cpu", "float32")
    first = evaluate_batch(model, batch, config, runtime, index=0)
    assert first == evaluate_batch(model, batch, config, runtime, index=0)
    assert first != evaluate_batch(model, batch, config, runtime, index=1)  # other masks for bert
    for field in ("t", "u"):  # forecast masks the last time token: the last 2 time steps of the box
        last = batch.fields[field][:, :, -2:].double()
        climatology = first[f"forecast/{field}/mse_climatology"]
        assert climatology == pytest.approx(float(last.square().mean()), rel=1e-5)
        assert first[f"forecast/{field}/mse"] >= 0 and first[f"forecast/{field}/crps"] >= 0
