"""A tiny untrained backbone and the small stores its tails are fine-tuned on in the tests.

The coarse store is the synthetic store of ``tests/train/conftest.py`` (t and u at 500 and 850 hPa and
sp, 48 hourly steps from 2001-03-01T00 on a 19 x 36 grid). The fine store holds the same kind of
fields on a grid twice as fine (38 x 72), with a small-scale pattern the coarse grid cannot show.
The observation store holds ``sp`` at 40 sites as ``OFFSET + SLOPE * (the coarse sp at the site)``,
with a quarter of the values missing: a known linear bias.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from atmorep.data.prepare import prepare_dataset
from atmorep.data.store import Store
from atmorep.numerics.interpolation import spline_weights
from tests.data.synthetic import internal_dataset
from tests.infer.conftest import untrained_checkpoint
from tests.train.conftest import make_store

OFFSET, SLOPE = 150.0, 1.002  # the observations' linear bias, Pa
SITES = 40
PERIODS = {"train": ["2001-03-01T00", "2001-03-02T06"], "validation": ["2001-03-02T06", "2001-03-03"]}


@pytest.fixture(scope="session")
def tails_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tails")


@pytest.fixture(scope="session")
def coarse(tails_root) -> Path:
    return make_store(tails_root / "coarse.zarr", seed=1)


@pytest.fixture(scope="session")
def backbone(tails_root, coarse) -> Path:
    """An untrained tiny backbone of the coarse store (seed 0)."""
    return untrained_checkpoint(coarse, tails_root / "run-0", seed=0)


@pytest.fixture(scope="session")
def other_backbone(tails_root, coarse) -> Path:
    """The same model with other weights (seed 1)."""
    return untrained_checkpoint(coarse, tails_root / "run-1", seed=1)


@pytest.fixture(scope="session")
def fine(tails_root) -> Path:
    """t and u on levels and sp on a 38 x 72 grid, with a point-to-point pattern added to t and sp."""
    ds = internal_dataset(times=48, nlat=38, nlon=72, seed=2)
    pattern = np.sin(np.arange(38)[:, None] * 2.6) * np.cos(np.arange(72)[None] * 2.9)
    ds["t"] = ds["t"] + 0.5 * pattern
    ds["sp"] = ds["sp"] + 40.0 * pattern
    return prepare_dataset(ds, tails_root / "fine.zarr", box=(24, 38, 72), chunk_fraction=1)


def coarse_at(store_path: Path, latitude: np.ndarray, longitude: np.ndarray, field: str = "sp") -> np.ndarray:
    """``[T, S]`` a surface field of a store bilinearly at the sites."""
    store = Store(store_path)
    rows = spline_weights(store.latitude, latitude, 1)
    columns = spline_weights(store.longitude, longitude, 1, periodic=True)
    return np.einsum("si,tij,sj->ts", rows, np.asarray(store.arrays[field][:]), columns)


def write_observations(path: Path, coarse_path: Path, missing: float = 0.25, seed: int = 3,
                       latitude: np.ndarray | None = None, coordinates: bool = True) -> Path:
    """``sp`` at the sites as ``OFFSET + SLOPE * coarse`` with ``missing`` of the values NaN."""
    rng = np.random.default_rng(seed)
    lat = rng.uniform(-80, 80, SITES) if latitude is None else latitude
    lon = rng.uniform(0, 360, lat.size)
    store = Store(coarse_path)
    values = OFFSET + SLOPE * coarse_at(coarse_path, lat, lon)
    values[rng.random(values.shape) < missing] = np.nan
    coords = {"time": store.time.astype("datetime64[ns]"), "station": np.arange(lat.size)}
    if coordinates:
        coords |= {"latitude": ("station", lat), "longitude": ("station", lon)}
    ds = xr.Dataset({"sp": (("time", "station"), values.astype(np.float32))}, coords=coords,
                    attrs={"atmorep_observations": json.dumps({"fields": ["sp"]})})
    ds.to_zarr(path, consolidated=True, mode="w")
    return path


@pytest.fixture(scope="session")
def observations(tails_root, coarse) -> Path:
    return write_observations(tails_root / "obs.zarr", coarse)


def grid_config(backbone: Path, coarse: Path, fine: Path, run_dir: Path, **train) -> dict:
    return {"tail": {"name": "grid", "backbone": str(backbone), "coarse": str(coarse), "target": str(fine),
                     "fields": ["t@500", "sp"], "options": {"hidden": 32, "members": 4}},
            "periods": PERIODS,
            "train": {"run_dir": str(run_dir), "max_steps": 4, "boxes_per_batch": 2, "validate_every": 2,
                      "validation_boxes": 4, "device": "cpu", **train}}


def site_config(backbone: Path, coarse: Path, observations: Path, run_dir: Path, options=None,
                **train) -> dict:
    return {"tail": {"name": "sites", "backbone": str(backbone), "coarse": str(coarse),
                     "target": str(observations), "fields": ["sp"],
                     "options": {"hidden": 32, "members": 4, **(options or {})}},
            "periods": PERIODS,
            "train": {"run_dir": str(run_dir), "max_steps": 4, "boxes_per_batch": 4, "validate_every": 2,
                      "validation_boxes": 8, "device": "cpu", **train}}
