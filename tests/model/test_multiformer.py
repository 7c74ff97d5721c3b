"""The assembled multiformer: shapes, target order, invariances, masking, checkpointing, precision."""

from __future__ import annotations

import pytest
import torch
from conftest import make_config, make_inputs

from atmorep.config import ConfigError
from atmorep.errors import DataError
from atmorep.model import build_model
from atmorep.model.attention import record_attention
from atmorep.numerics.modes import MASKED, VISIBLE

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _model(config, seed: int = 0, dtype: torch.dtype = torch.float64):
    torch.manual_seed(seed)
    return build_model(config).to(dtype).eval()


def test_output_shapes_and_ensemble_statistics(config, inputs) -> None:
    tokens, modes, alpha = inputs
    with torch.no_grad():
        output = _model(config, dtype=torch.float32)(tokens, modes, alpha)
    assert list(output.fields) == ["t", "u"]
    for name, values in (("t", 8), ("u", 32)):
        prediction, m = output.fields[name], int((modes[name] != VISIBLE).sum())
        assert m > 0 and prediction.members.shape == (m, 8, values)
        assert prediction.members.dtype == torch.float32
        torch.testing.assert_close(prediction.mean, prediction.members.mean(1))
        assert float(prediction.members.std(1).min()) > 0  # independent heads give distinct members


def test_targets_in_row_major_order(config, inputs) -> None:
    """Member m belongs to the m-th target of torch.nonzero(modes != 0), through the named stages."""
    model = _model(config)
    tokens, modes, alpha = make_inputs(config, dtype=torch.float64)
    with torch.no_grad():
        guesses, kinds = model.guess(tokens, modes)
        encoded = model.encode(model.embed(guesses, modes, alpha, kinds))
        decoded = model.decode(encoded)
        output = model(tokens, modes, alpha)
    for name in ("t", "u"):
        index = torch.nonzero(modes[name] != VISIBLE)  # [M, 5] (b, l, t, h, w)
        grid = modes[name].shape[1:]
        flat = ((index[:, 1] * grid[1] + index[:, 2]) * grid[2] + index[:, 3]) * grid[3] + index[:, 4]
        states = decoded[name][index[:, 0], flat]  # [M, D]
        guess = guesses[name][tuple(index.T)]  # [M, D_f]
        scale = model.tails[name].scale[index[:, 1], kinds[name][tuple(index.T)].long()][:, None, None]
        with torch.no_grad():
            expected = guess[:, None] + scale * model.tails[name](states)
        torch.testing.assert_close(output.fields[name].members, expected, rtol=0, atol=0)


def test_recording_attention_leaves_the_prediction_unchanged_and_gives_every_map(config) -> None:
    model = _model(config)
    tokens, modes, alpha = make_inputs(config, dtype=torch.float64)
    with torch.no_grad():
        plain = model(tokens, modes, alpha)
        with record_attention(model) as maps:
            recorded = model(tokens, modes, alpha)
        again = model(tokens, modes, alpha)  # the hooks are gone
    for name in plain.fields:
        torch.testing.assert_close(recorded.fields[name].members, plain.fields[name].members, rtol=0, atol=0)
    assert maps and all(len(calls) == 1 for calls in maps.values())
    assert len(again.fields) == len(plain.fields)
    assert {name.split(".")[1] for name in maps} == {"t", "u"}  # every attention module is a field's
    shapes = {f"{name}/{group}": tuple(value.shape) for name, calls in maps.items()
              for group, value in calls[0].weights.items()}
    assert shapes["fields.t.encoder.1.attention/self"] == (2, 4, 64, 64)
    assert shapes["fields.t.encoder.0.attention/u"] == (2, 1, 64, 8)
    assert shapes["fields.u.encoder.0.attention/t"] == (2, 1, 8, 64)
    assert shapes["fields.u.decoder.blocks.1.attention/self"] == (2, 2, 8, 8)
    assert shapes["fields.u.decoder.blocks.0.attention/encoder"] == (2, 2, 8, 8)
    for calls in maps.values():
        for group, value in calls[0].weights.items():
            torch.testing.assert_close(value.sum(-1), torch.ones(value.shape[:-1], dtype=value.dtype))
            assert calls[0].contribution[group].shape == value.shape[::2][:1] + value.shape[2:3]  # [B, Nq]


