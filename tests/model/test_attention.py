"""Attention: the fused (SDPA) and explicit paths agree; weights are proper distributions."""

from __future__ import annotations

import pytest
import torch

from atmorep.model.attention import SELF, GroupedAttention, explicit_attention, fused_attention

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n_query", "n_key"), [(7, 7), (5, 11)])
def test_fused_matches_explicit(dtype: torch.dtype, n_query: int, n_key: int) -> None:
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, n, 16, generator=generator, dtype=dtype) for n in (n_query, n_key, n_key))
    out, weights = explicit_attention(q, k, v)
    torch.testing.assert_close(fused_attention(q, k, v), out, rtol=0, atol=TOLERANCE[dtype])
    assert weights.shape == (2, 3, n_query, n_key)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, n_query, dtype=dtype))


def test_equal_keys_give_the_mean_of_the_values() -> None:
    """Analytic case: identical keys make every weight 1 / Nk, so the output is the mean value."""
    q = torch.randn(1, 2, 4, 8, dtype=torch.float64)
    k = torch.ones(1, 2, 6, 8, dtype=torch.float64)
    v = torch.randn(1, 2, 6, 8, dtype=torch.float64)
    out, weights = explicit_attention(q, k, v)
    torch.testing.assert_close(weights, torch.full_like(weights, 1 / 6))
    expected = v.mean(dim=2, keepdim=True).expand_as(out)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(fused_attention(q, k, v), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_grouped_attention_paths_agree(dtype: torch.dtype, qk_norm: bool) -> None:
    torch.manual_seed(0)
    layer = GroupedAttention(dim=32, head_dim=8, groups={SELF: 4, "u": 1, "v": 2}, qk_norm=qk_norm).to(dtype)
    x = torch.randn(2, 9, 32, dtype=dtype)
    sources = {"u": torch.randn(2, 5, 32, dtype=dtype), "v": torch.randn(2, 3, 32, dtype=dtype)}
    fused = layer(x, sources)
    weights = layer.weights(x, sources)
    groups = layer._per_group(x, sources)
    explicit = torch.cat([explicit_attention(*groups[name])[0] for name in groups], dim=1)  # [B, H, N, d]
    explicit = layer.out(explicit.transpose(1, 2).reshape(2, 9, -1))
    torch.testing.assert_close(fused, explicit, rtol=0, atol=TOLERANCE[dtype])
    assert {name: tuple(w.shape) for name, w in weights.items()} == {
        SELF: (2, 4, 9, 9), "u": (2, 1, 9, 5), "v": (2, 2, 9, 3)}
    assert fused.shape == (2, 9, 32)


def test_group_reads_only_its_source() -> None:
    """Changing one source changes the output only through that group's heads."""
    torch.manual_seed(0)
    layer = GroupedAttention(dim=16, head_dim=4, groups={SELF: 2, "u": 1, "v": 0})
    assert layer.groups == {SELF: 2, "u": 1}  # empty groups are dropped
    x, u = torch.randn(1, 4, 16), torch.randn(1, 3, 16)
    base = layer(x, {"u": u})
    moved = layer(x, {"u": u + 1.0})
    assert not torch.allclose(base, moved)
    with torch.no_grad():
        layer.out.weight[:, 8:] = 0  # silence the "u" heads (columns 8..11 of the concatenation)
    base = layer(x, {"u": u})
    moved = layer(x, {"u": u + 1.0})
    torch.testing.assert_close(base, moved, rtol=0, atol=0)


def test_a_groups_contribution_is_the_size_of_its_share_of_the_output() -> None:
    torch.manual_seed(0)
    x, u = torch.randn(2, 5, 16, dtype=torch.float64), torch.randn(2, 3, 16, dtype=torch.float64)
    alone = GroupedAttention(dim=16, head_dim=4, groups={SELF: 2}).double()
    _, contribution = alone.inspect(x)
    torch.testing.assert_close(contribution[SELF], (alone(x) - alone.out.bias).norm(dim=-1))
    layer = GroupedAttention(dim=16, head_dim=4, groups={SELF: 2, "u": 1}).double()
    weights, contribution = layer.inspect(x, {"u": u})
    assert (contribution["u"] > 0).all() and weights["u"].shape == (2, 1, 5, 3)
    with torch.no_grad():
        layer.out.weight[:, 8:] = 0  # silence the "u" head
    assert torch.equal(layer.inspect(x, {"u": u})[1]["u"], torch.zeros(2, 5, dtype=torch.float64))
