"""Forecasting: the last time tokens of the box are predicted from the ones before them.

At inference the reference time is the initialisation, the last given step; the window ends
``k * tt`` steps after it (``k = train.forecast_tokens`` time tokens of ``tt`` steps are predicted)
and leads past it are reached by rollout. The window is read only up to the reference: a forecast
never sees its targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from atmorep.config import FieldConfig, RunConfig
from atmorep.errors import DataError
from atmorep.numerics.modes import VISIBLE
from atmorep.numerics.temporal_fit import TREND
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
class ForecastTask(Task):
    """The last ``forecast_tokens`` time tokens (all levels, latitudes, longitudes) are targets."""

    forecast_tokens: int = 1
    name = "forecast"
    guess_kind = TREND
    baselines = ("persistence", "trend", "first_guess", "climatology")
    history = ("trend", "first_guess")
    required_attrs = ("time_step_hours",)
    options = ("lead_hours",)
    output_attrs = ("rollout", "lead_spread", "one_shot_lead_hours")
    rolls_out = True

    def select(self, shape: Shape5, generator: torch.Generator, field: FieldConfig) -> Tensor:
        k, nt = self.forecast_tokens, shape[2]
        if not 1 <= k < nt:
            raise MaskingError(f"task 'forecast', field '{field.name}': forecast_tokens must be in "
                               f"[1, {nt - 1}] for {nt} time tokens, got {k}")
        return time_selection(shape, range(nt - k, nt), generator.device)

    def misfit(self, config: RunConfig) -> str | None:
        tokens = time_tokens(config)
        if config.train.forecast_tokens >= tokens:
            return (f"train.forecast_tokens: {config.train.forecast_tokens} must be smaller than the "
                    f"{tokens} time tokens of the box")
        return None

    def validation_references(self, field, time_token: int) -> dict[str, Tensor]:
        """Persistence: each token column's last visible step, held for every step of the targets."""
        tokens = field.target  # [B, L, nT, nH, nW, D]
        visible = (field.modes == VISIBLE).all(dim=(0, 1, 3, 4))  # [nT]
        last = int(torch.nonzero(visible).max())
        steps = tokens[:, :, last].unflatten(-1, (time_token, -1))  # [B, L, nH, nW, tt, th*tw]
        held = steps[..., -1:, :].expand_as(steps).flatten(-2)  # [B, L, nH, nW, D]
        return {"persistence": held[:, :, None].expand_as(tokens)[field.target_mask]}  # [M, D]

    def layout(self, config: RunConfig) -> CaseLayout:
        window, tt = config.data.box.shape[0], time_token_size(config)
        k = config.train.forecast_tokens
        if not 1 <= k < window // tt:
            raise DataError(f"train.forecast_tokens={k} leaves no input in a window of {window // tt} time "
                            "tokens")
        reference = window - k * tt - 1
        return CaseLayout(self.name, window, reference, tuple(range(window - k * tt, window)),
                          read_steps=reference + 1)
