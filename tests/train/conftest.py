"""A small prepared store and tiny run configurations for the training tests.

The store holds t and u on two pressure levels, 48 hourly steps on a 19 x 36 grid (analytic waves
plus noise, see ``tests/data/synthetic.py``). Runs use a (6, 8, 8) box, tokens (2, 4, 4) and a
model of width 32 with one encoder and one decoder layer: a step takes milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from atmorep.config import RunConfig, resolve_config
from atmorep.data.prepare import prepare_dataset
from tests.data.synthetic import internal_dataset


def make_store(path: Path, seed: int = 0) -> Path:
    """Prepare the synthetic store at ``path`` (few, large chunks: quick to write)."""
    return prepare_dataset(internal_dataset(times=48, nlat=19, nlon=36, seed=seed), path, box=(24, 19, 36),
                           chunk_fraction=1)


@pytest.fixture(scope="session")
def stores(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("stores")
    return {"train": str(make_store(root / "train.zarr", seed=0)),
            "validation": str(make_store(root / "validation.zarr", seed=1))}


def config_dict(stores: dict[str, str], run_dir: Path, **train: object) -> dict:
    """The plain configuration of a tiny run; ``train`` keys override the train section."""
    return {
        "fields": [{"name": "t", "token_size": [2, 4, 4], "coupled_with": ["u"]},
                   {"name": "u", "token_size": [2, 4, 4], "coupled_with": ["t"], "loss_weight": 0.5}],
        "data": {"train": [stores["train"]], "validation": [stores["validation"]],
                 "box": {"time": 6, "latitude": 8, "longitude": 8}, "boxes_per_window": 2,
                 "batches_per_epoch": 5},
        "model": {"dim": 32, "encoder_layers": 1, "decoder_layers": 1, "heads": 2, "ensemble_members": 4},
        "train": {"run_dir": str(run_dir), "max_steps": 8, "log_every": 1, "validate_every": 100,
                  "validation_batches": 2, "checkpoint_every": 100, "device": "cpu",
                  "optim": {"warmup_steps": 2, "lr": 3e-3}, **train},
    }


def make_config(stores: dict[str, str], run_dir: Path, overrides: tuple[str, ...] = (), **train) -> RunConfig:
    return resolve_config(config_dict(stores, run_dir, **train), overrides)


def write_config(path: Path, stores: dict[str, str], run_dir: Path, **train: object) -> Path:
    path.write_text(yaml.safe_dump(config_dict(stores, run_dir, **train)))
    return path
