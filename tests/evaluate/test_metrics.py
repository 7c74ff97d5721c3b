"""Metrics against analytic cases, reference implementations and their invariants."""

from __future__ import annotations

import math

import dask.array
import numpy as np
import properscoring as ps
import pytest
import scoringrules as sr
import xarray as xr
from scipy import stats

from atmorep.errors import DataError
from atmorep.evaluate import metrics
from tests.evaluate.grids import (
    LATITUDES,
    LEVELS,
    TIMES,
    layout,
    no_compute,
    normalised_weights,
    shape,
)

# A grid with many points for statistical checks: 8 x 1 x 1 x 32 x 64 = 16384 independent points.
BIG = {"times": np.arange(8).astype("datetime64[D]").astype("datetime64[ns]"),
       "leads": np.array([0], dtype="timedelta64[ns]"), "levels": np.array([500.0]),
       "latitudes": np.linspace(-80.0, 80.0, 32), "longitudes": np.arange(0.0, 360.0, 360.0 / 64)}


def _random(seed: int = 0, members: int | None = None, **overrides) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    return layout(rng.normal(size=shape(members, **overrides)), members=members is not None, **overrides)


def _standard_error(values: xr.DataArray) -> float:
    """Standard error of the latitude-weighted mean of independent per-point values."""
    weights = xr.broadcast(xr.DataArray(normalised_weights(values["latitude"].values), dims="latitude"),
                           values)[0].values.ravel()
    data = values.values.ravel()
    mean = np.average(data, weights=weights)
    variance = np.average((data - mean) ** 2, weights=weights)
    return math.sqrt(variance * np.sum(weights**2)) / np.sum(weights)


def test_latitude_weights_have_mean_one_and_vanish_at_the_poles():
    latitude = xr.DataArray(np.array([-90.0, -45.0, 0.0, 45.0, 90.0]), dims="latitude")
    weights = metrics.latitude_weights(latitude).values
    assert weights.mean() == pytest.approx(1.0)
    assert weights[0] == weights[-1] == 0.0
    assert weights[1] / weights[2] == pytest.approx(math.cos(math.pi / 4))
    with pytest.raises(DataError, match="latitude"):
        metrics.latitude_weights(xr.DataArray(np.array([0.0, 95.0]), dims="latitude"))


@pytest.mark.parametrize("offset", [-2.5, 0.7])
def test_constant_offset_gives_rmse_mae_abs_offset_and_signed_bias(offset):
    truth = _random()
    forecast = truth + offset
    for score in (metrics.rmse, metrics.mae):
        result = score(forecast, truth)
        assert result.dims == ("prediction_timedelta", "level")  # level and lead time kept
        np.testing.assert_allclose(result.values, abs(offset), rtol=1e-12)
    np.testing.assert_allclose(metrics.bias(forecast, truth).values, offset, rtol=1e-12)
    assert (np.sign(metrics.bias(truth - abs(offset), truth)) == -1).all()


def test_deterministic_scores_use_the_ensemble_mean():
    truth = _random()
    spread = xr.DataArray([-1.0, 0.0, 1.0], dims="member")
    ensemble = truth + 0.5 + spread  # members scattered around an offset mean
    np.testing.assert_allclose(metrics.rmse(ensemble, truth).values, 0.5, rtol=1e-12)
    np.testing.assert_allclose(metrics.bias(ensemble, truth).values, 0.5, rtol=1e-12)


def test_error_at_high_latitude_weighs_less_than_the_same_at_the_equator():
    latitudes = np.array([-75.0, -45.0, 0.0, 45.0, 75.0])
    truth = _random(latitudes=latitudes)

    def error_only_at(latitude: float) -> xr.DataArray:
        return truth + 3.0 * (truth["latitude"] == latitude)

    high = metrics.rmse(error_only_at(75.0), truth)
    equator = metrics.rmse(error_only_at(0.0), truth)
    assert (high < equator).all()
    np.testing.assert_allclose((high / equator).values, math.sqrt(math.cos(math.radians(75.0))), rtol=1e-12)


def test_dims_are_checked_and_explicit_dims_are_kept():
    truth = _random()
    result = metrics.rmse(truth + 1.0, truth, dims=["latitude", "longitude"])
    assert result.dims == ("time", "prediction_timedelta", "level")
    with pytest.raises(DataError, match="member_count"):
        metrics.rmse(truth, truth, dims=["member_count"])


