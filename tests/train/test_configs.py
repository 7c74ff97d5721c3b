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
