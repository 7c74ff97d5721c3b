"""BERT, the pre-training task: a random fraction of the tokens, each masked, noised or coarsened."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from atmorep.config import FieldConfig
from atmorep.tasks.base import Shape5, Task
from atmorep.tasks.draws import RatioDraw, draw_ratio, uniform


@dataclass(frozen=True)
class BertTask(Task):
    """Per sample a ratio ``r ~ U[min_ratio, max_ratio]``; ``round(r * N)`` random tokens are targets.

    Each target is MASKED, NOISED or COARSENED with probabilities proportional to the field's rates.
    A training task only.
    """

    name = "bert"
    mode = None
    inference = False

    def draw(self, shape: Shape5, generator: torch.Generator, field: FieldConfig) -> RatioDraw:
        low, high = field.masking.min_ratio, field.masking.max_ratio
        ratios = (low + (high - low) * uniform((shape[0],), generator)).clamp(low, high)  # [B]
        return draw_ratio(shape, ratios, generator)

    def select(self, shape: Shape5, generator: torch.Generator, field: FieldConfig) -> Tensor:
        return self.draw(shape, generator, field).chosen