def test_misaligned_or_incomplete_truth_is_rejected():
    truth = _random()
    shifted = truth.assign_coords(latitude=truth["latitude"] + 0.5)
    with pytest.raises(DataError, match="coordinates differ"):
        metrics.rmse(truth, shifted)
    with pytest.raises(DataError, match="climatology coordinates differ"):
        metrics.acc(truth, truth, shifted)
    forecast = xr.Dataset({"t": truth, "q": truth})
    with pytest.raises(DataError, match="q"):
        metrics.mae(forecast, xr.Dataset({"t": truth}))


def test_datasets_with_surface_fields_reduce_each_variable_over_its_own_dims():
    truth = _random()
    dataset = xr.Dataset({"t": truth, "sp": truth.isel(level=0, drop=True)})
    result = metrics.rmse(dataset + 2.0, dataset, dims=["time", "level", "latitude", "longitude"])
    assert result["t"].dims == result["sp"].dims == ("prediction_timedelta",)
    np.testing.assert_allclose(result["sp"].values, 2.0)


def _climatology_and_truth(seed: int = 1) -> tuple[xr.DataArray, xr.DataArray]:
    climatology = _random(seed) * 10.0 + 280.0
    return climatology, climatology + _random(seed + 1)


def test_acc_is_one_for_a_perfect_forecast_and_minus_one_for_the_negated_anomaly():
    climatology, truth = _climatology_and_truth()
    np.testing.assert_allclose(metrics.acc(truth, truth, climatology).values, 1.0, rtol=1e-12)
    negated = climatology - (truth - climatology)
    np.testing.assert_allclose(metrics.acc(negated, truth, climatology).values, -1.0, rtol=1e-12)
    amplified = climatology + 3.0 * (truth - climatology)  # a correlation ignores the amplitude
    np.testing.assert_allclose(metrics.acc(amplified, truth, climatology).values, 1.0, rtol=1e-12)


def test_centred_acc_ignores_a_uniform_anomaly_offset_the_uncentred_does_not():
    climatology, truth = _climatology_and_truth()
    offset = truth + 1.0
    np.testing.assert_allclose(metrics.acc(offset, truth, climatology).values, 1.0, rtol=1e-12)
    assert (metrics.acc(offset, truth, climatology, centred=False) < 0.9).all()


def test_acc_matches_a_numpy_reference():
    climatology, truth = _climatology_and_truth()
    forecast = truth + 0.8 * _random(7)
    weights = normalised_weights(LATITUDES)[:, None]  # [H, 1]
    expected = np.zeros((3, 2))
    for t in range(len(TIMES)):
        for lead in range(3):
            for level in range(2):
                f, y, c = (a.values[t, lead, level] for a in (forecast, truth, climatology))  # [H, W]
                fa, ya = f - c, y - c
                fa = fa - np.average(fa, weights=np.broadcast_to(weights, fa.shape))
                ya = ya - np.average(ya, weights=np.broadcast_to(weights, ya.shape))
                expected[lead, level] += (np.sum(weights * fa * ya) / np.sqrt(
                    np.sum(weights * fa**2) * np.sum(weights * ya**2))) / len(TIMES)
    np.testing.assert_allclose(metrics.acc(forecast, truth, climatology).values, expected, rtol=1e-10)


def test_acc_looks_a_climatology_up_at_the_valid_times():
    hours = xr.DataArray(np.arange(24), dims="hour", coords={"hour": np.arange(24)})
    days = xr.DataArray(np.arange(55, 75), dims="dayofyear", coords={"dayofyear": np.arange(55, 75)})
    climatology = (_random(3).isel(time=0, prediction_timedelta=0, drop=True) + 0.1 * hours + 0.01 * days)
    truth = _random(4) + 280.0
    at_valid = metrics.climatology_at(climatology, metrics.valid_times(truth))
    forecast = truth + _random(5)
    np.testing.assert_allclose(metrics.acc(forecast, truth, climatology).values,
                               metrics.acc(forecast, truth, at_valid).values, rtol=1e-12)


def _pointwise_crps_normal(mu: float, sigma: float, truth: xr.DataArray) -> xr.DataArray:
    z = (truth - mu) / sigma
    return sigma * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / math.sqrt(math.pi))


