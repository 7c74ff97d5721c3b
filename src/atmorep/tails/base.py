"""What every tail shares: the batch it is given, its members, its loss and its spread calibration.

A tail predicts ``P`` values for each of ``M`` rows (a token position's fine block, or one
observation) in *tail units*: each target's values less its mean, over its standard deviation (both
from the fine-tuning period). Like the backbone's ensemble tail it predicts corrections of a first
guess: member ``e`` is ``guess + scale * r_e`` with ``r`` the tail's residuals and ``scale`` the RMS
error of the guess for that target in the fine-tuning period, and the losses score ``r`` against
``(truth - guess) / scale``. Outside training each member's deviation from the ensemble mean is
multiplied by its target's spread factor (buffer ``spread [G, K]``), fitted on validation data after
fine-tuning (:func:`spread_factors`). ``G`` counts the groups of rows a tail calibrates apart (one
by default; the observation tail's known and unseen sites).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from atmorep.train.losses import get_loss


@dataclass
class TailBatch:
    """The rows of a tail's batch, in tail units.

    Attributes:
        guess: ``[M, P]`` the first guess.
        scale: ``[M, P]`` the residual scale of each value.
        target: ``[M, P]`` int64 index of each value's target (into the tail's targets).
        truth: ``[M, P]`` the true values (None at inference).
        extra: what the tail needs besides (positions, sites, fine-grid indices).
    """

    guess: Tensor
    scale: Tensor
    target: Tensor
    truth: Tensor | None = None
    extra: dict[str, Tensor] = field(default_factory=dict)

    def to(self, device: torch.device) -> TailBatch:
        move = {name: value.to(device) for name, value in self.extra.items()}
        truth = None if self.truth is None else self.truth.to(device)
        return TailBatch(self.guess.to(device), self.scale.to(device), self.target.to(device), truth, move)


class Tail(nn.Module, abc.ABC):
    """A tail: :meth:`residuals` from the backbone's features and a batch; the rest is shared."""

    name = "tail"
    spread_groups = 1

    def __init__(self, targets: int) -> None:
        super().__init__()
        self.register_buffer("spread", torch.ones(self.spread_groups, targets))

    def group(self, batch: TailBatch) -> Tensor:
        """``[M, 1]`` int64 the spread group of each row (all 0 by default)."""
        return torch.zeros_like(batch.target[:, :1])

    def calibration_sets(self, pairs):
        """The pairs each spread group is calibrated on, in group order (default: ``pairs`` itself)."""
        return [pairs]

    @abc.abstractmethod
    def residuals(self, features: Tensor, batch: TailBatch) -> Tensor:
        """``[M, E, P]`` scaled corrections from features ``[B, nT, nH, nW, C]``."""

    def initialise(self, pairs) -> None:
        """Set what can be measured on the fine-tuning data before the first step (none by default)."""

    def members(self, features: Tensor, batch: TailBatch) -> tuple[Tensor, Tensor]:
        """The members ``[M, E, P]`` in tail units (spread-calibrated outside training) and the residuals."""
        residual = self.residuals(features, batch)
        if not self.training and residual.shape[1] > 1:
            factor = self.spread[self.group(batch), batch.target][:, None]  # [M, 1, P]
            mean = residual.mean(dim=1, keepdim=True)
            residual = mean + factor * (residual - mean)
        return batch.guess[:, None] + batch.scale[:, None] * residual, residual


def tail_loss(residual: Tensor, batch: TailBatch, weights: Mapping[str, float]) -> Tensor:
    """The weighted sum of the losses (``train.losses`` names) of the residuals ``[M, E, P]`` against
    ``(truth - guess) / scale``."""
    goal = (batch.truth - batch.guess) / batch.scale  # [M, P]
    return sum(weight * get_loss(name)(residual, goal) for name, weight in weights.items() if weight)


@torch.no_grad()
def spread_factors(residuals: list[Tensor], batches: list[TailBatch], targets: int) -> Tensor:
    """``[K]`` per target the factor that makes the spread match the ensemble mean's error.

    For an ensemble of E members drawn like the truth, ``E[(mean - truth)^2] = (1 + 1/E) E[var]`` with
    the unbiased member variance; the factor is the square root of the measured ratio of the two.
    """
    error = torch.zeros(targets, dtype=torch.float64)
    variance = torch.zeros(targets, dtype=torch.float64)
    for residual, batch in zip(residuals, batches, strict=True):
        goal = (batch.truth - batch.guess) / batch.scale
        members = residual.double()
        e = members.shape[1]
        squared = (members.mean(dim=1) - goal.double()) ** 2  # [M, P]
        var = members.var(dim=1, unbiased=True) * (1.0 + 1.0 / e)
        error.index_add_(0, batch.target.flatten().cpu(), squared.flatten().cpu())
        variance.index_add_(0, batch.target.flatten().cpu(), var.flatten().cpu())
    factor = torch.sqrt(error / variance.clamp_min(1e-12))
    return torch.where(variance > 0, factor, torch.ones_like(factor)).float()
