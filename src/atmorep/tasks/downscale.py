"""Downscaling: every token is given coarsened (block means) and predicted at full resolution.

At inference the reference time is the window start; every step is given only as block means of
``coarsen_factor x coarsen_factor`` points of the domain (a coarse field) and predicted at full
resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from atmorep.config import FieldConfig
from atmorep.numerics.coarsening import coarsen
from atmorep.numerics.first_guess import COARSE
from atmorep.numerics.modes import COARSENED
from atmorep.tasks.base import Shape5, Task


@dataclass(frozen=True)
class DownscaleTask(Task):
    """Every token is a target, given coarsened: predict full resolution from a coarse input."""

    name = "downscale"
    mode = COARSENED
    guess_kind = COARSE
    baselines = ("bilinear", "bicubic")
    required_attrs = ("coarsen_factor",)
    options = ("coarsen_factor",)
    output_attrs = ("coarsen_factor",)
    finer_grids = True

    def select(self, shape: Shape5, generator: torch.Generator, field: FieldConfig) -> Tensor:
        return torch.ones(shape, dtype=torch.bool, device=generator.device)

    def model_input(self, window: Tensor, coarsen_factor: int) -> Tensor:
        return coarsen(window, coarsen_factor)