def test_fair_crps_of_a_gaussian_ensemble_matches_the_closed_form():
    mu, sigma, members = 1.5, 2.0, 8
    rng = np.random.default_rng(11)
    truth = layout(mu + sigma * rng.normal(size=shape(**BIG)), **BIG)
    ensemble = layout(mu + sigma * rng.normal(size=shape(members, **BIG)), members=True, **BIG)
    closed = _pointwise_crps_normal(mu, sigma, truth)
    difference = metrics.crps_fair(ensemble, truth, dims=()) - closed  # per point, E[.] = 0
    mean = float(metrics.weighted_mean(difference, list(difference.dims)))
    error = _standard_error(difference)
    assert error < 0.01 * sigma  # the check is sharp
    assert abs(mean) < 4 * error
    # The default reduction is the weighted mean of the pointwise scores.
    pooled = metrics.crps_fair(ensemble, truth, dims=list(truth.dims))
    assert float(pooled) == pytest.approx(float(metrics.weighted_mean(closed, list(closed.dims))) + mean)
    # The empirical-distribution CRPS is higher by E|X - X'| / (2 E) = sigma / (E sqrt(pi)) on average.
    excess = metrics.crps_ensemble(ensemble, truth, dims=()) - metrics.crps_fair(ensemble, truth, dims=())
    expected = sigma / (members * math.sqrt(math.pi))
    assert float(metrics.weighted_mean(excess, list(excess.dims))) == pytest.approx(
        expected, abs=4 * _standard_error(excess))


def test_crps_matches_properscoring_and_scoringrules_pointwise():
    ensemble, truth = _random(2, members=5), _random(3)
    members_last = np.moveaxis(ensemble.values, 0, -1)
    np.testing.assert_allclose(metrics.crps_ensemble(ensemble, truth, dims=()).values,
                               ps.crps_ensemble(truth.values, members_last), rtol=1e-10)
    np.testing.assert_allclose(metrics.crps_fair(ensemble, truth, dims=()).values,
                               sr.crps_ensemble(truth.values, members_last, estimator="fair"), rtol=1e-10)


def test_crps_of_one_member_is_the_absolute_error_and_nan_propagates():
    ensemble, truth = _random(2, members=1), _random(3)
    np.testing.assert_allclose(metrics.crps_fair(ensemble, truth).values,
                               metrics.mae(ensemble, truth).values, rtol=1e-12)
    broken = ensemble.copy(data=ensemble.values.copy())
    broken[0, 0, 0, 0, 0, 0] = np.nan
    assert np.isnan(metrics.crps_fair(broken, truth).values[0, 0])
    with pytest.raises(DataError, match="member"):
        metrics.crps_fair(truth, truth)


def test_spread_of_symmetric_members_is_exact():
    truth = _random()
    ensemble = truth + xr.DataArray([-1.5, 0.0, 1.5], dims="member")  # unbiased variance 1.5**2
    np.testing.assert_allclose(metrics.spread(ensemble).values, 1.5, rtol=1e-12)
    with pytest.raises(DataError, match="at least 2"):
        metrics.spread(ensemble.isel(member=[0]))


@pytest.mark.parametrize("members", [4, 10])
def test_spread_skill_of_a_calibrated_ensemble_is_one_after_the_finite_ensemble_correction(members):
    rng = np.random.default_rng(members)
    truth = layout(rng.normal(size=shape(**BIG)), **BIG)
    ensemble = layout(rng.normal(size=shape(members, **BIG)), members=True, **BIG)
    # Relative standard error about 0.007 for 16384 points: 0.03 is more than 4 of them.
    corrected = float(metrics.spread_skill_ratio(ensemble, truth).squeeze())
    assert corrected == pytest.approx(1.0, abs=0.03)
    plain = float(metrics.spread_skill_ratio(ensemble, truth, corrected=False).squeeze())
    assert plain == pytest.approx(math.sqrt(members / (members + 1)), abs=0.03)
    narrow = float(metrics.spread_skill_ratio(0.5 * ensemble, truth).squeeze())
    assert narrow < 0.6  # under-dispersive


def _rank_counts(ensemble: xr.DataArray, truth: xr.DataArray) -> np.ndarray:
    histogram = metrics.rank_histogram(ensemble, truth, dims=list(truth.dims))
    assert histogram.dims == ("rank",)
    return histogram.values


def _flatness_p_value(counts: np.ndarray, latitudes: np.ndarray, repeats: int) -> float:
    """Chi-square p-value of flatness for latitude-weighted counts, rescaled to the Kish effective size."""
    weights = np.repeat(normalised_weights(latitudes), repeats)
    effective = weights.sum() ** 2 / np.sum(weights**2)
    scaled = counts * effective / counts.sum()
    return float(stats.chisquare(scaled).pvalue)


