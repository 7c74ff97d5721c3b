"""A synthetic stand-in for the default corpus, shared by the inference and evaluation benchmarks.

t, u, v on three sigma levels, hourly, on a T31 Gaussian grid (48 x 96): travelling waves plus a
little noise, with the simulator's coordinates (Gaussian latitudes ascending, longitude 0..360,
``level_kind = "sigma"``), so a prepared store looks like the default corpus without running it.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import xarray as xr

FIELDS = ("t", "u", "v")
SIGMA = (0.2, 0.51, 0.835)  # ascending, as the simulator stores them
GRID = (48, 96)  # T31 Gaussian grid


def gaussian_latitudes(count: int) -> np.ndarray:
    """``[count]`` Gaussian latitudes in degrees, ascending (the nodes of Gauss-Legendre quadrature)."""
    nodes, _ = np.polynomial.legendre.leggauss(count)  # ascending sin(latitude)
    return np.rad2deg(np.arcsin(nodes))


def corpus_dataset(start: str, days: int, grid: tuple[int, int] = GRID, seed: int = 0) -> xr.Dataset:
    """t, u, v ``[T, L, H, W]``, hourly from ``start``.

    The noise is drawn time step after time step, so a longer dataset from the same start and seed
    holds the shorter one as its beginning.
    """
    rng = np.random.default_rng(seed)
    time_axis = pd.date_range(start, periods=24 * days, freq="1h").values
    latitude, longitude = gaussian_latitudes(grid[0]), np.arange(grid[1]) * 360.0 / grid[1]
    hours = np.arange(time_axis.size)[:, None, None, None]
    sigma = np.asarray(SIGMA)[None, :, None, None]
    lat = np.deg2rad(latitude)[None, None, :, None]
    lon = np.deg2rad(longitude)[None, None, None, :]
    wave = np.cos(lat) * np.sin(3 * lon - 2 * np.pi * hours / 48 + 4 * sigma)  # [T, L, H, W]
    base = {"t": 220.0 + 70.0 * sigma + 30.0 * np.cos(lat) ** 2, "u": 20.0 * np.cos(2 * lat) * (1.2 - sigma),
            "v": 0.0 * sigma}
    scale = {"t": 5.0, "u": 10.0, "v": 8.0}
    dims = ("time", "level", "latitude", "longitude")
    variables = {name: (dims, (base[name] + scale[name] * wave + rng.normal(0, 0.2, wave.shape))
                        .astype(np.float32)) for name in FIELDS}
    coords = {"time": time_axis, "level": ("level", np.asarray(SIGMA), {"level_kind": "sigma", "units": "1"}),
              "latitude": ("latitude", latitude, {"units": "degrees_north"}),
              "longitude": ("longitude", longitude, {"units": "degrees_east"})}
    return xr.Dataset(variables, coords=coords)


def grid_argument(text: str) -> tuple[int, int]:
    """``NLAT,NLON`` from the command line."""
    try:
        nlat, nlon = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid must be NLAT,NLON, got '{text}'") from None
    return nlat, nlon
