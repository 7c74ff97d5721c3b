"""Interpolation along one coordinate as a weight matrix, so that every interpolating spline of the
package (the evaluation's bilinear and bicubic baselines, a fine grid's first guess) is one linear map.

:func:`spline_weights` returns ``W [T, S]`` with ``values_at_targets = W @ values_at_sources`` for the
interpolating spline of a given order through the sources: order 1 is piecewise linear, order 3 the
cubic spline with not-a-knot ends (it reproduces cubic polynomials), periodic over 360 degrees when
asked (the longitude of a grid that closes the circle). Targets beyond the end points continue the
end pieces. Each row sums to one.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import make_interp_spline

PERIOD = 360.0  # degrees of longitude


def unwrapped_longitude(longitude: np.ndarray, origin: float | None = None) -> np.ndarray:
    """Longitudes ``[W]`` taken into ``[origin, origin + 360)``, ``origin`` the first by default.

    A grid increasing modulo 360 (e.g. 340, 0, 20 degrees east) becomes increasing (340, 360, 380).
    """
    longitude = np.asarray(longitude)
    origin = longitude[0] if origin is None else origin
    return origin + np.mod(longitude - origin, PERIOD)


def spline_weights(source: np.ndarray, target: np.ndarray, order: int, periodic: bool = False) -> np.ndarray:
    """``[T, S]``: the interpolating spline of ``order`` through values at ``source`` (strictly
    increasing), evaluated at ``target``; ``periodic``: over 360 (the sources cover one turn)."""
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    basis = np.eye(source.size)
    if periodic:  # close the circle: one more knot at source[0] + 360 carrying the first value
        source = np.append(source, source[0] + PERIOD)
        basis = np.concatenate([basis, basis[:1]], axis=0)
        target = unwrapped_longitude(target, origin=source[0])
    boundary = "periodic" if periodic and order > 1 else None
    return make_interp_spline(source, basis, k=order, axis=0, bc_type=boundary)(target)
