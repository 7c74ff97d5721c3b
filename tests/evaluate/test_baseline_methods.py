"""Baselines against cases they must reproduce exactly."""

from __future__ import annotations

import dask.array
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from atmorep.errors import DataError
from atmorep.evaluate import baseline_methods, metrics
from atmorep.evaluate.climatology import climatology_from
from tests.evaluate.grids import no_compute

LEVELS = np.array([500.0, 850.0])
FINE_LATITUDES = np.arange(-89.5, 90.0, 1.0)  # [180]
FINE_LONGITUDES = np.arange(0.5, 360.0, 1.0)  # [360]


def _truth(times: np.ndarray, values: np.ndarray | None = None) -> xr.DataArray:
    """A field on (time, level, latitude, longitude), by default different at every point."""
    latitudes, longitudes = np.linspace(-60.0, 60.0, 5), np.arange(0.0, 360.0, 60.0)
    if values is None:
        values = np.random.default_rng(0).normal(size=(len(times), 2, 5, 6))
    grid = {"time": times, "level": LEVELS, "latitude": latitudes, "longitude": longitudes}
    return xr.DataArray(values, dims=("time", "level", "latitude", "longitude"), name="t", coords=grid)


TIMES = pd.date_range("2021-01-01", periods=12, freq="6h").values
LEADS = ["0h", "6h", "18h"]


def test_persistence_holds_the_initial_state_and_equals_the_truth_at_lead_zero():
    truth = _truth(TIMES)
    forecast = baseline_methods.persistence(truth, TIMES[2:5], LEADS)
    assert forecast.dims == ("time", "prediction_timedelta", "level", "latitude", "longitude")
    np.testing.assert_array_equal(forecast["prediction_timedelta"].values,
                                  pd.to_timedelta(LEADS).values)
    at_valid = metrics.truth_at_valid_times(truth, forecast)
    np.testing.assert_array_equal(forecast.isel(prediction_timedelta=0).values,
                                  at_valid.isel(prediction_timedelta=0).values)
    for lead in range(3):
        np.testing.assert_array_equal(forecast.isel(prediction_timedelta=lead).values,
                                      truth.isel(time=slice(2, 5)).values)
    assert float(metrics.rmse(forecast, at_valid).isel(prediction_timedelta=0).max()) == 0.0
    assert (metrics.rmse(forecast, at_valid).isel(prediction_timedelta=2) > 0).all()


def test_persistence_rejects_unknown_times_and_unitless_leads():
    truth = _truth(TIMES)
    with pytest.raises(DataError, match="init_times"):
        baseline_methods.persistence(truth, ["2030-01-01"], LEADS)
    with pytest.raises(DataError, match="timedeltas"):
        baseline_methods.persistence(truth, TIMES[:2], [0, 6])


def test_climatology_forecast_of_a_pure_diurnal_cycle_is_perfect():
    times = pd.date_range("2021-01-01", periods=40, freq="6h")
    hours = times.hour.values.astype(float)
    values = np.broadcast_to(np.cos(2 * np.pi * hours / 24)[:, None, None, None], (40, 2, 5, 6))
    truth = _truth(times.values, values)
    climatology = climatology_from(truth.assign_coords(level=[300.0, 500.0]).combine_first(truth))
    forecast = baseline_methods.climatology_forecast(climatology, times.values[:8], LEADS, like=truth)
    assert forecast.dims == ("time", "prediction_timedelta", "level", "latitude", "longitude")
    np.testing.assert_array_equal(forecast["level"].values, LEVELS)  # like's levels
    at_valid = metrics.truth_at_valid_times(truth, forecast)
    np.testing.assert_allclose(forecast.values, at_valid.values, atol=1e-12)
    shifted = truth.assign_coords(latitude=truth["latitude"] + 1.0)
    with pytest.raises(DataError, match="latitude"):
        baseline_methods.climatology_forecast(climatology, times.values[:8], LEADS, like=shifted)


def _global(values: np.ndarray, latitudes=FINE_LATITUDES, longitudes=FINE_LONGITUDES) -> xr.DataArray:
    return xr.DataArray(values, dims=("latitude", "longitude"), name="t",
                        coords={"latitude": latitudes, "longitude": longitudes})


def test_coarsen_takes_block_means_and_keeps_a_constant():
    assert (baseline_methods.coarsen(_global(np.full((180, 360), 7.5)), 4) == 7.5).all()
    field = _global(np.arange(180 * 360, dtype=float).reshape(180, 360))
    coarse = baseline_methods.coarsen(field, 2)
    assert coarse.shape == (90, 180)
    assert float(coarse[0, 0]) == np.mean([0, 1, 360, 361])
    np.testing.assert_allclose(coarse["latitude"].values[:2], [-89.0, -87.0])
    np.testing.assert_allclose(coarse["longitude"].values[:2], [1.0, 3.0])
    with pytest.raises(DataError, match="multiple of 7"):
        baseline_methods.coarsen(field, 7)


def test_bilinear_upsampling_of_a_coarsened_linear_field_is_exact():
    lat, lon = np.meshgrid(FINE_LATITUDES, FINE_LONGITUDES, indexing="ij")
    field = _global(2.0 + 0.3 * lat - 0.01 * lon + 1e-4 * lat * lon)  # bilinear in (lat, lon)
    coarse = baseline_methods.coarsen(field, 4)  # a linear field's block mean is its centre value
    fine = baseline_methods.upsample(coarse, FINE_LATITUDES, FINE_LONGITUDES, method="bilinear")
    assert fine.dims == field.dims and fine.shape == field.shape
    first, last = coarse["longitude"].values[[0, -1]]
    inside = (FINE_LONGITUDES >= first) & (FINE_LONGITUDES <= last)
    np.testing.assert_allclose(fine.values[:, inside], field.values[:, inside], rtol=1e-12)  # all latitudes


