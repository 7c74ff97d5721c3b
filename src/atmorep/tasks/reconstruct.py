"""Masked reconstruction: a fixed fraction of token-sized blocks hidden and predicted."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from atmorep.config import FieldConfig
from atmorep.errors import DataError
from atmorep.tasks.base import CaseLayout, MaskingError, Shape5, Task
from atmorep.tasks.draws import draw_ratio


@dataclass(frozen=True)
class ReconstructTask(Task):
    """BERT with the fixed ``ratio`` for every sample and field, targets MASKED only.

    At inference the reference time is the window start; ``round(ratio * N)`` of the ``N`` token-sized
    blocks of a block grid aligned at the domain's index 0 are hidden.
    """

    ratio: float = 0.5
    name = "reconstruct"
    baselines = ("spatial", "climatology")
    options = ("ratio",)
    output_attrs = ("ratio",)
    with_mask = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio <= 1.0:
            raise MaskingError(f"task 'reconstruct': option ratio must lie in [0, 1], got {self.ratio}")

    def select(self, shape: Shape5, generator: torch.Generator, field: FieldConfig) -> Tensor:
        ratios = torch.full((shape[0],), float(self.ratio), dtype=torch.float64, device=generator.device)
        return draw_ratio(shape, ratios, generator).chosen

    def target_points(self, layout: CaseLayout, grid: tuple[int, int], *, region: np.ndarray | None = None,
                      ratio: float = 0.5, token_size: tuple[int, int, int] = (1, 1, 1),
                      generator: torch.Generator | None = None) -> Tensor:
        if not 0.0 < ratio <= 1.0:
            raise DataError(f"reconstruct: the hidden fraction must lie in (0, 1], got {ratio}")
        window = layout.window
        counts = [-(-size // b) for size, b in zip((window, *grid), token_size)]  # blocks per axis, ceil
        total = int(np.prod(counts))
        chosen = torch.zeros(total, dtype=torch.bool)
        chosen[torch.randperm(total, generator=generator)[:max(1, round(ratio * total))]] = True
        blocks = chosen.reshape(counts)  # [nT, nH, nW]
        for axis, b in enumerate(token_size):
            blocks = blocks.repeat_interleave(b, dim=axis)
        return blocks[:window, :grid[0], :grid[1]].contiguous()  # [T, H, W]
