"""What the multiformer returns: per predicted field the ensemble of every target token."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass(frozen=True)
class FieldPrediction:
    """The ensemble predicted for the M target tokens of one field.

    Targets are the tokens with ``modes != VISIBLE``, in row-major order of ``[B, L, nT, nH, nW]``
    (the order of ``torch.nonzero``), so ``values[modes != 0]`` lines up with ``mean``.

    Attributes:
        members: ``[M, E, D_f]`` the E ensemble members.
        mean: ``[M, D_f]`` the ensemble mean.
        guess: ``[M, D_f]`` the first guess of the targets (None without a first guess).
        scale: ``[M, 1]`` the scale of each target's correction (None without a first guess).
        residual: ``[M, E, D_f]`` the scaled corrections ``(members - guess) / scale`` as the tail
            gave them (None without a first guess).
        level: ``[M]`` int64 level index of each target (None without a first guess).
        kind: ``[M]`` int64 kind of first guess of each target (None without a first guess).

    The spread is not kept here: evaluation computes it from the members with the unbiased (E - 1)
    variance (:func:`atmorep.evaluate.metrics.spread`), the losses from the members as they need.
    """

    members: Tensor
    mean: Tensor
    guess: Tensor | None = None
    scale: Tensor | None = None
    residual: Tensor | None = None
    level: Tensor | None = None
    kind: Tensor | None = None

    @classmethod
    def from_members(cls, members: Tensor, **first_guess: Tensor | None) -> FieldPrediction:
        """The prediction of ``members [M, E, D_f]`` with its mean (``first_guess``: guess, scale,
        residual, level and kind)."""
        return cls(members=members, mean=members.mean(dim=1), **first_guess)


@dataclass(frozen=True)
class ModelOutput:
    """The multiformer's output.

    Attributes:
        fields: predicted field name -> :class:`FieldPrediction`, in the configuration's order.
            (Attention weights are recorded by :func:`atmorep.model.attention.record_attention`.)
    """

    fields: dict[str, FieldPrediction] = field(default_factory=dict)
