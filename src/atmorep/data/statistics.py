"""Normalisation statistics: per field and level mean and standard deviation.

Statistics are computed by ``atmorep data prepare`` / ``atmorep data stats`` (latitude-weighted,
out of core with dask) and stored with the data (as the store attribute ``atmorep_statistics``)
and with every model checkpoint, so that inference needs nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from atmorep.errors import AtmorepError


class StatisticsError(AtmorepError, KeyError):
    """Statistics are missing for a requested field or level."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


@dataclass(frozen=True)
class FieldStatistics:
    """Mean and std of one field, one value per level (``levels`` gives the level values)."""

    levels: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if not (len(self.levels) == len(self.mean) == len(self.std)):
            raise ValueError("levels, mean and std must have the same length")
        if any(not np.isfinite(s) or s <= 0 for s in self.std):
            raise ValueError(f"std must be positive and finite, got {self.std}")

    def select(self, levels: tuple[float, ...], field: str = "?") -> tuple[np.ndarray, np.ndarray]:
        """Mean and std (float64 arrays ``[L]``) for the given level values."""
        index = []
        for level in levels:
            matches = [i for i, known in enumerate(self.levels) if np.isclose(known, level)]
            if not matches:
                raise StatisticsError(f"no statistics for field '{field}' at level {level} "
                                      f"(known levels: {list(self.levels)})")
            index.append(matches[0])
        return np.asarray(self.mean)[index], np.asarray(self.std)[index]


@dataclass(frozen=True)
class Statistics:
    """Statistics of all fields of a store or model."""

    fields: Mapping[str, FieldStatistics]

    def __getitem__(self, name: str) -> FieldStatistics:
        if name not in self.fields:
            raise StatisticsError(f"no statistics for field '{name}' (known fields: {sorted(self.fields)})")
        return self.fields[name]

    def to_dict(self) -> dict:
        """A JSON-serialisable form."""
        return {name: {"levels": list(s.levels), "mean": list(s.mean), "std": list(s.std)}
                for name, s in self.fields.items()}

    @classmethod
    def from_dict(cls, data: Mapping) -> Statistics:
        return cls({name: FieldStatistics(tuple(map(float, d["levels"])), tuple(map(float, d["mean"])),
                                          tuple(map(float, d["std"])))
                    for name, d in data.items()})

    def _scale(self, name: str, levels: tuple[float, ...], like: torch.Tensor):
        mean, std = self[name].select(tuple(levels), name)
        shape = (1, len(levels), 1, 1, 1)  # broadcast over [B, L, T, H, W]
        return (torch.as_tensor(mean, dtype=like.dtype, device=like.device).reshape(shape),
                torch.as_tensor(std, dtype=like.dtype, device=like.device).reshape(shape))

    def normalise_fields(self, fields: Mapping[str, torch.Tensor],
                         levels: Mapping[str, tuple[float, ...]]) -> dict[str, torch.Tensor]:
        """``(x - mean) / std`` per field and level for tensors ``[B, L, T, H, W]``."""
        out = {}
        for name, value in fields.items():
            mean, std = self._scale(name, levels[name], value)
            out[name] = (value - mean) / std
        return out

    def denormalise_fields(self, fields: Mapping[str, torch.Tensor],
                           levels: Mapping[str, tuple[float, ...]]) -> dict[str, torch.Tensor]:
        """``x * std + mean`` per field and level for tensors ``[B, L, T, H, W]``."""
        out = {}
        for name, value in fields.items():
            mean, std = self._scale(name, levels[name], value)
            out[name] = value * std + mean
        return out
