"""The validated configuration of a tail's fine-tuning (``atmorep finetune --config``).

Example (docs/tails.md)::

    tail:
      name: grid                        # a registered tail (atmorep.tails.registry)
      backbone: runs/tiny/checkpoint    # the pre-trained multiformer
      coarse: data/coarse.zarr          # the backbone's input, and the products the first guess uses
      target: data/fine.zarr            # grid: a finer store; sites: an observation store
      fields: [t@0.835, t2m]            # what the tail predicts: FIELD or FIELD@LEVEL
      options: {hidden: 256}
    periods:
      train: [2000-01-06, 2000-02-05]
      validation: [2000-02-05, 2000-02-15]
    train:
      run_dir: runs/downscale
      backbone_lr_ratio: 0.0            # 0 freezes the backbone
      content_loss: {distance: runs/atmodist/model, weight: 0.1}   # optional (grid tail)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from atmorep.config import (
    ConfigError,
    OptimConfig,
    apply_overrides,
    format_validation_error,
    read_config_file,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(_Strict):
    """One predicted quantity: a field at a level, or a field without levels (``level`` None)."""

    field: str
    level: float | None = None

    @classmethod
    def parse(cls, text: str) -> Target:
        name, _, level = str(text).partition("@")
        if not name:
            raise ValueError(f"'{text}' is not FIELD or FIELD@LEVEL")
        try:
            return cls(field=name, level=float(level) if level else None)
        except ValueError:
            raise ValueError(f"'{text}': the level after '@' must be a number") from None

    @property
    def label(self) -> str:
        return self.field if self.level is None else f"{self.field}@{self.level:g}"


class TailSpec(_Strict):
    name: str
    backbone: str
    coarse: str
    target: str
    fields: tuple[Target, ...] = Field(min_length=1)
    options: dict[str, Any] = {}

    @field_validator("fields", mode="before")
    @classmethod
    def _parse_fields(cls, value: Any) -> Any:
        items = [value] if isinstance(value, str) else list(value)
        return tuple(Target.parse(item) if isinstance(item, str) else item for item in items)


class Periods(_Strict):
    """Half-open time ranges ``[start, end)`` of the target data, ISO dates or datetimes."""

    train: tuple[str, str]
    validation: tuple[str, str]

    @field_validator("train", "validation", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:  # YAML reads 2000-01-06 as a date
        if isinstance(value, list | tuple):
            return tuple(v.isoformat() if hasattr(v, "isoformat") else v for v in value)
        return value

    @field_validator("train", "validation")
    @classmethod
    def _ordered(cls, value: tuple[str, str]) -> tuple[str, str]:
        start, end = (np.datetime64(v, "s") for v in value)  # ValueError names the bad text
        if end <= start:
            raise ValueError(f"the end {value[1]} must be after the start {value[0]}")
        return value

    def bounds(self, name: str) -> tuple[np.datetime64, np.datetime64]:
        start, end = getattr(self, name)
        return np.datetime64(start, "s"), np.datetime64(end, "s")


RANDOM = "random:"  # the prefix of a content loss's control: random weights of a saved distance model


class ContentLoss(_Strict):
    """A learned-distance content loss of the grid tail's predicted fine boxes (``train.content_loss``).

    The loss adds ``weight`` times the distance model's distance between the prediction and the truth,
    per box and time step as an image of the model's channels (physical units), averaged over steps
    and the members (``each``) or taken of the ensemble mean (``mean``).

    Attributes:
        distance: a saved distance model (``atmorep distance train``), or ``random:PATH``: the same
            architecture and normalisation as the model at PATH with random weights (drawn with
            ``seed``), the control.
        weight: the loss's weight (> 0) next to ``train.losses``.
        members: ``each`` (the mean of every member's distance) or ``mean`` (the ensemble mean's).
        images: at most this many (box, member, step) images per batch, drawn at random without
            replacement (an unbiased estimate of the mean at a fraction of the cost); None: all.
        seed: the seed of the random weights of ``random:PATH``.
    """

    distance: str = Field(min_length=1)
    weight: float = Field(gt=0.0)
    members: Literal["each", "mean"] = "each"
    images: int | None = Field(None, ge=1)
    seed: int = 0

    @field_validator("distance")
    @classmethod
    def _path(cls, value: str) -> str:
        if value.startswith(RANDOM) and not value[len(RANDOM):]:
            raise ValueError(f"'{value}' names no distance model after '{RANDOM}'")
        return value

    @property
    def random(self) -> bool:
        """Whether the control (random weights) is asked for."""
        return self.distance.startswith(RANDOM)

    @property
    def path(self) -> str:
        """The saved distance model's directory (without ``random:``)."""
        return self.distance[len(RANDOM):] if self.random else self.distance


class FinetuneTrain(_Strict):
    run_dir: str = "runs/tail"
    seed: int = 0
    max_steps: int = Field(1000, ge=1)
    max_minutes: float | None = Field(None, gt=0)
    boxes_per_batch: int = Field(4, ge=1)
    backbone_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)  # 0 freezes the backbone
    losses: dict[str, float] = {"crps_fair": 1.0, "mse_member": 0.1}
    content_loss: ContentLoss | None = None  # none by default
    optim: OptimConfig = OptimConfig(lr=1e-3, warmup_steps=50)
    log_every: int = Field(50, ge=1)
    validate_every: int = Field(250, ge=1)
    validation_boxes: int = Field(64, ge=1)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # auto: CUDA > MPS > CPU


class FinetuneConfig(_Strict):
    tail: TailSpec
    periods: Periods
    train: FinetuneTrain = FinetuneTrain()


def resolve_finetune_config(data: dict, overrides: tuple[str, ...] | list[str] = (),
                            source: str = "config") -> FinetuneConfig:
    """Validate a fine-tuning config dict after ``key=value`` overrides (relative paths are taken from
    where the command runs)."""
    merged = apply_overrides(dict(data), overrides)
    try:
        return FinetuneConfig.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


def load_finetune_config(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> FinetuneConfig:
    """Load a fine-tuning YAML file (see the module docstring) and apply overrides."""
    return resolve_finetune_config(read_config_file(path), overrides, source=str(path))
