"""Masking: token choice by index arithmetic, task semantics, corruption modes, determinism."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from atmorep.config import FieldConfig, MaskingConfig
from atmorep.numerics.modes import COARSENED, MASKED, NOISED, VISIBLE
from atmorep.tasks import TASKS, MaskingError, draw_task, make_task
from atmorep.tasks.bert import BertTask
from atmorep.tasks.draws import TokenShuffle
from atmorep.tasks.infill import InfillTask
from atmorep.tasks.masking import (
    MaskedField,
    apply_target_mask,
    coarsen_tokens,
    mask_field,
    mask_fields,
)

FAST = settings(max_examples=25, deadline=None)

grids = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4),
                  st.integers(1, 4))  # (B, L, nT, nH, nW)
ratio_pairs = st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)).map(sorted)


def make_field(name: str = "t", token_size=(1, 2, 2), predicted: bool = True, **masking) -> FieldConfig:
    masking_config = MaskingConfig(**masking)
    return FieldConfig(name=name, token_size=token_size, predicted=predicted, masking=masking_config)


def random_tokens(grid, token_size=(1, 2, 2), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*grid, math.prod(token_size), generator=g)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------- shuffle and bert counts


@FAST
@given(grid=grids, ratios=ratio_pairs, seed=st.integers(0, 2**31))
def test_bert_chooses_round_r_n_tokens_per_sample(grid, ratios, seed):
    low, high = ratios
    field = make_field(min_ratio=low, max_ratio=high)
    draw = BertTask().draw(grid, generator(seed), field)
    n = math.prod(grid[1:])
    assert ((draw.ratios >= low) & (draw.ratios <= high)).all()
    assert torch.equal(draw.counts, torch.round(draw.ratios * n).long())
    assert ((draw.counts >= round(low * n)) & (draw.counts <= round(high * n))).all()
    assert torch.equal(draw.chosen.reshape(grid[0], n).sum(dim=1), draw.counts)


@FAST
@given(grid=grids, ratios=ratio_pairs, seed=st.integers(0, 2**31))
def test_chosen_tokens_are_the_first_of_a_permutation(grid, ratios, seed):
    draw = BertTask().draw(grid, generator(seed), make_field(min_ratio=ratios[0], max_ratio=ratios[1]))
    b, n = grid[0], math.prod(grid[1:])
    order, restore = draw.shuffle.order, draw.shuffle.restore
    assert torch.equal(order.sort(dim=1).values, torch.arange(n).expand(b, n))  # a permutation
    chosen = draw.chosen.reshape(b, n)  # [B, L, nT, nH, nW] -> [B, N]
    for sample in range(b):
        count = int(draw.counts[sample])
        first = order[sample, :count].sort().values
        assert torch.equal(first, chosen[sample].nonzero().flatten())  # no token lost or duplicated
        rest = order[sample, count:].sort().values
        assert torch.equal(rest, (~chosen[sample]).nonzero().flatten())  # the complement
        assert torch.equal(restore[sample] < count, chosen[sample])  # position in the shuffle < count


@FAST
@given(batch=st.integers(1, 4), n=st.integers(1, 50), width=st.integers(1, 3), seed=st.integers(0, 2**31))
def test_restore_indices_invert_the_shuffle(batch, n, width, seed):
    shuffle = TokenShuffle.draw(batch, n, generator(seed))
    values = torch.randn(batch, n, width, generator=generator(seed + 1))
    assert torch.equal(shuffle.unshuffle(shuffle.shuffle(values)), values)
    assert torch.equal(shuffle.shuffle(shuffle.unshuffle(values)), values)
    assert torch.equal(shuffle.order.gather(1, shuffle.restore), torch.arange(n).expand(batch, n))


# ------------------------------------------------------------------------------- corruption engine


@FAST
@given(grid=grids, ratios=ratio_pairs, seed=st.integers(0, 2**31))
def test_bert_visible_tokens_unchanged_and_masked_zero(grid, ratios, seed):
    field = make_field(min_ratio=ratios[0], max_ratio=ratios[1], rate_mask=1, rate_noise=1, rate_coarsen=1)
    tokens = random_tokens(grid, seed=seed)
    masked = mask_field(tokens, field, BertTask(), generator(seed))
    visible = masked.modes == VISIBLE
    assert masked.modes.dtype == torch.int8 and masked.modes.shape == grid
    assert torch.equal(masked.tokens[visible], tokens[visible])  # bit-identical
    assert (masked.tokens[masked.modes == MASKED] == 0).all()
    assert torch.equal(masked.target, tokens)
    assert torch.equal(masked.target_mask, masked.modes != VISIBLE)
    noised = masked.modes == NOISED
    assert not torch.equal(masked.tokens[noised], tokens[noised]) or not noised.any()


def test_modes_follow_the_rates():
    field = make_field(min_ratio=1.0, max_ratio=1.0, rate_mask=0.6, rate_noise=0.3, rate_coarsen=0.1)
    masked = mask_field(random_tokens((4, 2, 5, 20, 20)), field, BertTask(), generator(3))
    modes = masked.modes.flatten()
    n = modes.numel()
    assert int((modes == VISIBLE).sum()) == 0
    for mode, p in ((MASKED, 0.6), (NOISED, 0.3), (COARSENED, 0.1)):
        assert abs(int((modes == mode).sum()) - p * n) < 4 * math.sqrt(n * p * (1 - p))


def test_zero_rates_never_drawn():
    field = make_field(min_ratio=0.5, max_ratio=0.9, rate_mask=0.0, rate_noise=0.0, rate_coarsen=1.0)
    masked = mask_field(random_tokens((3, 2, 3, 4, 4)), field, BertTask(), generator(1))
    assert set(masked.modes.unique().tolist()) == {VISIBLE, COARSENED}


def test_noise_blend_has_the_expected_spread():
    # x = 0: the input is a * noise_std * eps with a ~ U[0, 1], so its variance is noise_std^2 / 3
    field = make_field(min_ratio=1.0, max_ratio=1.0, rate_mask=0, rate_noise=1, rate_coarsen=0, noise_std=2.0)
    tokens = torch.zeros(2, 1, 4, 20, 20, 4)
    masked = mask_field(tokens, field, BertTask(), generator(5))
    assert (masked.modes == NOISED).all()
    assert masked.tokens.var().item() == pytest.approx(4.0 / 3.0, rel=0.05)
    per_token_std = masked.tokens.std(dim=-1).flatten()
    assert per_token_std.max() > 3 * per_token_std.min()  # the blend varies from token to token


def test_targets_in_row_major_order():
    field = make_field(min_ratio=0.3, max_ratio=0.7)
    tokens = random_tokens((2, 2, 3, 3, 3))
    masked = mask_field(tokens, field, BertTask(), generator(2))
    index = masked.target_mask.nonzero()  # [M, 5] row-major
    expected = torch.stack([tokens[tuple(row)] for row in index.tolist()])
    assert torch.equal(masked.targets(), expected)
    assert torch.equal(tokens[apply_target_mask(masked.modes)], expected)


# ------------------------------------------------------------------------------------- coarsening


def test_checkerboard_becomes_constant_blocks():
    board = (torch.arange(4)[:, None] + torch.arange(4)[None, :]) % 2  # [4, 4] of 0 and 1
    token = board.to(torch.float32).reshape(1, 16) * 3.0  # one token of size (1, 4, 4)
    coarse = coarsen_tokens(token, (1, 4, 4), 2)
    assert torch.allclose(coarse, torch.full((1, 16), 1.5))  # each 2x2 block averages to 1.5
    stripes = torch.arange(4.0).repeat_interleave(2)[:, None].expand(8, 8)  # [8, 8], rows 0,0,1,1,...
    coarse = coarsen_tokens(stripes.reshape(1, 64), (1, 8, 8), 4).reshape(8, 8)
    assert torch.equal(coarse[:4], torch.full((4, 8), 0.5))
    assert torch.equal(coarse[4:], torch.full((4, 8), 2.5))


@FAST
@given(tt=st.integers(1, 3), th=st.integers(1, 6), tw=st.integers(1, 6), factor=st.integers(2, 4),
       seed=st.integers(0, 2**31))
def test_coarsening_keeps_means_and_makes_blocks_constant(tt, th, tw, factor, seed):
    values = torch.randn(3, tt * th * tw, generator=generator(seed), dtype=torch.float64)
    coarse = coarsen_tokens(values, (tt, th, tw), factor).reshape(3, tt, th, tw)  # [M, D] -> [M, tt, th, tw]
    original = values.reshape(3, tt, th, tw)
    assert torch.allclose(coarse.mean(dim=(2, 3)), original.mean(dim=(2, 3)))  # per time step mean
    bh = factor if th % factor == 0 else th
    bw = factor if tw % factor == 0 else tw
    blocks = coarse.reshape(3, tt, th // bh, bh, tw // bw, bw)
    assert torch.allclose(blocks, blocks.mean(dim=(3, 5), keepdim=True).expand_as(blocks))
    assert torch.allclose(coarsen_tokens(coarse.reshape(3, -1), (tt, th, tw), factor), coarse.reshape(3, -1))


def test_coarsened_tokens_in_the_engine_lose_resolution():
    field = make_field(token_size=(1, 4, 4), min_ratio=1, max_ratio=1, rate_mask=0, rate_noise=0,
                       rate_coarsen=1, coarsen_factor=2)
    tokens = random_tokens((2, 1, 2, 2, 2), token_size=(1, 4, 4))
    masked = mask_field(tokens, field, BertTask(), generator(0))
    expected = coarsen_tokens(tokens.reshape(-1, 16), (1, 4, 4), 2)  # [B*L*nT*nH*nW, D]
    assert torch.equal(masked.tokens, expected.reshape(tokens.shape))
    assert not torch.allclose(masked.tokens, tokens)


# ----------------------------------------------------------------------------------------- tasks


@FAST
@given(grid=grids.filter(lambda g: g[2] >= 2), data=st.data())
def test_forecast_masks_exactly_the_last_time_tokens(grid, data):
    k = data.draw(st.integers(1, grid[2] - 1))
    out = mask_fields({"t": random_tokens(grid)}, [make_field()], "forecast", generator(0), forecast_tokens=k)
    expected = torch.zeros(grid, dtype=torch.bool)
    expected[:, :, grid[2] - k:] = True
    assert torch.equal(out["t"].target_mask, expected)
    assert (out["t"].modes[expected] == MASKED).all()


@FAST
@given(grid=grids.filter(lambda g: g[2] >= 3))
def test_interpolate_masks_the_middle_time_tokens(grid):
    out = mask_fields({"t": random_tokens(grid)}, [make_field()], "interpolate", generator(0))
    middle = out["t"].target_mask.any(dim=(0, 1, 3, 4)).nonzero().flatten().tolist()
    assert middle == list(range(1, grid[2] - 1))
    assert out["t"].target_mask[:, :, 1:-1].all()
    chosen = mask_fields({"t": random_tokens(grid)}, [make_field()], "interpolate", generator(0),
                         time_tokens=[1])["t"].target_mask
    assert chosen[:, :, 1].all() and int(chosen.sum()) == math.prod(grid) // grid[2]


@FAST
@given(grid=grids, seed=st.integers(0, 2**31))
def test_infill_masks_one_contiguous_rectangle(grid, seed):
    out = mask_fields({"t": random_tokens(grid)}, [make_field()], "infill", generator(seed))
    target = out["t"].target_mask
    area = target[:, 0, 0]  # [B, nH, nW]
    assert torch.equal(target, area[:, None, None].expand(grid))  # the same at every level and time
    for sample in area:
        rows = sample.any(dim=1).nonzero().flatten()
        cols = sample.any(dim=0).nonzero().flatten()
        assert len(rows) >= 1 and len(cols) >= 1
        box = torch.zeros_like(sample)
        box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
        assert torch.equal(sample, box)  # the marked cells fill their bounding box
        assert len(rows) <= max(1, round(0.5 * grid[3])) and len(cols) <= max(1, round(0.5 * grid[4]))


def test_infill_with_a_given_mask():
    region = torch.zeros(4, 5, dtype=torch.bool)
    region[1:3, 2:4] = True
    target = mask_fields({"t": random_tokens((2, 2, 3, 4, 5))}, [make_field()], "infill", generator(0),
                         mask=region)["t"].target_mask
    assert torch.equal(target, region.expand(2, 2, 3, 4, 5))
    with pytest.raises(MaskingError, match="infill"):
        mask_fields({"t": random_tokens((2, 2, 3, 4, 5))}, [make_field()], "infill", generator(0),
                    mask=torch.ones(3, 3, dtype=torch.bool))


def test_reconstruct_fixed_ratio_masked_only():
    grid = (3, 2, 4, 5, 5)
    out = mask_fields({"t": random_tokens(grid)}, [make_field()], "reconstruct", generator(0), ratio=0.3)["t"]
    per_sample = out.target_mask.reshape(3, -1).sum(dim=1)  # [B, L, nT, nH, nW] -> [B, N]
    assert per_sample.tolist() == [round(0.3 * 200)] * 3
    assert set(out.modes.unique().tolist()) == {VISIBLE, MASKED}


def test_downscale_coarsens_every_token():
    out = mask_fields({"t": random_tokens((1, 1, 2, 2, 2))}, [make_field()], "downscale", generator(0))["t"]
    assert (out.modes == COARSENED).all()


@pytest.mark.parametrize("task", sorted(TASKS))
def test_same_seed_same_masking_and_other_fields_untouched(task):
    fields = [make_field("t", min_ratio=0.2, max_ratio=0.8, rate_mask=1, rate_noise=1, rate_coarsen=1),
              make_field("z", token_size=(1, 2, 2), predicted=False)]
    tokens = {"t": random_tokens((2, 2, 4, 4, 4), seed=1), "z": random_tokens((2, 1, 4, 4, 4), seed=2)}
    guide = {"t": random_tokens((2, 2, 4, 4, 4), seed=3)}  # another model's values (model correction)
    first = mask_fields(tokens, fields, task, generator(7), guide=guide)
    second = mask_fields(tokens, fields, task, generator(7), guide=guide)
    for name in tokens:
        for attribute in ("tokens", "modes", "target"):
            assert torch.equal(getattr(first[name], attribute), getattr(second[name], attribute))
    assert first["t"].target_mask.any()
    assert not first["z"].target_mask.any() and torch.equal(first["z"].tokens, tokens["z"])
    assert list(first) == ["t", "z"]


def test_different_seeds_differ():
    fields, tokens = [make_field()], {"t": random_tokens((2, 2, 4, 4, 4))}
    first = mask_fields(tokens, fields, "bert", generator(1))["t"].modes
    assert not torch.equal(first, mask_fields(tokens, fields, "bert", generator(2))["t"].modes)


def test_mask_fields_accepts_a_task_object():
    tokens = {"t": random_tokens((1, 1, 2, 4, 4))}
    out = mask_fields(tokens, [make_field()], InfillTask(regions=2), generator(0))
    assert isinstance(out["t"], MaskedField) and out["t"].target_mask.any()


# ------------------------------------------------------------------------------ mixture and errors


def test_draw_task_follows_the_weights():
    weights = {"bert": 0.5, "forecast": 0.3, "interpolate": 0.0, "infill": 0.2}
    g = generator(11)
    draws = [draw_task(weights, g) for _ in range(2000)]
    for name, weight in weights.items():
        assert abs(draws.count(name) / 2000 - weight) < 0.04
    again = generator(11)
    assert draws[:20] == [draw_task(weights, again) for _ in range(20)]  # reproducible


def test_options_of_other_tasks_are_ignored_unknown_ones_raise():
    assert isinstance(make_task("bert", forecast_tokens=2), BertTask)
    with pytest.raises(MaskingError, match="forcast_tokens"):
        make_task("forecast", forcast_tokens=2)
    with pytest.raises(MaskingError, match="unknown masking task 'bart'"):
        make_task("bart")
    with pytest.raises(MaskingError, match="train.tasks"):
        draw_task({"bert": 0.0}, generator(0))


def test_bad_input_raises():
    tokens = {"t": random_tokens((1, 1, 2, 2, 2))}
    with pytest.raises(MaskingError, match="field 't'"):
        mask_fields({"t": torch.zeros(1, 1, 2, 2, 2, 5)}, [make_field()], "bert", generator(0))
    with pytest.raises(MaskingError, match=r"\['q'\]"):
        mask_fields({"q": tokens["t"]}, [make_field()], "bert", generator(0))
    with pytest.raises(MaskingError, match="forecast_tokens"):
        mask_fields(tokens, [make_field()], "forecast", generator(0), forecast_tokens=2)
    with pytest.raises(MaskingError, match="time_tokens"):
        mask_fields(tokens, [make_field()], "interpolate", generator(0))
    with pytest.raises(MaskingError, match="already built"):
        mask_fields(tokens, [make_field()], BertTask(), generator(0), ratio=0.5)


def test_correction_gives_every_token_the_other_models_values():
    from atmorep.numerics.modes import GIVEN

    field = make_field()
    tokens, guide = random_tokens((2, 1, 2, 2, 2), seed=1), random_tokens((2, 1, 2, 2, 2), seed=2)
    masked = mask_fields({"t": tokens}, [field], "correct", torch.Generator().manual_seed(0),
                         guide={"t": guide})
    assert (masked["t"].modes == GIVEN).all()
    assert torch.equal(masked["t"].tokens, guide) and masked["t"].target is tokens
    with pytest.raises(MaskingError, match="field 't': GIVEN tokens need another model's values"):
        mask_fields({"t": tokens}, [field], "correct", torch.Generator().manual_seed(0))
