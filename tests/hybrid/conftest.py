"""A synthetic sigma-level run on a Gaussian grid: a solid-body jet and a travelling warm wave."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

pytest.importorskip("dinosaur_torch")

GAS, GRAVITY, OMEGA, RADIUS = 286.85714285714283, 9.80616, 7.292e-5, 6.37122e6
SIGMA = np.array([0.1, 0.3, 0.5, 0.7, 0.9])


def sigma_run(truncation: int = 21, days: float = 4.0, hours: float = 6.0, speed: float = 15.0,
              start: str = "2001-01-01") -> xr.Dataset:
    """u = U cos(lat), 260 K plus a travelling wave of degree 1, flat ground (z from hydrostatics)."""
    from atmorep.hybrid.core import grid_spec
    from atmorep.hybrid.state import surface_height

    spec = grid_spec(truncation)
    lat, lon = np.rad2deg(spec.latitudes), np.rad2deg(spec.longitudes)
    times = pd.date_range(start, periods=round(days * 24 / hours) + 1, freq=f"{hours:g}h")
    phi, lam = np.meshgrid(np.deg2rad(lat), np.deg2rad(lon), indexing="ij")
    phase = 2 * np.pi * np.arange(times.size)[:, None, None] / 16.0
    u = np.broadcast_to(speed * np.cos(phi), (times.size, SIGMA.size, *phi.shape))
    wave = np.cos(phi) * np.sin(lam - phase)  # degree 1: band-limited, so exact on any Gaussian grid
    t = np.full_like(u, 260.0) + 3.0 * wave[:, None]
    lnsp = np.log(1e5) - (2 * OMEGA * RADIUS * speed + speed**2) / (2 * GAS * 260.0) * np.sin(phi) ** 2
    sp = np.broadcast_to(np.exp(lnsp), (times.size, *phi.shape))
    z = np.zeros_like(t)  # only the lowest level's geopotential is read (for the orography)
    z[:, -1] = -GRAVITY * surface_height(np.zeros_like(t[:, -1]), t[:, -1], SIGMA)  # flat ground: Phi_s = 0
    dims = ("time", "level", "latitude", "longitude")
    level = xr.DataArray(SIGMA, dims="level", attrs={"level_kind": "sigma", "units": "1"})
    return xr.Dataset(
        {"u": (dims, u.astype(np.float32)), "v": (dims, np.zeros_like(u, np.float32)),
         "t": (dims, t.astype(np.float32)), "z": (dims, z.astype(np.float32)),
         "sp": (("time", "latitude", "longitude"), sp.astype(np.float32))},
        coords={"time": times, "level": level, "latitude": lat, "longitude": lon})


@pytest.fixture
def sigma_store(tmp_path: Path) -> Path:
    path = tmp_path / "run.zarr"
    sigma_run().to_zarr(path, consolidated=True)
    return path
