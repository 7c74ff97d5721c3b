"""The batch: the data contract between sampling, the model, training and inference.

A :class:`Batch` holds one tensor per field, shape ``[B, L, T, H, W]`` (B samples, L levels of that
field, T time steps, H latitudes, W longitudes), and a :class:`BatchMetadata` that says where and
when every sample lies. Both are validated on construction; everything downstream trusts them.
Methods are pure: they return a new batch.

Conventions (the same as the prepared store, see ``atmorep.data.conventions``):
    * latitude ascending (south to north), degrees north, in [-90, 90];
    * longitude in [0, 360), degrees east; a box may wrap past 360, so per sample the longitudes
      are increasing when unwrapped (``longitude[b, i + 1] - longitude[b, i] > 0 (mod 360)``);
    * time as int64 seconds since 1970-01-01T00:00 UTC, increasing.

Every token also gets the auxiliary values alpha (:data:`ALPHA_NAMES`), computed from the metadata
where the batch is tokenised (:func:`atmorep.numerics.tokens.token_alpha`). A batch may override
any of them by name (:class:`AlphaOverride`, ``BatchMetadata.alpha``): ``year=1950`` sets a value,
``day_of_year+=182`` (or ``day_of_year=+182``) and ``hour-=6`` shift one, so that the same state can be
asked about under other conditions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from atmorep.errors import AtmorepError
from atmorep.fields import LevelKind

EPOCH = np.datetime64("1970-01-01T00:00:00", "s")
ALPHA_NAMES = ("year", "day_of_year", "hour", "level", "latitude", "longitude", "resolution")
ALPHA_PERIODS = {"day_of_year": 365.0, "hour": 24.0, "longitude": 360.0}  # shifted values wrap around these


class BatchError(AtmorepError, ValueError):
    """A batch or its metadata violates the data contract."""


@dataclass(frozen=True)
class AlphaOverride:
    """One auxiliary value of every token replaced (``value``) or shifted by ``value`` (``shift``).

    A shifted ``day_of_year``, ``hour`` or ``longitude`` wraps around its period (365 days, 24 hours,
    360 degrees).
    """

    name: str
    value: float
    shift: bool = False

    def __post_init__(self) -> None:
        if self.name not in ALPHA_NAMES:
            raise BatchError(f"alpha '{self.name}' is not an auxiliary value; expected one of "
                             f"{list(ALPHA_NAMES)}")
        if not np.isfinite(self.value):
            raise BatchError(f"alpha {self.name}: the value must be finite, got {self.value}")

    @classmethod
    def parse(cls, text: str) -> AlphaOverride:
        """``"NAME=VALUE"`` sets (any sign); ``"NAME+=SHIFT"``, ``"NAME=+SHIFT"``, ``"NAME-=SHIFT"`` shift."""
        name, sep, raw = (part.strip() for part in text.partition("="))
        sign = 1.0
        if name[-1:] in ("+", "-"):
            sign, name, shift = (-1.0 if name[-1] == "-" else 1.0), name[:-1].strip(), True
        else:
            shift = raw[:1] == "+"
        try:
            value = sign * float(raw)
        except ValueError:
            value = None
        if not sep or value is None:
            raise BatchError(f"alpha override '{text}': expected NAME=VALUE or NAME+=SHIFT / NAME-=SHIFT, "
                             f"e.g. year=1950 or day_of_year+=182, with NAME one of {list(ALPHA_NAMES)}")
        return cls(name, value, shift=shift)

    def apply(self, values: torch.Tensor) -> torch.Tensor:
        """The column of this value (any shape) with the override applied."""
        if not self.shift:
            return torch.full_like(values, self.value)
        shifted = values + self.value
        period = ALPHA_PERIODS.get(self.name)
        return torch.remainder(shifted, period) if period else shifted

    def __str__(self) -> str:
        if self.shift:
            return f"{self.name}{'-' if self.value < 0 else '+'}={abs(self.value):g}"
        return f"{self.name}={self.value:g}"


@dataclass(frozen=True)
class BatchMetadata:
    """Where and when the samples of a batch lie.

    Attributes:
        time: ``[B, T]`` int64, seconds since 1970-01-01 UTC, increasing along T.
        latitude: ``[B, H]`` float64 degrees north, ascending.
        longitude: ``[B, W]`` float64 degrees east in [0, 360), increasing modulo 360.
        levels: per field, the level values of its ``L`` axis (``(0.0,)`` for surface fields).
        level_kind: the vertical coordinate of the level fields.
        resolution: grid spacing in degrees (latitude spacing of the source grid).
        alpha: overrides of the tokens' auxiliary values, applied in order (none by default).
    """

    time: torch.Tensor
    latitude: torch.Tensor
    longitude: torch.Tensor
    levels: Mapping[str, tuple[float, ...]]
    level_kind: LevelKind = LevelKind.PRESSURE
    resolution: float = 0.25
    alpha: tuple[AlphaOverride, ...] = ()

    def __post_init__(self) -> None:
        b = self.time.shape[0]
        if self.time.ndim != 2 or self.time.dtype != torch.int64:
            raise BatchError(
                f"metadata.time must be int64 [B, T], got {self.time.dtype} {tuple(self.time.shape)}"
            )
        for name in ("latitude", "longitude"):
            value = getattr(self, name)
            if value.ndim != 2 or value.shape[0] != b:
                raise BatchError(f"metadata.{name} must be [B={b}, ...], got {tuple(value.shape)}")
        if self.time.shape[1] > 1 and not bool((self.time.diff(dim=1) > 0).all()):
            raise BatchError("metadata.time must increase along the time axis")
        lat = self.latitude
        if not bool(((lat >= -90) & (lat <= 90)).all()):
            raise BatchError("metadata.latitude must lie in [-90, 90]")
        if lat.shape[1] > 1 and not bool((lat.diff(dim=1) > 0).all()):
            raise BatchError("metadata.latitude must be ascending (south to north)")
        lon = self.longitude
        if not bool(((lon >= 0) & (lon < 360)).all()):
            raise BatchError("metadata.longitude must lie in [0, 360)")
        if lon.shape[1] > 1 and not bool((torch.remainder(lon.diff(dim=1), 360.0) > 0).all()):
            raise BatchError("metadata.longitude must increase (modulo 360) along the box")
        if self.resolution <= 0:
            raise BatchError(f"metadata.resolution must be positive, got {self.resolution}")

    @property
    def batch_size(self) -> int:
        return int(self.time.shape[0])

    def datetimes(self) -> np.ndarray:
        """``[B, T]`` numpy datetime64[s] of the time axis."""
        return EPOCH + self.time.cpu().numpy().astype("timedelta64[s]")


GUIDE = "guide/"  # prefix of the extras that hold another model's values of a field ([B, L, T, H, W])


@dataclass(frozen=True)
class Batch:
    """Per-field tensors ``[B, L, T, H, W]`` with their metadata.

    Attributes:
        fields: field short name -> tensor ``[B, L, T, H, W]``; all fields share B, T, H, W.
        metadata: the samples' coordinates.
        normalised: whether the values are normalised (zero mean, unit std per field and level).
    """

    fields: Mapping[str, torch.Tensor]
    metadata: BatchMetadata
    normalised: bool = True
    extras: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.fields:
            raise BatchError("a batch needs at least one field")
        meta = self.metadata
        b, t, h, w = meta.batch_size, meta.time.shape[1], meta.latitude.shape[1], meta.longitude.shape[1]
        for name, value in self.fields.items():
            if value.ndim != 5:
                raise BatchError(f"field '{name}' must be [B, L, T, H, W], got shape {tuple(value.shape)}")
            bb, levels, tt, hh, ww = value.shape
            if (bb, tt, hh, ww) != (b, t, h, w):
                raise BatchError(
                    f"field '{name}' has shape {tuple(value.shape)}, metadata says B={b}, T={t}, H={h}, W={w}"
                )
            if name not in meta.levels:
                raise BatchError(f"metadata.levels has no entry for field '{name}'")
            if len(meta.levels[name]) != levels:
                raise BatchError(
                    f"field '{name}' has {levels} levels, metadata lists {len(meta.levels[name])}"
                )

    @property
    def batch_size(self) -> int:
        return self.metadata.batch_size

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(self.fields)

    @property
    def box_shape(self) -> tuple[int, int, int]:
        """``(T, H, W)`` of the space-time box."""
        any_field = next(iter(self.fields.values()))
        return tuple(any_field.shape[2:])  # type: ignore[return-value]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Batch:
        """Move field tensors (and extras) to a device, optionally casting floating fields."""
        fields = {k: v.to(device=device, dtype=dtype or v.dtype) for k, v in self.fields.items()}
        extras = {k: v.to(device=device, dtype=dtype if k.startswith(GUIDE) and dtype else v.dtype)
                  for k, v in self.extras.items()}
        return replace(self, fields=fields, extras=extras)

    def time_window(self, start: int, steps: int) -> Batch:
        """The batch cut to its time steps ``start .. start + steps - 1`` (the ``[B, L, T, H, W]`` extras
        too)."""
        total = self.metadata.time.shape[1]
        if not (0 <= start and steps >= 1 and start + steps <= total):
            raise BatchError(f"time window {start}..{start + steps - 1} is outside the batch's {total} steps")
        if start == 0 and steps == total:
            return self
        cut = slice(start, start + steps)
        return replace(self, fields={k: v[:, :, cut] for k, v in self.fields.items()},
                       extras={k: v[:, :, cut] if v.ndim == 5 else v for k, v in self.extras.items()},
                       metadata=replace(self.metadata, time=self.metadata.time[:, cut]))

    def guide(self) -> dict[str, torch.Tensor]:
        """Per field another model's values ``[B, L, T, H, W]`` (model correction), where the batch has
        them."""
        return {key[len(GUIDE):]: value for key, value in self.extras.items() if key.startswith(GUIDE)}

    def pin_memory(self) -> Batch:
        """Called by ``DataLoader(pin_memory=True)``."""
        return replace(self, fields={k: v.pin_memory() for k, v in self.fields.items()})

