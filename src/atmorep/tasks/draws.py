"""Random draws of masking: uniform numbers, MAE-style token shuffles and ratio draws.

Every random number comes from the caller's ``torch.Generator`` (drawn on the generator's device), so
masking is reproducible from the generator state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from atmorep.tasks.base import Shape5


def uniform(shape: Sequence[int], generator: torch.Generator, dtype: torch.dtype = torch.float64) -> Tensor:
    """``U[0, 1)`` samples drawn on the generator's device."""
    return torch.rand(tuple(shape), generator=generator, device=generator.device, dtype=dtype)


def normal(shape: Sequence[int], generator: torch.Generator) -> Tensor:
    """``N(0, 1)`` samples drawn on the generator's device."""
    return torch.randn(tuple(shape), generator=generator, device=generator.device)


def integer_below(upper: Tensor, generator: torch.Generator) -> Tensor:
    """Uniform integers in ``[0, upper)`` elementwise (``upper >= 1``), int64, shape of ``upper``."""
    draw = torch.floor(uniform(upper.shape, generator) * upper).long()
    return torch.minimum(draw, upper - 1)


@dataclass(frozen=True)
class TokenShuffle:
    """A random permutation of each sample's N tokens (MAE style).

    Attributes:
        order: ``[B, N]`` int64, the token indices in shuffled order (argsort of uniform noise).
        restore: ``[B, N]`` int64, ``argsort(order)``: position of each token in the shuffled order.
    """

    order: Tensor
    restore: Tensor

    @classmethod
    def draw(cls, batch: int, num_tokens: int, generator: torch.Generator) -> TokenShuffle:
        noise = uniform((batch, num_tokens), generator)  # [B, N]
        order = torch.argsort(noise, dim=1, stable=True)
        return cls(order=order, restore=torch.argsort(order, dim=1, stable=True))

    def shuffle(self, values: Tensor) -> Tensor:
        """``[B, N, ...]`` in token order to shuffled order."""
        return _gather_rows(values, self.order)

    def unshuffle(self, values: Tensor) -> Tensor:
        """``[B, N, ...]`` in shuffled order back to token order."""
        return _gather_rows(values, self.restore)

    def first(self, counts: Tensor) -> Tensor:
        """``[B, N]`` bool, True for the first ``counts[b]`` tokens of sample b's shuffled order."""
        rank = torch.arange(self.order.shape[1], device=self.order.device)
        return self.unshuffle(rank[None, :] < counts[:, None].to(self.order.device))


def _gather_rows(values: Tensor, index: Tensor) -> Tensor:
    """``values[b, index[b, i], ...]`` for ``values [B, N, ...]`` and ``index [B, N]``."""
    index = index.reshape(*index.shape, *([1] * (values.ndim - 2)))  # [B, N, 1, ...]
    return torch.gather(values, 1, index.expand(-1, -1, *values.shape[2:]))


@dataclass(frozen=True)
class RatioDraw:
    """A random choice of ``counts[b] = round(ratios[b] * N)`` tokens per sample.

    Attributes:
        ratios: ``[B]`` float64 masking ratio of each sample.
        counts: ``[B]`` int64 number of chosen tokens.
        shuffle: the permutation whose first ``counts[b]`` tokens are chosen.
        chosen: ``[B, L, nT, nH, nW]`` bool.
    """

    ratios: Tensor
    counts: Tensor
    shuffle: TokenShuffle
    chosen: Tensor


def draw_ratio(shape: Shape5, ratios: Tensor, generator: torch.Generator) -> RatioDraw:
    """Choose ``round(ratios[b] * N)`` tokens of each sample uniformly without replacement."""
    b, n = shape[0], math.prod(shape[1:])
    counts = torch.round(ratios * n).long()  # round half to even, as Python's round
    shuffle = TokenShuffle.draw(b, n, generator)
    chosen = shuffle.first(counts).reshape(shape)  # [B, N] -> [B, L, nT, nH, nW]
    return RatioDraw(ratios=ratios, counts=counts, shuffle=shuffle, chosen=chosen)
