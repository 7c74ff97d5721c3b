"""The shipped run configurations load, pass the training checks and have the documented sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

import atmorep
from atmorep.config import load_config
from atmorep.model.info import count_parameters
from atmorep.numerics.tokens import tokens_per_field
from atmorep.train.checks import check_train_config

CONFIGS = Path(atmorep.__file__).parent / "configs"


def _tokens_per_sample(config) -> int:
    return sum(tokens_per_field(config.data.box.shape, f.token_size, len(f.levels)) for f in config.fields)


@pytest.mark.parametrize("name", ["tiny", "small", "base", "paper"])
def test_shipped_configs_are_valid(name):
    config = load_config(CONFIGS / f"{name}.yaml")
    check_train_config(config)
    assert config.model.preset == name
    assert all(f.levels for f in config.fields)


def test_tiny_fits_the_default_corpus_and_paper_the_era5_layout():
    tiny = load_config(CONFIGS / "tiny.yaml")
    assert [f.name for f in tiny.fields] == ["t", "u", "v"]
    assert tiny.data.box.shape == (12, 16, 32) and _tokens_per_sample(tiny) == 1152
    assert tiny.data.train == ["data/corpus/train.zarr"]
    paper = load_config(CONFIGS / "paper.yaml")
    assert paper.data.box.shape == (36, 54, 108)
    assert {tuple(f.token_size) for f in paper.fields} == {(3, 9, 9)}
    assert {tuple(f.levels) for f in paper.fields} == {(96.0, 105.0, 114.0, 123.0, 137.0)}
    assert 3.0e9 < count_parameters(paper)["total"] < 4.0e9  # the paper's ~3.5e9


def _with_task_options(tmp_path, options, tasks=None):
    from atmorep.config import resolve_config
    from tests.train.conftest import config_dict

    stores = {"train": str(tmp_path / "train.zarr"), "validation": str(tmp_path / "validation.zarr")}
    train = {"task_options": options, **({"tasks": tasks} if tasks else {})}
    return resolve_config(config_dict(stores, tmp_path / "run", **train))


def test_task_options_build_the_task_the_run_masks_with(tmp_path):
    import torch

    from atmorep.tasks import training_task
    from atmorep.tasks.masking import mask_fields

    config = _with_task_options(tmp_path, {"infill": {"max_fraction": 1.0, "regions": 2}})
    check_train_config(config)
    task = training_task("infill", config)
    assert (task.max_fraction, task.regions) == (1.0, 2)
    assert training_task("forecast", config).forecast_tokens == config.train.forecast_tokens
    tokens = {f.name: torch.zeros(4, 1, 3, 2, 2, 32) for f in config.fields}  # [B, L, nT, nH, nW, D]

    def hidden_everywhere(task) -> bool:  # some sample of 50 batches has its whole area hidden
        for seed in range(50):
            masked = mask_fields(tokens, config.fields, task, torch.Generator().manual_seed(seed))
            if masked["t"].target_mask.flatten(1).all(dim=1).any():
                return True
        return False

    assert hidden_everywhere(task)
    assert not hidden_everywhere(training_task("infill", _with_task_options(tmp_path, {})))  # max 0.5


@pytest.mark.parametrize("options, tasks, message", [
    ({"infill": {"max_fraction": 1.0, "mask": 1}}, None,
     r"train.task_options.infill: task 'infill' takes no options \['mask'\]; "
     r"it takes \['max_fraction', 'regions'\]"),
    ({"infill": {"max_fraction": 2.0}}, None, r"train.task_options.infill: .*max_fraction in \(0, 1\]"),
    ({"downscale": {"coarsen_factor": 2}}, {"forecast": 1.0},
     r"train.task_options.downscale: 'downscale' is not one of train.tasks \(forecast\)"),
])
def test_bad_task_options_name_the_key(tmp_path, options, tasks, message):
    from atmorep.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        check_train_config(_with_task_options(tmp_path, options, tasks))