def _permuted_config(config):
    data = config.model_dump(mode="json")
    data["fields"] = data["fields"][::-1]
    return type(config).model_validate(data)


def test_field_order_does_not_matter(config) -> None:
    model = _model(config)
    other = _model(_permuted_config(config), seed=1)
    other.load_state_dict(model.state_dict())
    tokens, modes, alpha = make_inputs(config, dtype=torch.float64)
    permute = (lambda d: dict(reversed(list(d.items()))))  # noqa: E731
    with torch.no_grad():
        states = model.embed(*model.guess(tokens, modes)[:1], modes, alpha, model.guess(tokens, modes)[1])
        encoded = model.encode(states)
        encoded_other = other.encode(permute(states))
        output = model(tokens, modes, alpha)
        output_other = other(permute(tokens), permute(modes), permute(alpha))
    assert list(output_other.fields) == ["u", "t"]
    for name in ("t", "u"):
        for layer, layer_other in zip(encoded, encoded_other):
            torch.testing.assert_close(layer[name], layer_other[name], rtol=0, atol=1e-12)
        torch.testing.assert_close(output.fields[name].members, output_other.fields[name].members,
                                   rtol=0, atol=1e-12)


@pytest.mark.parametrize("embedding", ["linear", "transformer"])
def test_masked_values_do_not_leak(embedding: str) -> None:
    config = make_config(embedding=embedding)
    model = _model(config)
    tokens, modes, alpha = make_inputs(config, dtype=torch.float64)
    with torch.no_grad():
        reference = model(tokens, modes, alpha)
        changed = {name: torch.where((modes[name] == MASKED)[..., None], 100 * torch.randn_like(v), v)
                   for name, v in tokens.items()}
        output = model(changed, modes, alpha)
        noised = {name: torch.where((modes[name] != VISIBLE)[..., None] & (modes[name] != MASKED)[..., None],
                                    v + 1.0, v) for name, v in tokens.items()}
        control = model(noised, modes, alpha)  # NOISED/COARSENED values are input: they must matter
    for name in reference.fields:
        torch.testing.assert_close(output.fields[name].members, reference.fields[name].members,
                                   rtol=0, atol=0)
        assert not torch.allclose(control.fields[name].members, reference.fields[name].members)


def test_coupling_carries_information_between_fields() -> None:
    """With cross heads, t's prediction depends on u's visible tokens; without, it does not."""
    for cross_heads, coupled in ((1, True), (0, False)):
        config = make_config(cross_heads=cross_heads)
        model = _model(config)
        tokens, modes, alpha = make_inputs(config, dtype=torch.float64)
        moved = {**tokens, "u": tokens["u"] + (modes["u"] == VISIBLE)[..., None].double()}
        with torch.no_grad():
            before, after = model(tokens, modes, alpha), model(moved, modes, alpha)
        change = after.fields["t"].mean - before.fields["t"].mean
        assert bool(change.abs().max() > 1e-6) == coupled


def test_checkpointing_gives_same_outputs_and_gradients() -> None:
    results = []
    for flag in (False, True):
        config = make_config(checkpoint_activations=flag, dropout=0.1)
        model = _model(config).train()
        tokens, modes, alpha = make_inputs(config, dtype=torch.float64)
        torch.manual_seed(5)  # the same dropout masks in both runs
        output = model(tokens, modes, alpha)
        loss = sum((p.members ** 2).mean() for p in output.fields.values())
        loss.backward()
        results.append((output, {k: p.grad.clone() for k, p in model.named_parameters()}))
    (plain, plain_grads), (checked, checked_grads) = results
    for name in plain.fields:
        torch.testing.assert_close(checked.fields[name].members, plain.fields[name].members,
                                   rtol=0, atol=1e-12)
    assert plain_grads.keys() == checked_grads.keys()
    for key, grad in plain_grads.items():
        torch.testing.assert_close(checked_grads[key], grad, rtol=0, atol=1e-12)