def test_rank_histogram_is_flat_for_a_calibrated_ensemble_and_u_shaped_when_under_dispersive():
    members = 7
    rng = np.random.default_rng(5)
    truth = layout(rng.normal(size=shape(**BIG)), **BIG)
    ensemble = layout(rng.normal(size=shape(members, **BIG)), members=True, **BIG)
    counts = _rank_counts(ensemble, truth)
    assert counts.shape == (members + 1,)
    assert counts.sum() == pytest.approx(truth.size)  # weights of mean 1 keep the count
    repeats = truth.size // len(BIG["latitudes"])
    assert _flatness_p_value(counts, BIG["latitudes"], repeats) > 1e-3
    narrow = _rank_counts(0.3 * ensemble, truth)
    assert _flatness_p_value(narrow, BIG["latitudes"], repeats) < 1e-10
    mean = narrow.mean()
    assert narrow[0] > 2 * mean and narrow[-1] > 2 * mean and (narrow[1:-1] < mean).all()


def test_rank_histogram_breaks_ties_uniformly_and_reproducibly():
    truth = layout(np.zeros(shape(**BIG)), **BIG)
    ensemble = layout(np.zeros(shape(3, **BIG)), members=True, **BIG)  # every member ties with the truth
    counts = _rank_counts(ensemble, truth)
    repeats = truth.size // len(BIG["latitudes"])
    assert _flatness_p_value(counts, BIG["latitudes"], repeats) > 1e-3
    np.testing.assert_array_equal(counts, _rank_counts(ensemble, truth))
    partial = ensemble + xr.DataArray([0.0, 0.0, 1.0], dims="member")  # ties with two members, below one
    counts = _rank_counts(partial, truth)
    assert counts[3] == 0 and counts[:3].min() > 0.3 * counts.sum() / 3


def _zonal_field(longitudes: np.ndarray, wave: np.ndarray) -> xr.DataArray:
    """``wave [W]`` repeated on 3 times x 5 latitudes."""
    values = np.broadcast_to(wave, (3, 5, len(longitudes)))
    grid = {"time": TIMES[:3], "latitude": np.linspace(-60, 60, 5), "longitude": longitudes}
    return xr.DataArray(values, dims=("time", "latitude", "longitude"), coords=grid)


@pytest.mark.parametrize("width", [36, 35])
def test_power_spectrum_of_a_zonal_wave_peaks_at_its_wavenumber(width):
    longitudes = np.arange(width) * 360.0 / width
    radians = np.deg2rad(longitudes)
    field = _zonal_field(longitudes, 4.0 + 3.0 * np.cos(5 * radians + 0.3))
    spectrum = metrics.power_spectrum(field)
    assert spectrum.dims == ("wavenumber",) and spectrum.sizes["wavenumber"] == width // 2 + 1
    assert int(np.argmax(spectrum.values[1:])) + 1 == 5
    np.testing.assert_allclose(spectrum.values[[0, 5]], [16.0, 4.5], rtol=1e-12)  # mean^2 and A^2 / 2
    np.testing.assert_allclose(np.delete(spectrum.values, [0, 5]), 0.0, atol=1e-20)
    np.testing.assert_allclose(spectrum.values[1:].sum(), field.var("longitude").mean(), rtol=1e-12)


def test_power_spectrum_satisfies_parseval_and_counts_the_nyquist_wave_once():
    field = _random(8).isel(prediction_timedelta=0, drop=True)
    spectrum = metrics.power_spectrum(field, dims=["time", "latitude"])
    assert spectrum.dims == ("level", "wavenumber")
    mean_square = metrics.weighted_mean(field**2, ["time", "latitude", "longitude"])
    variance = metrics.weighted_mean(field.var("longitude"), ["time", "latitude"])
    np.testing.assert_allclose(spectrum.sum("wavenumber").values, mean_square.values, rtol=1e-12)
    np.testing.assert_allclose(spectrum.isel(wavenumber=slice(1, None)).sum("wavenumber").values,
                               variance.values, rtol=1e-12)
    alternating = _zonal_field(np.arange(8) * 45.0, np.array([1.0, -1.0] * 4))
    np.testing.assert_allclose(metrics.power_spectrum(alternating).values, [0, 0, 0, 0, 1.0], atol=1e-15)


