"""The ensemble tail: E independent linear heads from a token's decoder state to its values.

Member ``e`` of a target token with decoder state ``s`` (width D) is ``s @ W_e + b_e`` (D_f values),
computed for all members at once as one batched product over the ``[E, D, D_f]`` weights. With a
first guess (``model.first_guess``) these outputs are the *scaled corrections*: member ``e`` is
``guess + scale * (s @ W_e + b_e)`` (:meth:`EnsembleTail.members`), with ``scale`` the RMS of the
guess's error for the token's level and kind of guess, estimated from training data and kept in the
buffer ``scale [L, K]`` (saved with the weights). Outside training (``module.eval()``) each member's
deviation from the ensemble mean is multiplied by the spread factor of its level and kind of guess,
the buffer ``spread [L, K]``, fitted on validation data when training ends
(:mod:`atmorep.train.calibration`). The training loss never sees them, and the training loop keeps
them at one until its last validation is done. The tail
runs outside autocast, in the precision of its parameters promoted to at least float32, so the
predicted values and the losses on them keep full precision under mixed-precision training.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor, nn


def autocast_disabled(device_type: str) -> contextlib.AbstractContextManager:
    """A context that turns autocast off on ``device_type`` (a no-op where autocast does not exist)."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


class EnsembleTail(nn.Module):
    """E independent linear heads ``D -> D_f``.

    Args:
        dim: decoder width D.
        values: values per token D_f.
        members: ensemble size E.
    """

    def __init__(self, dim: int, values: int, members: int, scales: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, dim, values))
        self.bias = nn.Parameter(torch.empty(members, values))
        if scales is not None:  # (levels, kinds of first guess)
            self.register_buffer("scale", torch.ones(scales))
            self.register_buffer("spread", torch.ones(scales))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each head initialised independently like ``nn.Linear``: ``U(-1/sqrt(D), 1/sqrt(D))``."""
        bound = 1.0 / math.sqrt(self.weight.shape[1])
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, states: Tensor) -> Tensor:
        """Predict every member.

        Args:
            states: ``[M, D]`` decoder states of the target tokens.

        Returns:
            ``[M, E, D_f]`` at least float32.
        """
        dtype = torch.promote_types(self.weight.dtype, torch.float32)
        with autocast_disabled(states.device.type):
            members = torch.einsum("md,edf->mef", states.to(dtype), self.weight.to(dtype))  # [M, E, D_f]
            return members + self.bias.to(dtype)

    def members(self, states: Tensor, guess: Tensor, level: Tensor,
                kind: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Members as the first guess plus the scaled correction (spread-calibrated outside training).

        Args:
            states: ``[M, D]`` decoder states of the target tokens.
            guess: ``[M, D_f]`` their first guess.
            level: ``[M]`` int64 level index of each token.
            kind: ``[M]`` int64 kind of first guess of each token.

        Returns:
            The members ``[M, E, D_f]``, the scaled corrections ``[M, E, D_f]`` (what the losses
            score) and the scale of each token ``[M, 1]``.
        """
        residual = self(states)  # [M, E, D_f]
        level = level if self.scale.shape[0] > 1 else torch.zeros_like(level)  # levels left to the store
        scale = self.scale[level, kind].to(residual.dtype)[:, None]  # [M, 1]
        if not self.training and residual.shape[1] > 1:
            factor = self.spread[level, kind].to(residual.dtype)[:, None, None]  # [M, 1, 1]
            mean = residual.mean(dim=1, keepdim=True)  # the deviations scaled; exact for a factor of one
            residual = factor * residual + (1.0 - factor) * mean
        return guess.to(residual.dtype)[:, None] + scale[:, None] * residual, residual, scale