def test_tail_stays_float32_under_autocast(config, inputs) -> None:
    model = _model(config, dtype=torch.float32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        tokens, modes, alpha = inputs
        guesses, kinds = model.guess(tokens, modes)
        encoded = model.encode(model.embed(guesses, modes, alpha, kinds))
        output = model(*inputs)
    assert encoded[-1]["t"].dtype == torch.bfloat16  # the trunk runs in the autocast dtype
    assert all(p.members.dtype == torch.float32 for p in output.fields.values())


def test_field_not_predicted_has_no_decoder() -> None:
    config = make_config(fields=[
        {"name": "t", "levels": [850.0, 500.0], "token_size": [2, 2, 2], "coupled_with": ["u"]},
        {"name": "u", "levels": [850.0], "token_size": [2, 4, 4], "predicted": False}])
    model = _model(config)
    assert list(model.tails) == ["t"] and not hasattr(model.fields["u"], "decoder")
    assert model.coupling == {"t": ["u"], "u": []}
    with torch.no_grad():
        output = model(*make_inputs(config, dtype=torch.float64))
    assert list(output.fields) == ["t"]


def test_bad_inputs_raise_data_error(config, inputs) -> None:
    model = _model(config, dtype=torch.float32)
    tokens, modes, alpha = inputs
    with pytest.raises(DataError, match="no entry for field 'u'"):
        model({"t": tokens["t"]}, modes, alpha)
    with pytest.raises(DataError, match=r"tokens\['t'\]"):
        model({**tokens, "t": tokens["t"][..., :4]}, modes, alpha)
    with pytest.raises(DataError, match=r"tokens\['u'\]"):
        model({**tokens, "u": tokens["u"][:1]}, modes, alpha)
    with pytest.raises(DataError, match=r"modes\['t'\]"):
        model(tokens, {**modes, "t": modes["t"].float()}, alpha)
    with pytest.raises(DataError, match=r"alpha\['u'\]"):
        model(tokens, modes, {**alpha, "u": alpha["u"][..., :6]})


def test_bad_model_config_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="model.dim"):
        build_model(make_config(dim=66, heads=4), device="meta")


def test_a_tail_that_outputs_zero_returns_exactly_the_first_guess(config) -> None:
    model = _model(config)
    tokens, modes, alpha = make_inputs(config, dtype=torch.float64)
    with torch.no_grad():
        for tail in model.tails.values():
            tail.weight.zero_()
            tail.bias.zero_()
        output = model(tokens, modes, alpha)
        guesses, _ = model.guess(tokens, modes)
    for name, prediction in output.fields.items():
        target = modes[name] != VISIBLE
        expected = guesses[name][target][:, None].expand_as(prediction.members)
        assert torch.equal(prediction.members, expected)


def test_the_first_guess_reads_only_what_is_given(config) -> None:
    """Hidden values (NaN here) never reach the prediction: masked tokens enter as their first guess."""
    model = _model(config)
    tokens, modes, alpha = make_inputs(config, dtype=torch.float64)
    poisoned = {name: torch.where((modes[name] == 1)[..., None], torch.nan, value)
                for name, value in tokens.items()}
    with torch.no_grad():
        clean, dirty = model(tokens, modes, alpha), model(poisoned, modes, alpha)
    for name in clean.fields:
        torch.testing.assert_close(clean.fields[name].members, dirty.fields[name].members, rtol=0, atol=0)
