"""Spread factors per lead: they scale the members' deviations only, index leads, and survive meta.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from atmorep.errors import DataError
from atmorep.infer.lead_spread import LeadSpread, apply_lead_spread, smoothed_factors


def _spread():
    return LeadSpread((1.0, 2.0, 3.0), {"t": np.array([[1.0, 0.5, 0.25], [2.0, 1.0, 0.5]])})


def test_factors_scale_deviations_and_keep_the_mean():
    members = torch.randn(5, 2, 3, 4, 6, generator=torch.Generator().manual_seed(0))  # [E, C, P, H, W]
    factors = torch.tensor([[1.0, 0.5, 2.0], [0.1, 1.0, 3.0]])
    out = apply_lead_spread(members, factors)
    torch.testing.assert_close(out.mean(0), members.mean(0))
    ratio = out.std(0) / members.std(0)  # [C, P, H, W]
    torch.testing.assert_close(ratio, factors[:, :, None, None].expand_as(ratio))


def test_the_table_picks_leads_holds_the_last_and_leaves_other_fields_alone():
    table = _spread().table(["u", "t"], {"u": 1, "t": 2}, np.array([2.0, 3.0, 5.0]))
    expected = [[1.0, 1.0, 1.0], [0.5, 0.25, 0.25], [1.0, 0.5, 0.5]]
    assert table.tolist() == expected
    with pytest.raises(DataError, match="'t' has factors for 2 levels"):
        _spread().table(["t"], {"t": 3}, np.array([1.0]))


def test_meta_round_trip():
    spread = _spread()
    again = LeadSpread.from_meta(json.loads(json.dumps({"lead_spread": spread.to_meta()})))
    assert again.lead_hours == spread.lead_hours and again.rollout == "members"
    np.testing.assert_array_equal(again.factors["t"], spread.factors["t"])
    assert LeadSpread.from_meta({}) is None


@pytest.mark.parametrize("factors, words", [({"t": np.ones((1, 2))}, "factors \\[levels, 3\\]"),
                                            ({"t": np.array([[1.0, 0.0, 1.0]])}, "positive finite")])
def test_bad_factors_are_refused(factors, words):
    with pytest.raises(DataError, match=words):
        LeadSpread((1.0, 2.0, 3.0), factors)
    with pytest.raises(DataError, match="must increase"):
        LeadSpread((2.0, 1.0), {})


def test_smoothed_factors_invert_ratios_and_damp_noise():
    assert smoothed_factors(np.full((2, 9), 2.0)) == pytest.approx(np.full((2, 9), 0.5))
    noisy = np.exp(np.random.default_rng(0).normal(0.0, 0.2, (1, 40)))
    smooth = smoothed_factors(noisy)
    assert np.abs(np.diff(np.log(smooth))).mean() < 0.5 * np.abs(np.diff(np.log(1 / noisy))).mean()
    assert smoothed_factors(np.array([[np.nan, 0.0, 1e6]]), width=1).tolist() == [[1.0, 1.0, 0.1]]


def test_smoothing_keeps_a_steady_trend_with_lead_up_to_the_first_and_last_lead():
    ratios = np.exp(np.linspace(-1.0, 1.0, 12))[None]  # log ratio linear in lead, [1, P]
    assert smoothed_factors(ratios) == pytest.approx(1 / ratios, rel=1e-12)
