"""Model correction: every token of the box is given as another model's values, and the truth is predicted.

The other model's values (a forecast store paired with the truth, ``data.guide`` in training and the
``input`` store at inference) are the input of every token (mode ``GIVEN``) and its first guess (kind
``model``); the network predicts the scaled correction towards the truth. At inference every step of
the window is predicted from the input store alone, and the raw input is the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from atmorep.config import FieldConfig, RunConfig
from atmorep.numerics.first_guess import MODEL
from atmorep.numerics.modes import GIVEN
from atmorep.tasks.base import Shape5, Task


@dataclass(frozen=True)
class CorrectTask(Task):
    """All tokens are targets, given as another model's values."""

    name = "correct"
    mode = GIVEN
    guess_kind = MODEL
    baselines = ("raw", "climatology")
    options = ("input",)
    required_options = ("input",)
    output_attrs = ("input",)
    validated_when_trained = True

    def select(self, shape: Shape5, generator: torch.Generator, field: FieldConfig) -> Tensor:
        return torch.ones(shape, dtype=torch.bool, device=generator.device)

    def misfit(self, config: RunConfig) -> str | None:
        for split in ("train", "validation"):
            if getattr(config.data, split) and not config.data.guide_stores(split):
                return (f"task 'correct' needs another model's values paired with the {split} stores: set "
                        f"data.guide.{split}, one store per store of data.{split}")
        return None
