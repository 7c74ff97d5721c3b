"""Tiny prepared stores and configurations for the distance tests.

The stores hold t and u on two pressure levels (and sp), 48 hourly steps on a 19 x 36 grid (10 degrees;
13 rows within |lat| <= 60), analytic waves plus noise (``tests/data/synthetic.py``). Pairs use
t@850 and u@500, lags of 3..12 h in 4 classes and patches of 4 x 8 points; the networks have a few
hundred parameters, so training and scoring take about a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from atmorep.data.prepare import prepare_dataset
from atmorep.distance.config import PairSpec, resolve_distance_config
from tests.data.synthetic import internal_dataset

SPEC = PairSpec(channels=("t@850", "u@500"), step_hours=3, lags=4, patch=(4, 8), max_latitude=60)


def make_store(path: Path, seed: int = 0, times: int = 48) -> Path:
    return prepare_dataset(internal_dataset(times=times, nlat=19, nlon=36, seed=seed), path, box=(24, 19, 36),
                           chunk_fraction=1)


def open_a_gap(path: Path, after: int, hours: int) -> Path:
    """Shift every time after index ``after`` of a prepared store by ``hours`` (a gap in its time axis)."""
    time = zarr.open_group(str(path), mode="r+")["time"]
    values = np.asarray(time[...])
    values[after + 1:] += hours * 3600  # the store's time is in seconds since 1970
    time[...] = values
    return path


@pytest.fixture(scope="session")
def stores(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("distance-stores")
    gap = open_a_gap(make_store(root / "gap.zarr", seed=3), after=23, hours=24)
    return {"train": str(make_store(root / "train.zarr", seed=0)),
            "validation": str(make_store(root / "validation.zarr", seed=1)),
            "control": str(make_store(root / "control.zarr", seed=2)),
            "gap": str(gap)}


def config_dict(stores: dict[str, str], run_dir: Path, **train: object) -> dict:
    """The plain configuration of a tiny run; ``train`` keys override the train section."""
    return {
        "data": {"train": {"path": stores["train"]}, "validation": stores["validation"]},
        "pairs": SPEC.model_dump(mode="json"),
        "network": {"width": 4, "stages": 2, "blocks": 1, "head_width": 8},
        "train": {"run_dir": str(run_dir), "max_steps": 6, "batch_size": 8, "log_every": 1,
                  "validate_every": 3, "checkpoint_every": 4, "warmup_steps": 2, "calibration_pairs": 16,
                  "threads": 1,
                  "validation": {"time_stride_hours": 12, "latitude_places": 2, "longitude_stride": 18},
                  **train},
        "score": {"pairs": {"time_stride_hours": 6, "latitude_places": 2, "longitude_stride": 12},
                  "baseline_pairs": 400, "bootstrap": 50},
    }


def make_config(stores: dict[str, str], run_dir: Path, overrides: tuple[str, ...] = (), **train):
    return resolve_distance_config(config_dict(stores, run_dir, **train), overrides)


@pytest.fixture(scope="session")
def trained(stores, tmp_path_factory) -> Path:
    """The run directory of a tiny trained distance model."""
    from atmorep.distance.train import train_distance

    run_dir = tmp_path_factory.mktemp("distance-run")
    train_distance(make_config(stores, run_dir))
    return run_dir
