"""The validated configuration of ``atmorep distance train --config FILE [key=value ...]``.

Example (``src/atmorep/configs/distance.yaml``, docs/distance.md)::

    data:
      train: atmorep-quickstart/data/train.zarr
      validation: {path: atmorep-quickstart/data/validation.zarr, periods: [[2001-01-01, 2001-01-16]]}
    pairs: {channels: [vo@0.835, d@0.835], step_hours: 3, lags: 16, patch: [16, 16], max_latitude: 60}
    network: {width: 32, stages: 3, blocks: 2, head_width: 128}
    train: {run_dir: runs/atmodist, max_minutes: 20, batch_size: 64}
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from atmorep.config import ConfigError, apply_overrides, format_validation_error, read_config_file
from atmorep.distance.network import EncoderSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Channel(_Strict):
    """One input channel: a field at a level (0 for a surface field); written ``FIELD@LEVEL``."""

    field: str = Field(min_length=1)
    level: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Channel:
        name, _, level = str(text).partition("@")
        try:
            return cls(field=name, level=float(level) if level else 0.0)
        except ValueError:
            raise ValueError(f"channel '{text}' is not FIELD or FIELD@LEVEL (a number after '@')") from None

    @property
    def label(self) -> str:
        return f"{self.field}@{self.level:g}"


class Source(_Strict):
    """A prepared store and, optionally, the half-open periods ``[start, end)`` of it that pairs use.

    A plain path stands for ``{path: PATH}`` (the whole store).
    """

    path: str = Field(min_length=1)
    periods: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str | Path) else value

    @field_validator("periods", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:  # YAML reads 2000-01-06 as a date
        return tuple(tuple(v.isoformat() if hasattr(v, "isoformat") else v for v in period)
                     for period in value)

    @field_validator("periods")
    @classmethod
    def _ordered(cls, value: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        for start, end in value:
            if np.datetime64(end, "s") <= np.datetime64(start, "s"):  # ValueError names the bad text
                raise ValueError(f"period [{start}, {end}): the end must be after the start")
        return value

    def bounds(self) -> list[tuple[np.datetime64, np.datetime64]]:
        return [(np.datetime64(start, "s"), np.datetime64(end, "s")) for start, end in self.periods]


class DataSpec(_Strict):
    train: Source
    validation: Source

    @field_validator("train", "validation", mode="before")
    @classmethod
    def _plain(cls, value: Any) -> Any:
        return Source.of(value)


class PairSpec(_Strict):
    """How pairs are cut: channels, lags and patches.

    Attributes:
        channels: the input channels, ``FIELD@LEVEL``.
        step_hours: the lag of class 1; class k is ``k * step_hours`` (a multiple of the store's step).
        lags: K, the number of lag classes (1..K).
        patch: ``(H, W)`` grid points of a patch.
        max_latitude: every patch row lies within ``|latitude| <= max_latitude`` degrees.
    """

    channels: tuple[Channel, ...] = (Channel(field="vo", level=0.835), Channel(field="d", level=0.835))
    step_hours: float = Field(3.0, gt=0)
    lags: int = Field(16, ge=2)
    patch: tuple[int, int] = (16, 16)
    max_latitude: float = Field(60.0, gt=0, le=90)

    @field_validator("channels", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        items = [value] if isinstance(value, str) else list(value)
        return tuple(Channel.parse(item) if isinstance(item, str) else item for item in items)

    @field_validator("channels")
    @classmethod
    def _distinct(cls, value: tuple[Channel, ...]) -> tuple[Channel, ...]:
        labels = [c.label for c in value]
        if not labels or len(set(labels)) != len(labels):
            raise ValueError(f"expected one or more distinct channels, got {labels}")
        return value

    @field_validator("patch")
    @classmethod
    def _positive(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 1:
            raise ValueError(f"patch sizes must be positive, got {list(value)}")
        return value


class EvaluationSpec(_Strict):
    """An enumerated set of pairs: every first time on the stride (UTC hours divisible by it) at which
    the longest lag still fits, times every lag class, times fixed places.

    Attributes:
        time_stride_hours: spacing of the first times.
        latitude_places: patch rows evenly spread over the latitude band.
        longitude_stride: columns between patch starts (from column 0).
    """

    time_stride_hours: int = Field(6, ge=1)
    latitude_places: int = Field(3, ge=1)
    longitude_stride: int = Field(16, ge=1)


class ScoreSpec(_Strict):
    """How ``atmorep distance score`` scores: its pairs, the baselines' training pairs, the bootstrap."""

    pairs: EvaluationSpec = EvaluationSpec()
    baseline_pairs: int = Field(20000, ge=100)  # random pairs of the training store the baselines fit
    bootstrap: int = Field(1000, ge=10)  # resamples of the days
    seed: int = 0


class TrainSpec(_Strict):
    """The training run (AdamW, cross-entropy; warm-up then cosine decay of the learning rate over
    ``max_steps`` or ``max_minutes``, whichever is nearer)."""

    run_dir: str = "runs/atmodist"
    seed: int = 0
    max_steps: int = Field(20000, ge=1)
    max_minutes: float | None = Field(None, gt=0)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.02, ge=0, le=1)
    grad_clip: float = Field(1.0, ge=0)  # 0: no clipping
    log_every: int = Field(50, ge=1)
    validate_every: int = Field(500, ge=1)
    checkpoint_every: int = Field(1000, ge=1)
    validation: EvaluationSpec = EvaluationSpec(time_stride_hours=12, latitude_places=2, longitude_stride=24)
    calibration_pairs: int = Field(256, ge=1)  # lag-1 pairs of the validation store measuring the unit
    device: Literal["auto", "cpu", "cuda", "mps"] = "cpu"
    threads: int | None = Field(None, ge=1)  # torch CPU threads (None: torch's default)


class DistanceConfig(_Strict):
    """Everything ``atmorep distance train`` needs; ``score`` also serves ``atmorep distance score``."""

    data: DataSpec
    pairs: PairSpec = PairSpec()
    network: EncoderSpec = EncoderSpec()
    log_scale: float = Field(1.0, gt=0)  # s = log_scale * the channel's standard deviation
    train: TrainSpec = TrainSpec()
    score: ScoreSpec = ScoreSpec()


def resolve_distance_config(data: dict, overrides: Sequence[str] = (),
                            source: str = "config") -> DistanceConfig:
    """Validate a configuration mapping after ``key=value`` overrides; ConfigError names the bad key."""
    try:
        return DistanceConfig.model_validate(apply_overrides(dict(data), overrides))
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


def load_distance_config(path: str | Path, overrides: Sequence[str] = ()) -> DistanceConfig:
    return resolve_distance_config(read_config_file(path), overrides, source=str(path))
