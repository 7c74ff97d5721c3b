import itertools

import numpy as np
import pytest
import torch
import xarray as xr

from atmorep.errors import DataError
from atmorep.evaluate import baseline_methods
from atmorep.numerics.coarsening import block_means, coarsen
from atmorep.tasks.masking import coarsen_tokens


def test_coarsen_gives_block_means_with_shorter_last_blocks():
    values = torch.randn(2, 5, 7, dtype=torch.float64)  # [., H, W]: 5 and 7 are not multiples of 2 or 3
    for factor in (2, 3):
        coarse = coarsen(values, factor)
        assert coarse.shape == values.shape
        for i, j in itertools.product(range(0, 5, factor), range(0, 7, factor)):
            block = (..., slice(i, i + factor), slice(j, j + factor))
            mean = values[block].mean(dim=(-2, -1), keepdim=True)
            torch.testing.assert_close(coarse[block], mean.expand_as(coarse[block]))
    assert torch.equal(coarsen(values, 1), values)
    assert block_means(values, (1, 7)).shape == (2, 5, 1)
    with pytest.raises(DataError, match="coarsening"):
        coarsen(values, 0)


def test_token_coarsening_is_the_grid_coarsening_of_each_token():
    tokens = torch.randn(3, 2 * 4 * 6, dtype=torch.float64)  # [M, tt * th * tw]
    grid = tokens.reshape(3, 2, 4, 6)
    expected = coarsen(grid, (2, 2)).reshape(3, -1)
    torch.testing.assert_close(coarsen_tokens(tokens, (2, 4, 6), 2), expected)
    whole = coarsen(grid, (4, 6)).reshape(3, -1)  # 4 does not divide 6: whole extent along longitude, 4 too
    torch.testing.assert_close(coarsen_tokens(tokens, (2, 4, 6), 4), coarsen(grid, (4, 6)).reshape(3, -1))
    assert torch.allclose(whole.reshape(3, 2, -1).std(dim=-1), torch.zeros(3, 2, dtype=torch.float64))


def test_the_baselines_coarsen_as_the_model_is_given_its_input():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 8, 12))
    field = xr.DataArray(values, dims=("time", "latitude", "longitude"),
                         coords={"latitude": np.arange(8.0), "longitude": np.arange(0.0, 360.0, 30.0)})
    for data in (field, field.chunk({"time": 1})):
        coarse = baseline_methods.coarsen(data, 4).compute()
        np.testing.assert_allclose(coarse.values, block_means(torch.from_numpy(values), 4).numpy())
        np.testing.assert_allclose(coarse["latitude"].values, [1.5, 5.5])
        np.testing.assert_allclose(coarse["longitude"].values, [45.0, 165.0, 285.0])


def test_nan_points_are_left_out_of_their_blocks_mean():
    values = torch.arange(16, dtype=torch.float64).reshape(4, 4)
    values[0, 0] = float("nan")
    values[2:, 2:] = float("nan")
    assert torch.isnan(block_means(values, 2)[0, 0])  # by default a NaN makes its block NaN
    means = block_means(values, 2, skip_nan=True)
    assert means[0, 0].item() == pytest.approx((1 + 4 + 5) / 3)
    assert torch.isnan(means[1, 1]) and means[0, 1].item() == pytest.approx((2 + 3 + 6 + 7) / 4)
