"""Interpolation weights: the splines the baselines and first guesses share, as matrices."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import make_interp_spline

from atmorep.numerics.interpolation import spline_weights, unwrapped_longitude

SOURCE = np.sort(np.random.default_rng(0).uniform(-80.0, 80.0, 12))
TARGET = np.linspace(-85.0, 85.0, 41)  # beyond both ends too


@pytest.mark.parametrize("order", [1, 3])
def test_weights_are_the_spline_applied_to_the_values(order):
    values = np.random.default_rng(1).normal(size=(SOURCE.size, 3))
    direct = make_interp_spline(SOURCE, values, k=order, axis=0)(TARGET)
    np.testing.assert_allclose(spline_weights(SOURCE, TARGET, order) @ values, direct, atol=1e-12)
    np.testing.assert_allclose(spline_weights(SOURCE, TARGET, order).sum(axis=1), 1.0, atol=1e-12)


def test_cubic_weights_reproduce_a_cubic_and_linear_weights_a_line():
    cubic = 0.5 + SOURCE - 2e-3 * SOURCE**2 + 1e-5 * SOURCE**3
    expected = 0.5 + TARGET - 2e-3 * TARGET**2 + 1e-5 * TARGET**3
    np.testing.assert_allclose(spline_weights(SOURCE, TARGET, 3) @ cubic, expected, atol=1e-9)
    np.testing.assert_allclose(spline_weights(SOURCE, TARGET, 1) @ (2.0 * SOURCE), 2.0 * TARGET, atol=1e-9)


@pytest.mark.parametrize("order", [1, 3])
def test_periodic_weights_wrap_around_the_circle(order):
    longitude = np.arange(0.0, 360.0, 30.0)
    wave = np.cos(np.deg2rad(longitude))
    targets = np.array([345.0, -15.0, 705.0, 15.0])  # the same point thrice, then its mirror image
    result = spline_weights(longitude, targets, order, periodic=True) @ wave
    np.testing.assert_allclose(result[:3], result[0], atol=1e-12)
    np.testing.assert_allclose(result[3], result[0], atol=1e-12)  # cos is even about 0
    np.testing.assert_allclose(result[0], np.cos(np.deg2rad(15.0)), atol=0.04 if order == 1 else 2e-3)


def test_unwrapped_longitude_increases_across_zero():
    np.testing.assert_array_equal(unwrapped_longitude(np.array([340.0, 0.0, 20.0])), [340.0, 360.0, 380.0])
