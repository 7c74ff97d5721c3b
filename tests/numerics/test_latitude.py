"""The one area weighting: cos(latitude), mean 1, zero at the poles, for tensors and arrays alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atmorep.errors import DataError
from atmorep.numerics.latitude import latitude_weights


def _t(values):
    return torch.tensor(values, dtype=torch.float64)


def test_latitude_weights():
    weights = latitude_weights(_t([0.0, 60.0]))
    assert weights.tolist() == pytest.approx([4 / 3, 2 / 3])  # cos = (1, 1/2), mean 3/4
    latitude = torch.linspace(-89.0, 89.0, 37, dtype=torch.float64)
    weights = latitude_weights(latitude)
    assert weights.mean().item() == pytest.approx(1.0)
    assert latitude[weights.argmax()].item() == pytest.approx(0.0, abs=1e-12)
    assert torch.allclose(weights, weights.flip(0))
    assert latitude_weights(torch.zeros(2, 3)).tolist() == [[1.0] * 3] * 2
    assert latitude_weights(_t([0.0, 90.0])).tolist() == [2.0, 0.0]


def test_latitude_weights_reject_bad_input():
    for dtype in (torch.float32, torch.float64):
        with pytest.raises(DataError, match="poles"):
            latitude_weights(torch.tensor([90.0, -90.0], dtype=dtype))
    with pytest.raises(DataError, match="within"):
        latitude_weights(_t([0.0, 91.0]))
    with pytest.raises(DataError, match="empty"):
        latitude_weights(torch.zeros(0))


def test_arrays_and_tensors_get_the_same_weights():
    latitude = np.linspace(-90.0, 90.0, 19)
    from_array = latitude_weights(latitude)
    assert isinstance(from_array, np.ndarray)
    np.testing.assert_allclose(from_array, latitude_weights(torch.from_numpy(latitude)).numpy(), rtol=1e-12)
    with pytest.raises(DataError, match="coordinate 'latitude' must hold degrees"):
        latitude_weights(np.array([0.0, 95.0]), "coordinate 'latitude'")
