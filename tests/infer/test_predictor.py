"""BoxPredictor: one chosen member per box is exactly that member of the full prediction."""

from __future__ import annotations

import torch

from atmorep.batch import BatchMetadata
from atmorep.infer.predictor import BoxPredictor, token_modes
from atmorep.numerics.modes import MASKED
from tests.infer.conftest import LEVELS


def _boxes(predictor: BoxPredictor, b: int):
    """``b`` random boxes of the tiny model with their last time token as the target."""
    generator = torch.Generator().manual_seed(0)
    t, h, w = predictor.config.data.box.shape
    inputs = {f.name: torch.randn(b, len(LEVELS), t, h, w, generator=generator) for f in predictor.fields}
    points = torch.zeros(b, t, h, w, dtype=torch.bool)
    points[:, -predictor.fields[0].token_size[0]:] = True
    modes = {f.name: token_modes(points, f.token_size, len(LEVELS), MASKED) for f in predictor.fields}
    seconds = torch.arange(t, dtype=torch.int64) * 3600 + 983_404_800
    meta = BatchMetadata(time=seconds[None].expand(b, -1), levels={f.name: LEVELS for f in predictor.fields},
                         latitude=torch.linspace(-40.0, 30.0, h, dtype=torch.float64)[None].expand(b, -1),
                         longitude=torch.linspace(0.0, 70.0, w, dtype=torch.float64)[None].expand(b, -1),
                         resolution=10.0)
    return inputs, modes, meta


def test_a_chosen_member_per_box_is_that_member_of_the_full_prediction(predictor):
    inputs, modes, meta = _boxes(predictor, 3)
    torch.manual_seed(1)
    full = predictor.predict(inputs, modes, meta)
    chosen = torch.tensor([2, 0, 3])
    torch.manual_seed(1)
    one = predictor.predict(inputs, modes, meta, member=chosen)
    for name, values in full.items():
        assert not torch.allclose(values[:, 0], values[:, 2])  # the members differ: the choice matters
        assert one[name].shape == (3, 1, *values.shape[2:])
        torch.testing.assert_close(one[name][:, 0], values[torch.arange(3), chosen])
