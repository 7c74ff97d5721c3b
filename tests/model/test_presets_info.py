"""Presets on the meta device: shapes of every stage, parameter counts, the model description."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_config, make_inputs
from hypothesis import given
from hypothesis import strategies as st

from atmorep.config import resolve_config
from atmorep.model import build_model, count_parameters, describe_model
from atmorep.model.decoder import encoder_layer_for_block
from atmorep.presets import PRESETS

PAPER_LEVELS = [500.0, 700.0, 850.0, 925.0, 1000.0]


def _paper_like(preset: str = "paper"):
    """Five fields of five levels on the paper's box, each coupled with two others."""
    fields = [
        {"name": "vo", "levels": PAPER_LEVELS, "token_size": [3, 9, 9], "coupled_with": ["d", "t"]},
        {"name": "d", "levels": PAPER_LEVELS, "token_size": [3, 9, 9], "coupled_with": ["vo", "t"]},
        {"name": "t", "levels": PAPER_LEVELS, "token_size": [3, 27, 27], "coupled_with": ["vo", "d"]},
        {"name": "q", "levels": PAPER_LEVELS, "token_size": [3, 9, 9], "coupled_with": ["vo", "d"]},
        {"name": "z", "levels": PAPER_LEVELS, "token_size": [3, 18, 18], "coupled_with": ["t", "vo"]},
    ]
    return resolve_config({"fields": fields, "data": {"box": {"time": 36, "latitude": 54, "longitude": 108}},
                           "model": {"preset": preset}})


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_trunk_shapes_on_meta_device(preset: str) -> None:
    """Embed, encode and decode on the meta device give [B, N_f, D] for every field and layer."""
    config = make_config(preset)
    model = build_model(config, device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())
    tokens, modes, alpha = (
        {k: v.to("meta") for k, v in part.items()} for part in make_inputs(config))
    kinds = {name: torch.zeros_like(mode) for name, mode in modes.items()}  # the kinds of the first guess
    encoded = model.encode(model.embed(tokens, modes, alpha, kinds))
    decoded = model.decode(encoded)
    dim = PRESETS[preset]["dim"]
    assert len(encoded) == config.model.encoder_layers
    assert {name: tuple(x.shape) for name, x in encoded[-1].items()} == {"t": (2, 64, dim), "u": (2, 8, dim)}
    assert {name: tuple(x.shape) for name, x in decoded.items()} == {"t": (2, 64, dim), "u": (2, 8, dim)}
    tail = model.tails["t"]
    assert tuple(tail.weight.shape) == (config.model.ensemble_members, dim, 8)


def test_tiny_forward(config, inputs) -> None:
    with torch.no_grad():
        output = build_model(config)(*inputs)
    assert output.fields["u"].members.shape[1:] == (8, 32)


def test_parameter_counts_match_the_built_model(config) -> None:
    counts = count_parameters(config)
    torch.manual_seed(0)
    model = build_model(config)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["total"] == sum(counts[g] for g in ("embedding", "encoder", "decoder", "tail"))
    assert counts["total"] == counts["field/t"] + counts["field/u"]  # no parameter is shared
    dim, values, members = 64, {"t": 8, "u": 32}, 8
    assert counts["tail"] == sum(members * (dim + 1) * v for v in values.values())


def test_paper_preset_size() -> None:
    """Paper: about 0.7e9 parameters per field, 3.6e9 for five fields (the paper reports ~3.5e9)."""
    counts = count_parameters(_paper_like())
    assert 3.0e9 < counts["total"] < 4.5e9
    for name in ("vo", "d", "t", "q", "z"):
        assert 0.5e9 < counts[f"field/{name}"] < 1.0e9
    dim = 2048
    block = 4 * dim * dim  # attention (with one cross head per coupled field) is about 4.5 D^2
    assert counts["encoder"] == pytest.approx(5 * 10 * (block + block // 8 + 4 * dim * dim), rel=0.01)


def test_describe_model_lists_fields_and_counts() -> None:
    config = _paper_like("base")
    text = describe_model(config)
    counts = count_parameters(config)
    assert f"{counts['total']:,d}" in text
    expected = (("vo", (12, 6, 12), 5 * 864), ("t", (12, 2, 4), 5 * 96), ("z", (12, 3, 6), 5 * 216))
    for name, grid, n in expected:
        line = next(row for row in text.splitlines() if row.startswith(f"{name} "))
        values = math.prod(config.field(name).token_size)
        assert str(grid) in line and f" {n} " in line and f" {values} " in line


def test_encoder_layer_mapping() -> None:
    assert [encoder_layer_for_block(i, 4, 4) for i in range(4)] == [3, 2, 1, 0]
    assert [encoder_layer_for_block(i, 2, 4) for i in range(4)] == [1, 1, 0, 0]
    assert [encoder_layer_for_block(i, 4, 2) for i in range(2)] == [3, 0]
    assert [encoder_layer_for_block(i, 5, 3) for i in range(3)] == [4, 2, 0]
    assert encoder_layer_for_block(0, 3, 1) == 2
    with pytest.raises(ValueError):
        encoder_layer_for_block(2, 3, 2)


@given(st.integers(1, 12), st.integers(1, 12))
def test_encoder_layer_mapping_reverses_the_encoder(encoder_layers: int, decoder_layers: int) -> None:
    layers = [encoder_layer_for_block(i, encoder_layers, decoder_layers) for i in range(decoder_layers)]
    assert layers[0] == encoder_layers - 1
    if decoder_layers > 1:
        step = math.ceil((encoder_layers - 1) / (decoder_layers - 1))  # evenly spaced, rounded
        assert all(0 <= a - b <= step for a, b in zip(layers, layers[1:]))
        assert layers[-1] == 0
    if decoder_layers >= encoder_layers:
        assert set(layers) == set(range(encoder_layers))  # no encoder layer is skipped
