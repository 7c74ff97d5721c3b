"""Frozen features of the two boxes of lag pairs, for the lag probe (:mod:`atmorep.evaluate.representations`).

Pairs come from the learned distance's pair sampler (:mod:`atmorep.distance.pairs`): two boxes at the
same place, the second ``k * step_hours`` after the first (lag class k in 1..K). A box is the
backbone's box (``T x H x W`` grid points) from the pair's time, row and column; the store's period is
cut so that the second box's last step still lies in the store. Each representation maps a box to one
vector:

* **AtmoRep** (:func:`box_features`): the encoder states of every field (every token visible, the last
  encoder layer, :class:`~atmorep.infer.embed.BoxEmbedder`) averaged over the field's tokens (levels,
  time, latitude, longitude), fields concatenated: ``F = fields x D``. The tokens' auxiliary values
  tell the model the year, day of year and hour of each box, which gives any lag away; the probe
  sets them to constants (the embedders' alpha overrides) unless it measures that very effect;
* **box statistics** (same function): the mean and the standard deviation over the box of each
  normalised field and level, the backbone's inputs without a model: ``F = 2 x channels``;
* **AtmoDist** (:func:`distance_features`): the distance encoder's last-stage features of the patch
  at the box's first time and place (its channels, ``H x W`` points), averaged over the feature map.

Boxes shared by several pairs are read and encoded once (:func:`unique_boxes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from atmorep.data.store import Store
from atmorep.distance import DistanceModel
from atmorep.distance.config import Channel, PairSpec, Source
from atmorep.distance.pairs import Pairs, PatchSource
from atmorep.infer.embed import BoxEmbedder, BoxOrigins

INPUTS = "box statistics"  # the representation computed from the backbone's inputs alone


@dataclass(frozen=True)
class PairSet:
    """Lag pairs of one store with their source.

    Attributes:
        source: the store's patches (the distance channels, held in memory).
        pairs: the pairs.
    """

    source: PatchSource
    pairs: Pairs

    @property
    def lags(self) -> np.ndarray:
        """``[N]`` lag class of each pair, 1..K."""
        return self.pairs.lag

    @property
    def days(self) -> np.ndarray:
        """``[N]`` day number of each pair's first time (the unit the bootstrap resamples)."""
        return self.source.days(self.pairs.time)


def pair_source(path: str, channels: tuple[Channel, ...], steps: int, box: tuple[int, int], lags: int,
                step_hours: float, max_latitude: float) -> PatchSource:
    """The pair source of a store whose boxes of ``steps`` steps (``box = (H, W)`` points) fit at both
    times of every pair: its period ends where the last box must start."""
    time = Store(path).time
    last_start = time[max(time.size - steps, 0)]
    period = (str(time[0]), str(last_start + np.timedelta64(1, "s")))  # [first, last start]
    spec = PairSpec(channels=channels, step_hours=step_hours, lags=lags, patch=box, max_latitude=max_latitude)
    return PatchSource(Source(path=path, periods=(period,)), spec)


def unique_boxes(pairs: PairSet) -> tuple[BoxOrigins, np.ndarray, np.ndarray]:
    """The distinct boxes of the pairs and where each pair's boxes are among them.

    Returns:
        ``(origins, first, second)``: ``U`` distinct origins (sorted by time), and ``[N]`` indices into
        them of each pair's first and second box.
    """
    p, second = pairs.pairs, pairs.source.second_time(pairs.pairs)
    keys = np.concatenate([np.stack([p.time, p.latitude, p.longitude], axis=1),
                           np.stack([second, p.latitude, p.longitude], axis=1)])  # [2N, 3]
    distinct, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    origins = BoxOrigins(distinct[:, 0].copy(), distinct[:, 1].copy(), distinct[:, 2].copy())
    return origins, inverse[:len(p)], inverse[len(p):]


def _statistics(fields: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``[B, 2 x channels]``: mean and standard deviation over each box of every field and level."""
    parts = []
    for value in fields.values():  # [B, L, T, H, W]
        flat = value.flatten(2)  # [B, L, T * H * W]
        parts += [flat.mean(dim=2), flat.std(dim=2)]
    return torch.cat(parts, dim=1)


def box_features(embedders: Mapping[str, BoxEmbedder], origins: BoxOrigins, batch_size: int = 32
                 ) -> dict[str, torch.Tensor]:
    """Per representation ``[U, F]`` float32: each embedder's pooled encoder states of the boxes (every
    field, mean over its tokens) and, as :data:`INPUTS`, the boxes' statistics.

    Args:
        embedders: name -> embedder; all read the same store (the first one's is read).
        origins: the boxes.
        batch_size: boxes per model call.
    """
    reader = next(iter(embedders.values()))
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in (*embedders, INPUTS)}
    for start in range(0, len(origins), batch_size):
        batch = reader.read(origins.take(slice(start, start + batch_size)))  # normalised [b, L, T, H, W]
        for name, embedder in embedders.items():
            states = embedder.encode(batch)  # field -> [b, L, nT, nH, nW, D]
            parts[name].append(torch.cat([s.flatten(1, 4).mean(dim=1) for s in states.values()], dim=1))
        parts[INPUTS].append(_statistics(batch.fields))
    return {name: torch.cat(values) for name, values in parts.items()}


def distance_features(model: DistanceModel, pairs: PairSet, batch_size: int = 256
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``([N, F], [N, F])``: the distance encoder's features of each pair's first and second patch,
    averaged over the feature map (``F`` channels of its last stage)."""
    first, second = pairs.source.patches(pairs.pairs)  # [N, C, H, W] each, physical units
    return _pooled(model, first, batch_size), _pooled(model, second, batch_size)


def _pooled(model: DistanceModel, patches: np.ndarray, batch_size: int) -> torch.Tensor:
    values = []
    with torch.no_grad():
        for start in range(0, patches.shape[0], batch_size):
            chunk = torch.from_numpy(patches[start:start + batch_size]).to(model.device)
            values.append(model.features(chunk).mean(dim=(2, 3)).cpu())  # [b, F, h, w] -> [b, F]
    return torch.cat(values)
