"""Longitude geometry that tiling, tails and evaluation share: does a grid go once around the globe."""

from __future__ import annotations

import numpy as np

from atmorep.errors import DataError


def is_global_longitude(longitude: np.ndarray) -> bool:
    """Whether equally spaced ascending longitudes in [0, 360) go once around the globe.

    Args:
        longitude: degrees east, ``[W]``, as stores hold them (ascending, in [0, 360)).

    Returns:
        True when ``W`` steps of the grid spacing make 360 degrees, so the last column neighbours the
        first; False for a regional grid (or a single column).

    Raises:
        DataError: longitudes not 1-D, outside [0, 360), not ascending or not equally spaced.
    """
    if longitude.ndim != 1 or longitude.size == 0 or np.any(longitude < 0) or np.any(longitude >= 360):
        raise DataError("longitude must be 1-D in [0, 360)")
    if longitude.size == 1:
        return False
    steps = np.diff(longitude)
    if np.any(steps <= 0) or not np.allclose(steps, steps[0], rtol=1e-5, atol=1e-9):
        raise DataError("longitude must be ascending and equally spaced")
    return bool(np.isclose(steps[0] * longitude.size, 360.0, rtol=0, atol=1e-6 * longitude.size))
