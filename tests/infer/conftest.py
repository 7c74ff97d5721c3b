"""A tiny untrained checkpoint and small prepared stores for the inference engine tests.

The truth store is the synthetic store of ``tests/train/conftest.py`` (t and u at 500 and 850 hPa,
48 hourly steps from 2001-03-01T00 on a 19 x 36 grid of 10 degrees). The checkpoint is an untrained
tiny model of that data: box (6, 8, 8), tokens (2, 4, 4), 4 ensemble members, one forecast time
token; written once per session with :func:`atmorep.checkpoint.write_checkpoint`. Variants of
the store (NaN after a time, a field or a level missing, a coarser grid) are built on first use.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from atmorep.checkpoint import Checkpoint, checkpoint_meta, write_checkpoint
from atmorep.config import RunConfig, resolve_config
from atmorep.data.prepare import prepare_dataset
from atmorep.data.statistics import Statistics
from atmorep.data.store import Store
from atmorep.infer.predictor import BoxPredictor
from atmorep.infer.request import InferenceRequest
from atmorep.model.multiformer import build_model
from tests.data.synthetic import internal_dataset
from tests.train.conftest import config_dict, make_store

LEVELS = (500.0, 850.0)
FIELDS = ("t", "u")
START = np.datetime64("2001-03-01T00:00", "s")  # the store's first step; steps are hourly
NAN_FROM = 20  # the NaN store holds NaN in every field from this time index on


def hours(n: float) -> np.timedelta64:
    return np.timedelta64(int(round(n * 3600)), "s")


def store_time(index: int) -> np.datetime64:
    """The time of the store's step ``index``."""
    return START + hours(index)


def tiny_config(store: Path, run_dir: Path) -> RunConfig:
    """The tiny run configuration of the tests, with the store's levels filled in."""
    data = config_dict({"train": str(store), "validation": str(store)}, run_dir)
    for field in data["fields"]:
        field["levels"] = list(LEVELS)
    return resolve_config(data)


def prepare_variant(path: Path, **dataset_options) -> Path:
    """A store like the truth store but built from ``internal_dataset(**dataset_options)``."""
    drop = dataset_options.pop("drop", ())
    ds = internal_dataset(**{"times": 48, "nlat": 19, "nlon": 36, "seed": 1, **dataset_options})
    return prepare_dataset(ds.drop_vars(list(drop)), path, box=(24, ds.sizes["latitude"],
                                                                 ds.sizes["longitude"]), chunk_fraction=1)


@pytest.fixture(scope="session")
def infer_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("infer")


@pytest.fixture(scope="session")
def truth_store(infer_root) -> Path:
    """The prepared synthetic store every case reads (and the truth it is compared with)."""
    return make_store(infer_root / "truth.zarr", seed=1)


def untrained_checkpoint(store_path: Path, run_dir: Path, seed: int = 0) -> Path:
    """An untrained tiny checkpoint (weights of ``seed``) with the store's statistics, in ``run_dir``."""
    config = tiny_config(store_path, run_dir)
    torch.manual_seed(seed)
    model = build_model(config)
    store = Store(store_path)
    statistics = Statistics({name: store.statistics[name] for name in FIELDS})
    weights = {name: value.detach().clone() for name, value in model.state_dict().items()}
    meta = checkpoint_meta(config, 0, {name: LEVELS for name in FIELDS}, level_kind=store.level_kind.value,
                           resolution=store.resolution, parameters=sum(v.numel() for v in weights.values()))
    contents = Checkpoint(weights, config.model_dump(mode="json"), statistics.to_dict(), meta)
    return write_checkpoint(run_dir / "checkpoint", contents)


@pytest.fixture(scope="session")
def checkpoint(infer_root, truth_store) -> Path:
    """An untrained tiny checkpoint (fixed seed) with the truth store's statistics."""
    return untrained_checkpoint(truth_store, infer_root / "run")


@pytest.fixture(scope="session")
def predictor(checkpoint) -> BoxPredictor:
    """The checkpoint's model, loaded once on the CPU."""
    return BoxPredictor.from_checkpoint(checkpoint, device="cpu", precision="float32")


@pytest.fixture(scope="session")
def nan_store(infer_root, truth_store) -> Path:
    """A copy of the truth store whose fields are NaN from time index ``NAN_FROM`` on."""
    path = infer_root / "nan.zarr"
    shutil.copytree(truth_store, path)
    group = zarr.open_group(path, mode="r+")
    for name in FIELDS:
        group[name][NAN_FROM:] = np.nan  # [time, level, latitude, longitude]
    return path


@pytest.fixture(scope="session")
def store_without_u(infer_root) -> Path:
    return prepare_variant(infer_root / "no-u.zarr", drop=("u",))


@pytest.fixture(scope="session")
def store_other_levels(infer_root) -> Path:
    """Levels 500 and 700 hPa: the checkpoint's 850 hPa is missing."""
    return prepare_variant(infer_root / "levels.zarr", levels=(500.0, 700.0))


@pytest.fixture(scope="session")
def coarse_store(infer_root) -> Path:
    """A 20 degree grid (10 x 18 points), still larger than the box."""
    return prepare_variant(infer_root / "coarse.zarr", nlat=10, nlon=18)


@pytest.fixture
def make_request(checkpoint, truth_store, tmp_path):
    """``make_request(**changes)``: a forecast request of the truth store at ``store_time(10)``."""
    def make(**changes) -> InferenceRequest:
        options = {"checkpoint": checkpoint, "data": truth_store, "output": tmp_path / "out.zarr",
                   "times": (store_time(10),), "device": "cpu", "precision": "float32", **changes}
        return InferenceRequest(**options)

    return make
