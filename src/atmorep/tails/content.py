"""The downscaling tail's content loss: a learned distance between its predicted and the true fine boxes.

Pixel losses (CRPS, MSE) score each fine point on its own; a *content loss* scores the texture of a
whole image, through the features of a network trained on the data (AtmoDist, :mod:`atmorep.distance`:
an encoder trained to tell the time lag between two patches, whose features define a distance).
With ``train.content_loss`` (:class:`atmorep.tails.config.ContentLoss`) the grid tail's loss becomes

    loss = sum_l w_l loss_l(r, goal) + weight * mean_{b, e, t} D(x_{b, e, t}, y_{b, t})

with ``x_{b, e, t}`` member ``e`` of box ``b`` at step ``t`` as an image ``[C, f H, f W]`` of the
distance model's channels in physical units (``members: mean``: the ensemble mean, ``e`` dropped),
``y`` the truth and ``D`` the model's distance. ``D`` is differentiable in its inputs, so gradients
flow into the tail; the model's own weights are frozen (eval mode, no gradients). Its channels must
be among the tail's targets. ``random:PATH`` takes a model of the same architecture and
normalisation with random weights (:func:`atmorep.distance.saved.random_distance`): the control that
separates what the trained features add from what any convolutional feature map does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from atmorep.config import ConfigError
from atmorep.distance import load_distance, random_distance
from atmorep.tails.base import TailBatch
from atmorep.tails.config import ContentLoss, Target
from atmorep.tails.grid import GridPairs


def channel_indices(channels: Sequence[tuple[str, float | None]], targets: Sequence[Target],
                    where: str) -> list[int]:
    """The index among ``targets`` of each distance-model channel ``(field, level)`` (level 0 or None: a
    field without levels); ConfigError naming the first channel the tail does not predict."""
    labels = [t.label for t in targets]
    out = []
    for field, level in channels:
        level = None if level is None or float(level) == 0.0 else float(level)
        found = [k for k, t in enumerate(targets) if t.field == field and (
            (t.level is None and level is None)
            or (t.level is not None and level is not None and np.isclose(t.level, level)))]
        if not found:
            name = field if level is None else f"{field}@{level:g}"
            raise ConfigError(f"{where}: the distance model reads {name}, which is not among the tail's "
                              f"targets {labels} (add it to tail.fields)")
        out.append(found[0])
    return out


class ContentTerm:
    """The content loss of a grid tail's batches (module docstring).

    Args:
        config: ``train.content_loss``.
        pairs: the tail's pairs (a grid tail's; they turn rows into boxes and know the units).
        targets: the tail's targets, in order.
        device: where the tail runs.

    Attributes:
        model: the frozen distance model (:class:`atmorep.distance.DistanceModel`).
        channels: ``[C]`` the target index of each of the model's channels.
    """

    def __init__(self, config: ContentLoss, pairs: object, targets: Sequence[Target],
                 device: torch.device | str = "cpu") -> None:
        if not isinstance(pairs, GridPairs):
            raise ConfigError("train.content_loss: a content loss needs a tail that predicts a grid "
                              "(tail.name: grid)")
        model = load_distance(config.path)
        if config.random:
            model = random_distance(model, config.seed)
        model.classifier.eval().requires_grad_(False)  # frozen, batch norms on their running statistics
        self.model = model.to(device)
        self.channels = channel_indices(model.channels, targets, "train.content_loss.distance")
        self.pairs, self.config = pairs, config
        self._generator = torch.Generator().manual_seed(config.seed)  # which images are scored
        self._std = torch.from_numpy(pairs.std[self.channels]).to(device)  # [C]
        self._mean = torch.from_numpy(pairs.mean[self.channels]).to(device)  # [C]

    @property
    def weight(self) -> float:
        return self.config.weight

    def images(self, values: Tensor, count: int) -> Tensor:
        """Rows ``[M, E, K * Q]`` in tail units of ``count`` boxes -> ``[B, E, T, C, f H, f W]`` images
        of the model's channels in physical units."""
        boxes = self.pairs.boxes(values, count)[:, self.channels]  # [B, C, E, T, fH, fW]
        physical = boxes * self._std[:, None, None, None, None] + self._mean[:, None, None, None, None]
        return physical.permute(0, 2, 3, 1, 4, 5)  # [B, E, T, C, fH, fW]

    def __call__(self, residual: Tensor, batch: TailBatch, count: int) -> Tensor:
        """The mean distance (before ``weight``) of the members ``guess + scale * residual`` (``[M, E,
        P]``) of ``count`` boxes to the batch's truth."""
        members = batch.guess[:, None] + batch.scale[:, None] * residual  # [M, E, P]
        if self.config.members == "mean":
            members = members.mean(dim=1, keepdim=True)  # [M, 1, P]
        predicted = self.images(members, count)  # [B, E, T, C, fH, fW]
        truth = self.images(batch.truth[:, None], count).expand_as(predicted)
        predicted, truth = predicted.flatten(0, 2), truth.flatten(0, 2)  # [B E T, C, fH, fW]
        if self.config.images is not None and self.config.images < predicted.shape[0]:
            chosen = torch.randperm(predicted.shape[0], generator=self._generator)[:self.config.images]
            predicted, truth = predicted[chosen.to(predicted.device)], truth[chosen.to(truth.device)]
        return self.model.distance(predicted, truth).mean()  # mean of [N]

    def describe(self) -> dict:
        """What the checkpoint records: the settings, the model's channels and its unit."""
        return {**self.config.model_dump(mode="json"),
                "channels": [[field, level] for field, level in self.model.channels],
                "lag1_distance": self.model.lag1_distance}
