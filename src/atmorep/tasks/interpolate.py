"""Temporal interpolation: the time tokens between the first and the last one are predicted.

At inference the reference time is the last given step before the gap; the first and the last time
token of the window are given, the ``T - 2 tt`` steps between them are predicted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from atmorep.config import FieldConfig, RunConfig
from atmorep.errors import DataError
from atmorep.numerics.temporal_fit import BETWEEN
from atmorep.tasks.base import (
    CaseLayout,
    MaskingError,
    Shape5,
    Task,
    time_selection,
    time_token_size,
    time_tokens,
)


@dataclass(frozen=True)
class InterpolateTask(Task):
    """Time tokens in the middle are targets: ``time_tokens``, or all strictly inside the box."""

    time_tokens: Sequence[int] | None = None
    name = "interpolate"
    guess_kind = BETWEEN
    baselines = ("linear", "cubic", "climatology")
    history = ("cubic",)
    required_attrs = ("time_step_hours", "box")

    def select(self, shape: Shape5, generator: torch.Generator, field: FieldConfig) -> Tensor:
        nt = shape[2]
        times = range(1, nt - 1) if self.time_tokens is None else self.time_tokens
        bad = [t for t in times if not 0 <= t < nt]
        if bad or not times:
            raise MaskingError(f"task 'interpolate', field '{field.name}': time_tokens must be a non-empty "
                               f"subset of [0, {nt - 1}], got {list(times)}")
        return time_selection(shape, times, generator.device)

    def misfit(self, config: RunConfig) -> str | None:
        tokens = time_tokens(config)
        if tokens < 3:
            return f"train.tasks.interpolate: the box has {tokens} time tokens, interpolation needs 3 or more"
        return None

    def layout(self, config: RunConfig) -> CaseLayout:
        window, tt = config.data.box.shape[0], time_token_size(config)
        if window // tt < 3:
            raise DataError(f"interpolation needs at least 3 time tokens per window, the model has "
                            f"{window // tt}")
        return CaseLayout(self.name, window, tt - 1, tuple(range(tt, window - tt)))