def test_truth_at_valid_times_selects_init_plus_lead():
    times = np.arange("2021-03-01T00", "2021-03-03T00", 6, dtype="datetime64[h]").astype("datetime64[ns]")
    store = xr.DataArray(np.arange(len(times), dtype=float), dims="time", coords={"time": times})
    forecast = _random().isel(level=0, latitude=0, longitude=0, drop=True)
    truth = metrics.truth_at_valid_times(store, forecast)
    assert truth.dims == ("time", "prediction_timedelta")
    np.testing.assert_array_equal(truth.values, np.arange(4)[:, None] + np.arange(3)[None, :])
    np.testing.assert_array_equal(truth["valid_time"].values, metrics.valid_times(forecast).values)
    with pytest.raises(DataError, match="valid times"):
        metrics.truth_at_valid_times(store.isel(time=slice(0, 3)), forecast)


def test_metrics_stay_lazy_on_dask_data_and_agree_with_numpy():
    ensemble, truth = _random(2, members=4), _random(3)
    climatology = _random(4)
    lazy_ensemble, lazy_truth = ensemble.chunk(time=2), truth.chunk(time=2)
    calls = {
        "rmse": lambda e, y: metrics.rmse(e, y),
        "acc": lambda e, y: metrics.acc(e, y, climatology),
        "crps_fair": lambda e, y: metrics.crps_fair(e, y),
        "spread_skill_ratio": lambda e, y: metrics.spread_skill_ratio(e, y),
        "rank_histogram": lambda e, y: metrics.rank_histogram(e, y),
        "power_spectrum": lambda e, y: metrics.power_spectrum(e),
    }
    for name, call in calls.items():
        with no_compute():
            lazy = call(lazy_ensemble, lazy_truth)
        assert isinstance(lazy.data, dask.array.Array), name
        np.testing.assert_allclose(lazy.values, call(ensemble, truth).values, rtol=1e-12, err_msg=name)


def test_levels_of_the_climatology_are_matched_to_the_truth():
    climatology, truth = _climatology_and_truth()
    extra = xr.concat([climatology, climatology.isel(level=[0]).assign_coords(level=[1000.0])], "level")
    np.testing.assert_allclose(metrics.acc(truth, truth, extra).values, 1.0, rtol=1e-12)
    assert list(metrics.acc(truth, truth, extra)["level"].values) == list(LEVELS)


def _error_fields(blocky: bool, seed: int = 0) -> tuple[xr.DataArray, xr.DataArray]:
    """Forecast and truth on a 16 x 32 global grid; their difference is noise, or constant in 4 x 4 blocks."""
    rng = np.random.default_rng(seed)
    latitude, longitude = np.linspace(-75.0, 75.0, 16), np.arange(0.0, 360.0, 11.25)
    truth = rng.normal(size=(3, 16, 32))
    if blocky:
        error = np.kron(rng.normal(size=(3, 4, 8)), np.ones((4, 4)))[:, :16, :32]
    else:
        error = rng.normal(size=(3, 16, 32))
    dims = ("time", "latitude", "longitude")
    coords = {"time": np.arange(3), "latitude": latitude, "longitude": longitude}
    forecast = xr.DataArray(truth + error, dims=dims, coords=coords)
    return forecast, xr.DataArray(truth, dims=dims, coords=coords)


def test_blockiness_is_one_without_seams_and_large_for_block_errors():
    seams = {"latitude": [4, 8, 12], "longitude": list(range(0, 32, 4))}
    smooth = metrics.blockiness(*_error_fields(False), seams, periodic=True)
    blocks = metrics.blockiness(*_error_fields(True), seams, periodic=True)
    assert 0.8 < float(smooth) < 1.25
    assert float(blocks) > 100.0  # inside the blocks the error does not change at all
    shifted = {"latitude": [2, 6, 10, 14], "longitude": list(range(2, 32, 4))}
    assert float(metrics.blockiness(*_error_fields(True), shifted, periodic=True)) < 1e-20  # rounding only
    mask = xr.DataArray(np.zeros((16, 32), dtype=bool), dims=("latitude", "longitude"))
    mask[:8, :16] = True
    masked = metrics.blockiness(*_error_fields(True), seams, periodic=True, mask=mask)
    assert float(masked) > 100.0


def test_blockiness_keeps_the_coordinates_of_the_dims_it_does_not_reduce():
    forecast, truth = _error_fields(True)
    leads = np.array([1, 2, 3], dtype="timedelta64[h]").astype("timedelta64[ns]")
    forecast, truth = (a.rename(time="prediction_timedelta").assign_coords(prediction_timedelta=leads)
                       for a in (forecast, truth))
    result = metrics.blockiness(forecast, truth, {"latitude": [4], "longitude": [4]}, dims=())
    assert result.dims == ("prediction_timedelta",)
    np.testing.assert_array_equal(result["prediction_timedelta"].values, leads)