def test_bicubic_upsampling_is_exact_for_a_cubic_in_latitude():
    coarse_latitudes = np.arange(-85.0, 90.0, 10.0)

    def cubic(latitude):
        return 1.0 + 0.02 * latitude - 3e-4 * latitude**2 + 2e-6 * latitude**3

    coarse = _global(np.repeat(cubic(coarse_latitudes)[:, None], 36, axis=1), coarse_latitudes,
                     np.arange(0.0, 360.0, 10.0))
    fine = baseline_methods.upsample(coarse, FINE_LATITUDES, FINE_LONGITUDES, method="bicubic")
    np.testing.assert_allclose(fine.values, np.repeat(cubic(FINE_LATITUDES)[:, None], 360, axis=1),
                               rtol=1e-10, atol=1e-12)
    bilinear = baseline_methods.upsample(coarse, FINE_LATITUDES, FINE_LONGITUDES, method="bilinear")
    assert np.abs(bilinear.values - fine.values).max() > 1e-3  # linear cannot follow the curvature


def test_bicubic_on_a_regional_grid_is_exact_for_a_cubic_in_longitude():
    coarse_longitudes = np.arange(100.0, 201.0, 10.0)  # not the full circle: no wrap

    def cubic(longitude):
        return 2.0 - 0.05 * (longitude - 150) + 1e-5 * (longitude - 150) ** 3

    coarse = _global(np.repeat(cubic(coarse_longitudes)[None, :], 18, axis=0), np.arange(-85.0, 90.0, 10.0),
                     coarse_longitudes)
    targets = np.arange(100.5, 200.0, 1.0)
    fine = baseline_methods.upsample(coarse, FINE_LATITUDES, targets, method="bicubic")
    np.testing.assert_allclose(fine.values, np.repeat(cubic(targets)[None, :], 180, axis=0), rtol=1e-10)


def test_upsampling_wraps_across_360_and_0():
    longitudes = np.arange(0.0, 360.0, 10.0)
    latitudes = np.arange(-85.0, 90.0, 10.0)
    radians = np.deg2rad(longitudes)
    wave = np.cos(radians) + 0.5 * np.sin(2 * radians)
    coarse = _global(np.repeat(wave[None, :], 18, axis=0), latitudes, longitudes)
    targets = np.array([355.0, -5.0, 359.0, 360.0, 0.0, 5.0])
    bilinear = baseline_methods.upsample(coarse, latitudes, targets, method="bilinear").values[0]
    np.testing.assert_allclose(bilinear[:2], 0.5 * (wave[-1] + wave[0]), rtol=1e-12)  # between 350 and 0
    np.testing.assert_allclose(bilinear[2], 0.1 * wave[-1] + 0.9 * wave[0], rtol=1e-12)
    np.testing.assert_allclose(bilinear[3:5], wave[0], rtol=1e-12)
    # Periodic cubic spline error <= 5/384 h^4 max|f''''| = 5/384 * (pi/18)^4 * 9 ~ 1.1e-4 everywhere.
    fine = np.arange(0.0, 360.0, 0.5)
    bicubic = baseline_methods.upsample(coarse, latitudes, fine, method="bicubic").values[0]
    exact = np.cos(np.deg2rad(fine)) + 0.5 * np.sin(2 * np.deg2rad(fine))
    error = np.abs(bicubic - exact)
    assert error.max() < 1.2e-4
    seam = (fine > 350.0) | (fine < 10.0)
    assert error[seam].max() <= 1.5 * error[~seam].max()  # no artefact where the circle closes


def test_upsampling_keeps_a_constant_and_datasets_and_stays_lazy():
    coarse = baseline_methods.coarsen(_global(np.full((180, 360), 3.0)), 6)
    for method in ("bilinear", "bicubic"):
        fine = baseline_methods.upsample(coarse, FINE_LATITUDES, FINE_LONGITUDES, method=method)
        np.testing.assert_allclose(fine.values, 3.0, rtol=1e-12)
    field = _truth(TIMES[:4])
    dataset = xr.Dataset({"t": field, "sp": field.isel(level=0, drop=True)})
    targets = (np.linspace(-60.0, 60.0, 9), np.arange(0.0, 360.0, 30.0))
    with no_compute():
        lazy = baseline_methods.upsample(dataset.chunk(time=2), *targets, method="bicubic")
    assert isinstance(lazy["t"].data, dask.array.Array)
    assert lazy["sp"].dims == ("time", "latitude", "longitude")
    np.testing.assert_allclose(lazy["t"].values, baseline_methods.upsample(field, *targets, "bicubic").values,
                               rtol=1e-12)
    with pytest.raises(DataError, match="method"):
        baseline_methods.upsample(field, *targets, method="nearest")  # type: ignore[arg-type]


def test_upsampled_field_is_smoother_than_the_truth():
    rng = np.random.default_rng(3)
    field = _global(rng.normal(size=(180, 360)))
    coarse = baseline_methods.coarsen(field, 4)
    blurred = baseline_methods.upsample(coarse, FINE_LATITUDES, FINE_LONGITUDES, "bilinear")
    truth_power = metrics.power_spectrum(field, dims=["latitude"])
    blurred_power = metrics.power_spectrum(blurred, dims=["latitude"])
    high = slice(60, None)  # wavenumbers above the coarse grid's resolution
    blurred_high, truth_high = (float(p.isel(wavenumber=high).sum()) for p in (blurred_power, truth_power))
    assert blurred_high < 0.1 * truth_high
