"""Coarsening: block means over latitude and longitude, the one implementation used everywhere.

The model learns downscaling from ``COARSENED`` tokens (:func:`atmorep.tasks.masking.coarsen_tokens`,
blocks inside each token), is given a coarse field at inference (:func:`coarsen` on the domain, blocks
from index 0, tiles placed on the block grid) and is scored against bilinear and bicubic upsampling of
the same block means (:func:`atmorep.evaluate.baseline_methods.coarsen`). All three call
:func:`block_means`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from atmorep.errors import DataError

Factor = int | tuple[int, int]


def _pair(factor: Factor) -> tuple[int, int]:
    pair = (factor, factor) if isinstance(factor, int) else tuple(factor)
    if len(pair) != 2 or any(isinstance(f, bool) or int(f) != f or f < 1 for f in pair):
        raise DataError(f"coarsening: the factor must be a positive integer (or one per axis), got {factor}")
    return int(pair[0]), int(pair[1])


def block_means(values: Tensor, factor: Factor, *, skip_nan: bool = False) -> Tensor:
    """Means of blocks of ``factor`` points along latitude and longitude (the last two dims).

    Blocks start at index 0; where a size is not a multiple of the factor the last block along that
    axis is shorter (the mean of the points it holds).

    Args:
        values: ``[..., H, W]`` floating.
        factor: block length in points, one for both axes or ``(latitude, longitude)``.
        skip_nan: leave NaN points out of their block's mean (a block of NaN only is NaN); by default a
            NaN makes its block NaN (the model's inputs never hold NaN, and the check would cost a
            device synchronisation per call).

    Returns:
        ``[..., ceil(H / fh), ceil(W / fw)]``.
    """
    fh, fw = _pair(factor)
    *lead, h, w = values.shape
    flat = values.reshape(-1, 1, h, w)  # [N, 1, H, W]

    def pool(x: Tensor) -> Tensor:
        return torch.nn.functional.avg_pool2d(x, (fh, fw), ceil_mode=True, count_include_pad=False)

    if skip_nan:  # the mean of the known points: pooled sums over pooled counts
        known = ~torch.isnan(flat)
        means = pool(torch.where(known, flat, 0.0)) / pool(known.to(flat.dtype))
    else:
        means = pool(flat)
    return means.reshape(*lead, *means.shape[-2:])


def coarsen(values: Tensor, factor: Factor) -> Tensor:
    """The field seen at a ``factor`` times coarser resolution, on its own grid: every point holds the
    mean of its block (:func:`block_means` restored to full size by nearest upsampling).

    Args:
        values: ``[..., H, W]`` floating.
        factor: block length in points, one for both axes or ``(latitude, longitude)``.

    Returns:
        ``[..., H, W]``.
    """
    fh, fw = _pair(factor)
    h, w = values.shape[-2:]
    means = block_means(values, (fh, fw))
    return means.repeat_interleave(fh, dim=-2).repeat_interleave(fw, dim=-1)[..., :h, :w]
