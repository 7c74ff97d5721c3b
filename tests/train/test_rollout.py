"""Training through rollouts: each pass is fed the previous passes' predictions of one member per sample."""

from __future__ import annotations

import math

import pytest
import torch

from atmorep.batch import BatchError
from atmorep.data.dataset import BoxDataset
from atmorep.model.multiformer import build_model
from atmorep.numerics.modes import VISIBLE
from atmorep.numerics.tokens import tokenise
from atmorep.runtime import make_runtime
from atmorep.train.checks import with_levels
from atmorep.train.loop import train
from atmorep.train.rollout import rollout_box, rollout_shift, rollout_step
from atmorep.train.step import masking_generator, train_step
from tests.train.conftest import make_config

RUNTIME = make_runtime("cpu", "float32")


def _setup(stores, tmp_path, steps: int, backprop: int | None = None):
    config = make_config(stores, tmp_path / "run", tasks={"forecast": 1.0},
                         rollout={"steps": steps, "backprop_steps": backprop})
    data = config.data.model_copy(update={"box": rollout_box(config)})
    dataset = BoxDataset(config.data.train, config.fields, data)
    config = with_levels(config, dataset.levels)
    torch.manual_seed(0)
    return config, build_model(config), dataset.make_batch(0, 0)


class Recorder(torch.nn.Module):
    """The model, keeping every pass's input tokens and output."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, tokens, modes, alpha, **options):
        output = self.model(tokens, modes, alpha, **options)
        self.calls.append((tokens, modes, output))
        return output


def test_the_sampled_box_holds_every_pass():
    config = make_config({"train": "a.zarr", "validation": "b.zarr"}, "run", rollout={"steps": 4})
    assert rollout_shift(config) == 2  # one time token of 2 steps
    assert rollout_box(config).time == 6 + 3 * 2
    assert rollout_box(make_config({"train": "a.zarr", "validation": "b.zarr"}, "run")).time == 6


def test_one_pass_is_the_forecast_training_step(stores, tmp_path):
    config, model, batch = _setup(stores, tmp_path, steps=1)
    generator = masking_generator(0, 0, 0)
    rolled, components, tokens, targets = rollout_step(model, batch, config, generator, RUNTIME)
    single = train_step(model, batch, config, masking_generator(0, 0, 0), RUNTIME)
    assert single.task == "forecast"
    assert rolled.item() == pytest.approx(single.loss.item(), rel=1e-6)
    assert tokens == single.tokens and targets == single.targets
    assert components.keys() == single.components.keys()


def test_each_pass_is_fed_one_members_own_predictions(stores, tmp_path):
    config, model, batch = _setup(stores, tmp_path, steps=3)
    recorder = Recorder(model)
    loss, _, _, _ = rollout_step(recorder, batch, config, masking_generator(0, 0, 1), RUNTIME)
    assert len(recorder.calls) == 3 and math.isfinite(loss.item())
    shift, size = rollout_shift(config), config.field("t").token_size
    followed = None
    for n in (1, 2):
        tokens, modes, _ = recorder.calls[n]
        _, previous_modes, previous = recorder.calls[n - 1]
        for name in ("t", "u"):
            b, levels, nt, nh, nw = modes[name].shape
            assert (modes[name][:, :, -1] != VISIBLE).all() and (modes[name][:, :, :-1] == VISIBLE).all()
            members = previous.fields[name].members.reshape(b, levels, 1, nh, nw, -1, tokens[name].shape[-1])
            fed = tokens[name][:, :, -2:-1]  # [B, L, 1, nH, nW, D]: the step the previous pass predicted
            match = [[bool(torch.equal(fed[i], members[i, :, :, :, :, e])) for e in range(members.shape[5])]
                     for i in range(b)]
            chosen = [row.index(True) for row in match]  # every sample is fed exactly one member ...
            assert all(sum(row) == 1 for row in match)
            followed = chosen if followed is None else followed
            assert chosen == followed  # ... the same one in every pass and field
            # the steps before: true values of the long box, moved on by one pass per pass
            truth = tokenise(batch.fields[name][:, :, n * shift: n * shift + 6], size)
            if n == 1:
                assert torch.equal(tokens[name][:, :, : nt - 2], truth[:, :, : nt - 2])
    assert len(set(followed)) >= 1


@pytest.mark.parametrize("backprop, graph", [(None, True), (1, False)])
def test_gradients_flow_back_through_the_passes_unless_truncated(stores, tmp_path, backprop, graph):
    config, model, batch = _setup(stores, tmp_path, steps=2, backprop=backprop)
    recorder = Recorder(model)
    loss, _, _, _ = rollout_step(recorder, batch, config, masking_generator(0, 0, 0), RUNTIME)
    assert recorder.calls[1][0]["t"].requires_grad is graph  # the fed-back step carries the graph or not
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_every_pass_is_scored(stores, tmp_path):
    config, model, batch = _setup(stores, tmp_path, steps=2)
    one = config.model_copy(update={"train": config.train.model_copy(
        update={"rollout": config.train.rollout.model_copy(update={"steps": 1})})})
    total, _, tokens, targets = rollout_step(model, batch, config, masking_generator(0, 0, 0), RUNTIME)
    generator = masking_generator(0, 0, 0)
    first, _, first_tokens, first_targets = rollout_step(model, batch, one, generator, RUNTIME)
    assert (tokens, targets) == (2 * first_tokens, 2 * first_targets)
    assert total.item() != pytest.approx(first.item())  # the second pass counts


def test_a_rollout_run_trains_and_mixes_other_tasks(stores, tmp_path):
    config = make_config(stores, tmp_path / "run", max_steps=3, tasks={"forecast": 0.5, "bert": 0.5},
                         rollout={"steps": 2})
    result = train(config)
    assert result.step == 3 and all(math.isfinite(loss) for loss in result.losses)


def test_a_time_window_outside_the_batch_is_refused(stores, tmp_path):
    _, _, batch = _setup(stores, tmp_path, steps=2)
    assert batch.time_window(2, 6).box_shape[0] == 6
    assert torch.equal(batch.time_window(2, 6).fields["t"], batch.fields["t"][:, :, 2:8])
    with pytest.raises(BatchError, match="outside the batch's 8 steps"):
        batch.time_window(3, 6)
