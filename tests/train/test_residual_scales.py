"""The residual and time-difference scales: RMS of what they scale, per field, level and kind."""

from __future__ import annotations

import torch

from atmorep.numerics.first_guess import COARSE, GUESS_KINDS, KIND_VISIBLE, NOISE
from atmorep.numerics.temporal_fit import BETWEEN, TREND
from atmorep.train.residual_scales import FLOOR, ScaleSums, set_scales


def test_scales_are_the_rms_of_the_guess_error_per_level_and_kind():
    sums = ScaleSums({"t": 2}, ["t"])
    target = torch.zeros(1, 2, 2, 1, 1, 4)  # [B, L, nT, nH, nW, D]
    guess = target.clone()
    guess[0, 0, 0] = 3.0  # level 0, a "between" token: error 3 at every value
    guess[0, 1, 1] = torch.tensor([1.0, -1.0, 1.0, -1.0])  # level 1, a "trend" token: RMS 1
    kinds = torch.zeros(1, 2, 2, 1, 1, dtype=torch.int8)
    kinds[0, 0, 0], kinds[0, 1, 1] = BETWEEN, TREND
    sums.add_residual("t", target, guess, kinds)
    residual, difference = sums.scales()
    assert residual["t"].shape == (2, len(GUESS_KINDS))
    assert residual["t"][0, BETWEEN] == 3.0 and residual["t"][1, TREND] == 1.0
    assert residual["t"][1, BETWEEN] == 1.0 and residual["t"][0, COARSE] == 1.0  # kinds never seen
    assert (residual["t"][:, KIND_VISIBLE] == 1.0).all()
    assert torch.equal(difference["t"], torch.ones(2))  # no differences counted


def test_difference_scales_floor_and_copy_into_the_model():
    sums = ScaleSums({"t": 1}, ["t"])
    values = torch.arange(3.0).reshape(1, 1, 1, 1, 1, 3) * 0.5  # a trend of 0.5 per step, token (3, 1, 1)
    sums.add_differences("t", values, (3, 1, 1))
    flat = torch.zeros(1, 1, 1, 1, 1, 3)
    sums.add_residual("t", flat, flat, torch.full((1, 1, 1, 1, 1), NOISE, dtype=torch.int8))
    residual, difference = sums.scales()
    assert torch.allclose(difference["t"], torch.tensor([0.5]))
    assert residual["t"][0, NOISE] == FLOOR  # an exact guess still gets a usable scale

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fields = torch.nn.ModuleDict({"t": torch.nn.Module()})
            self.fields["t"].tail = torch.nn.Module()
            self.fields["t"].embedding = torch.nn.Module()
            self.fields["t"].tail.register_buffer("scale", torch.ones(1, len(GUESS_KINDS)))
            self.fields["t"].embedding.register_buffer("difference_scale", torch.ones(1))

    model = Model()
    set_scales(model, residual, difference)
    assert torch.equal(model.fields["t"].tail.scale, residual["t"])
    assert torch.equal(model.fields["t"].embedding.difference_scale, difference["t"])
