"""Small synthetic datasets in the internal convention, with known values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr


def internal_dataset(times: int = 48, levels=(500.0, 850.0), nlat: int = 19, nlon: int = 36,
                     start: str = "2001-03-01", freq: str = "1h", seed: int = 0) -> xr.Dataset:
    """t and u on pressure levels and sp at the surface on a regular grid, latitude -90..90.

    Values are an analytic wave plus a little noise, so every grid point differs.
    """
    rng = np.random.default_rng(seed)
    time = pd.date_range(start, periods=times, freq=freq).values
    lat = np.linspace(-90, 90, nlat)
    lon = np.arange(nlon) * 360.0 / nlon
    level = np.asarray(levels, dtype=np.float64)
    tt, ll, yy, xx = np.meshgrid(np.arange(times), level, lat, lon, indexing="ij")
    wave = np.cos(np.deg2rad(yy)) * np.sin(np.deg2rad(xx) * 2 + tt / 7.0)
    t = 250.0 + 0.05 * ll + 20 * wave + rng.normal(0, 0.1, wave.shape)
    u = 10.0 * wave + 0.01 * ll + rng.normal(0, 0.1, wave.shape)
    sp = 100000.0 + 500.0 * wave[:, 0] + rng.normal(0, 1, wave[:, 0].shape)
    ds = xr.Dataset(
        {"t": (("time", "level", "latitude", "longitude"), t.astype(np.float32), {"units": "K"}),
         "u": (("time", "level", "latitude", "longitude"), u.astype(np.float32), {"units": "m s-1"}),
         "sp": (("time", "latitude", "longitude"), sp.astype(np.float32), {"units": "Pa"})},
        coords={"time": time, "level": ("level", level, {"level_kind": "pressure", "units": "hPa"}),
                "latitude": ("latitude", lat, {"units": "degrees_north"}),
                "longitude": ("longitude", lon, {"units": "degrees_east"})})
    return ds
