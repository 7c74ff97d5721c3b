"""The validated configuration of ``atmorep hybrid train --config FILE [key=value ...]``.

Example (docs/hybrid.md)::

    data:
      train: data/hybrid/train.zarr          # a sigma-level run: u, v, t, z, sp (atmorep data simulate)
      period: [2000-01-01, 2000-03-01]       # optional: part of the store
    core: {truncation: 21, time_step_minutes: 60, interval_hours: 6, forcing: held-suarez}
    correction: {width: 64, depth: 4}
    train: {mode: online, minutes: 10, rollout: 8, batch_size: 4}
    run_dir: runs/hybrid-online
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from atmorep.config import ConfigError, apply_overrides, format_validation_error, read_config_file
from atmorep.hybrid.core import CoreSpec
from atmorep.hybrid.training import TrainSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HybridData(_Strict):
    train: str
    period: tuple[str | None, str | None] = (None, None)


class CorrectionSpec(_Strict):
    width: int = Field(64, ge=1)
    depth: int = Field(4, ge=1)


class HybridConfig(_Strict):
    data: HybridData
    core: CoreSpec = CoreSpec()
    correction: CorrectionSpec = CorrectionSpec()
    train: TrainSettings = TrainSettings()
    run_dir: str


def resolve_hybrid_config(data: dict, overrides: Sequence[str] = (), source: str = "config") -> HybridConfig:
    """Validate a configuration mapping after ``key=value`` overrides; ConfigError names the bad key."""
    try:
        return HybridConfig.model_validate(apply_overrides(dict(data), overrides))
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


def load_hybrid_config(path: str | Path, overrides: Sequence[str] = ()) -> HybridConfig:
    return resolve_hybrid_config(read_config_file(path), overrides, source=str(path))
