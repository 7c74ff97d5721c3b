"""Site statistics against closed forms: lattice areas, Wasserstein distances, the sign test."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy.stats import binom

from atmorep.errors import DataError
from atmorep.evaluate.site_statistics import (
    QUANTILES,
    compare_sites,
    fibonacci_lattice,
    place_sites,
    quantile_columns,
    site_statistics,
    top_band,
    top_band_power,
)


def _band_share(low: float, high: float, top: float = 90.0) -> float:
    """The area share of the band ``low <= latitude < high`` within ``|latitude| <= top``."""
    return (np.sin(np.radians(high)) - np.sin(np.radians(low))) / (2 * np.sin(np.radians(top)))


@pytest.mark.parametrize("top", [None, 60.0])
def test_the_lattice_puts_each_band_its_area_share_of_sites(top):
    latitude, longitude = fibonacci_lattice(150, top)
    bound = 90.0 if top is None else top
    assert np.all(np.abs(latitude) <= bound) and np.all((longitude >= 0) & (longitude < 360))
    for low, high in [(-90, -60), (-30, 0), (0, 20), (20, 50), (50, 90), (-10, 10)]:
        low, high = max(low, -bound), min(high, bound)
        if low >= high:
            continue
        share = np.mean((latitude >= low) & (latitude < high))
        assert share == pytest.approx(_band_share(low, high, bound), abs=1.5 / 150)
    # the same call gives the same sites
    again = fibonacci_lattice(150, top)
    assert np.array_equal(again[0], latitude) and np.array_equal(again[1], longitude)


def test_sites_go_to_their_nearest_grid_point():
    grid_lat, grid_lon = np.linspace(-88.5, 88.5, 60), np.arange(0, 360, 3.0)
    sites = place_sites(grid_lat, grid_lon, 150)
    assert np.all(np.abs(sites.grid_latitude - sites.latitude) <= 1.5 + 1e-9)
    away = np.abs((sites.grid_longitude - sites.longitude + 180) % 360 - 180)
    assert np.all(away <= 1.5 + 1e-9)
    field = np.add.outer(np.arange(60) * 1000, np.arange(120)).astype(float)
    assert np.array_equal(sites.values(field), sites.row * 1000 + sites.column)


def _fields(times: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = rng.normal(280.0, 3.0, size=(times, 10, 20))
    return truth, rng


def test_identical_values_are_at_distance_zero_and_a_shift_at_the_shift():
    truth, _ = _fields()
    sites = place_sites(np.linspace(-80, 80, 10), np.arange(0, 360, 18.0), 30)
    members = np.stack([truth + 1.25, truth - 2.0, truth + 0.75], axis=1)  # [T, 3, H, W]
    table = site_statistics(truth, members, sites)
    by = {name: group for name, group in table.groupby("source")}
    assert np.allclose(by["truth"]["wasserstein"], 0.0)
    assert np.allclose(by["member"]["wasserstein"], 1.25)
    assert np.allclose(by["mean"]["wasserstein"], 0.0, atol=1e-9)  # the mean is the truth again
    # the member's quantiles are the truth's shifted
    shift = by["member"][quantile_columns()].values - by["truth"][quantile_columns()].values
    assert np.allclose(shift, 1.25)
    expected = np.quantile(sites.values(truth), QUANTILES, axis=0).T
    assert np.allclose(by["truth"][quantile_columns()].values, expected)
    other = site_statistics(truth, members, sites, member=1)
    assert np.allclose(other.loc[other.source == "member", "wasserstein"], 2.0)


def test_a_narrower_distribution_is_at_a_positive_distance():
    truth, rng = _fields()
    sites = place_sites(np.linspace(-80, 80, 10), np.arange(0, 360, 18.0), 20)
    smooth = truth.mean() + 0.5 * (truth - truth.mean())
    table = site_statistics(truth, smooth[:, None], sites)
    assert np.all(table.loc[table.source == "member", "wasserstein"] > 0.3)


def test_the_sign_test_on_a_known_count():
    reference = np.ones(30)
    candidate = np.concatenate([np.full(20, 0.5), np.full(4, 1.05), np.full(6, 1.5)])
    result = compare_sites(reference, candidate, margin=0.1)
    assert (result["better"], result["equal"], result["worse"]) == (20, 4, 6)
    # two-sided, p = 1/2: twice the tail P(X <= 6) of Binomial(26, 1/2)
    assert result["p"] == pytest.approx(2 * binom.cdf(6, 26, 0.5))
    assert compare_sites(reference, reference)["p"] == 1.0
    with pytest.raises(DataError, match="same sites"):
        compare_sites(reference, candidate[:10])


def test_the_top_band_power_of_a_sine_is_its_squared_amplitude_ratio():
    assert top_band(192) == (43, 63)
    longitude = np.arange(192) * 360.0 / 192
    wave = np.sin(np.radians(50 * longitude))
    coords = {"time": np.arange(3), "latitude": [-30.0, 0.0, 30.0], "longitude": longitude}
    truth = xr.DataArray(np.broadcast_to(2.0 * wave, (3, 3, 192)), coords=coords,
                         dims=("time", "latitude", "longitude"))
    low = np.sin(np.radians(10 * longitude))  # outside the band: no power counted
    prediction = truth * 0.5 + xr.DataArray(np.broadcast_to(low, (3, 3, 192)), coords=coords,
                                            dims=truth.dims)
    assert top_band_power(prediction, truth) == pytest.approx(0.25)


def test_misshaped_input_is_refused():
    truth, _ = _fields(times=5)
    sites = place_sites(np.linspace(-80, 80, 10), np.arange(0, 360, 18.0), 5)
    with pytest.raises(DataError, match="members"):
        site_statistics(truth, truth, sites)
    with pytest.raises(DataError, match="member 3"):
        site_statistics(truth, truth[:, None], sites, member=3)
    with pytest.raises(DataError, match="max_latitude"):
        fibonacci_lattice(10, 120.0)
