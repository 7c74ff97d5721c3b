"""The first guess of hidden tokens: what the visible part of a box says about them, before any network.

Every target token of a masked box starts from a deterministic guess built from what the model is
given (visible values, noised or coarsened values; never the hidden truth). The network then predicts
the scaled correction to it (docs/training.md, "First guess and residuals"). The rule depends on what
is known around a token, and each target token is labelled with the *kind* of its guess (:data:`GUESS_KINDS`):

* ``between``: a MASKED token whose grid-point column (same level, latitude, longitude) has visible
  steps before and after it. Per point, a least-squares polynomial in time through the nearest
  ``CONTEXT_STEPS`` visible steps on each side, of degree ``min(3, n - 1)`` for ``n`` points
  (a cubic through six points for the usual 3 + 3): it reproduces any cubic in time exactly.
* ``trend``: a MASKED token whose column has visible steps on one side only (a forecast). Per point,
  the nearest visible value plus a *damped* linear trend: the least-squares slope ``b`` through the
  nearest ``CONTEXT_STEPS`` visible steps, extrapolated over ``h`` steps as
  ``x_near + b * sum_{i=1..h} TREND_DAMPING**i``. One visible step gives persistence. The damping is
  the robust choice over a plain trend: the trend of a few steps is noisy in rough fields (precipitation,
  0.25 degree data) and its error grows with the lead; damping keeps the guess between persistence
  and the trend (with ``TREND_DAMPING = 1`` it is the plain trend, reproducing a linear trend and a
  constant exactly).
* ``spatial``: a MASKED token whose whole column is hidden (spatial infill). Per time step, the
  hidden points are filled from the known ones (visible points and points that got a temporal guess)
  with a smooth mask-weighted pyramid fill (:func:`spatial_fill`); a step with nothing known gets
  zero, the per-level mean in normalised units.
* ``coarse``: a COARSENED token: the block means of the box (the coarse field) interpolated back by
  cubic splines in latitude and longitude (:func:`coarse_guess`, the evaluation's bicubic baseline
  within the box). On the default corpus, after the tiles are blended, its error is 37-52 % below
  bilinear upsampling and 5-6 % below bicubic convolution; where the token extent is not a multiple
  of the coarsening factor, its coarsened values.
* ``noise``: a NOISED token: its noised values.
* ``model``: a GIVEN token: another model's values for it (model correction).

Visible tokens keep their values (kind ``visible``). Because the temporal rules are linear with
weights summing to one, the guess commutes with the per-level normalisation.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.interpolate import make_interp_spline
from torch import Tensor

from atmorep.numerics.coarsening import block_means
from atmorep.numerics.modes import COARSENED, GIVEN, MASKED, NOISED, VISIBLE
from atmorep.numerics.temporal_fit import TREND_DAMPING, temporal_weights
from atmorep.numerics.tokens import tokenise, untokenise

GUESS_KINDS = ("visible", "between", "trend", "spatial", "coarse", "noise", "model")
KIND_VISIBLE, SPATIAL, COARSE, NOISE, MODEL = 0, 3, 4, 5, 6  # BETWEEN = 1 and TREND = 2 come with the fit


def _columns(values: Tensor, token_size: tuple[int, int, int]) -> Tensor:
    """``[B, L, T, H, W]`` to token columns ``[B, L, nH, nW, T, th * tw]``."""
    b, levels, t, h, w = values.shape
    _, th, tw = token_size
    x = values.reshape(b, levels, t, h // th, th, w // tw, tw)  # [B, L, T, nH, th, nW, tw]
    return x.permute(0, 1, 3, 5, 2, 4, 6).reshape(b, levels, h // th, w // tw, t, th * tw)


def _uncolumns(columns: Tensor, token_size: tuple[int, int, int]) -> Tensor:
    """Inverse of :func:`_columns`."""
    b, levels, nh, nw, t, _ = columns.shape
    _, th, tw = token_size
    x = columns.reshape(b, levels, nh, nw, t, th, tw)
    x = x.permute(0, 1, 4, 2, 5, 3, 6)  # [B, L, T, nH, th, nW, tw]
    return x.reshape(b, levels, t, nh * th, nw * tw)


def temporal_guess(values: Tensor, visible: Tensor, token_size: tuple[int, int, int],
                   damping: float = TREND_DAMPING) -> tuple[Tensor, Tensor]:
    """The temporal guess of every step of every token column.

    Args:
        values: ``[B, L, T, H, W]`` (values at hidden steps are ignored).
        visible: ``[B, L, nT, nH, nW]`` bool, the visible tokens.
        token_size: ``(tt, th, tw)``.
        damping: per-step damping of the trend.

    Returns:
        The guess ``[B, L, T, H, W]`` (the values at visible steps, zero where a column has no
        visible step) and the kind of each token ``[B, L, nT, nH, nW]`` int8.
    """
    tt = token_size[0]
    steps = visible.permute(0, 1, 3, 4, 2).repeat_interleave(tt, dim=-1)  # [B, L, nH, nW, T]
    flat = steps.reshape(-1, steps.shape[-1]).cpu()
    patterns, inverse = torch.unique(flat, dim=0, return_inverse=True)  # [P, T], [C]
    fits = [temporal_weights(tuple(bool(v) for v in row), damping=damping) for row in patterns.tolist()]
    weights = torch.as_tensor(np.stack([f[0] for f in fits]), dtype=values.dtype)[inverse]  # [C, T, T]
    kinds = torch.as_tensor(np.stack([f[1] for f in fits]))[inverse]  # [C, T]
    columns = _columns(torch.where(_points(visible, token_size), values, 0.0), token_size)
    shape = columns.shape
    guess = torch.bmm(weights.to(values.device), columns.reshape(-1, *shape[-2:]))  # [C, T, th*tw]
    token_kinds = kinds.reshape(*steps.shape)[..., ::tt].permute(0, 1, 4, 2, 3)  # [B, L, nT, nH, nW]
    return _uncolumns(guess.reshape(shape), token_size), token_kinds.to(visible.device)


def _points(tokens: Tensor, token_size: tuple[int, int, int]) -> Tensor:
    """A token-level ``[B, L, nT, nH, nW]`` tensor spread to its points ``[B, L, T, H, W]``."""
    for dim, size in zip((2, 3, 4), token_size):
        tokens = tokens.repeat_interleave(size, dim=dim)
    return tokens


def spatial_fill(values: Tensor, known: Tensor) -> Tensor:
    """Fill unknown points of 2-D slices smoothly from the known ones (a pyramid, "push-pull", fill).

    The known values are averaged into ever coarser grids (2 x 2 mask-weighted means) until every
    cell holds a known point; going back down, each unknown cell takes the bilinear interpolation
    of the filled grid above it. Known points keep their values; a slice without any known point is
    zero.

    Args:
        values: ``[N, H, W]``.
        known: ``[N, H, W]`` bool.

    Returns:
        ``[N, H, W]``.
    """
    weight = known.to(values.dtype)[:, None]  # [N, 1, H, W]
    total = torch.where(known, values, 0.0)[:, None]
    pyramid = [(total, weight)]
    while not bool((weight > 0).all()) and max(weight.shape[-2:]) > 1:
        total = F.avg_pool2d(total, 2, ceil_mode=True)  # the divisor cancels in total / weight
        weight = F.avg_pool2d(weight, 2, ceil_mode=True)
        pyramid.append((total, weight))
    filled = None
    for total, weight in reversed(pyramid):
        mean = total / weight.clamp(min=torch.finfo(weight.dtype).tiny)
        below = (F.interpolate(filled, size=total.shape[-2:], mode="bilinear", align_corners=False)
                 if filled is not None else torch.zeros_like(total))
        filled = torch.where(weight > 0, mean, below)
    return filled[:, 0]


@functools.lru_cache(maxsize=64)
def spline_matrix(coarse: int, factor: int) -> np.ndarray:
    """``[coarse * factor, coarse]``: the interpolating cubic spline (not-a-knot ends) through ``coarse``
    block means at their block centres, evaluated at every fine point (lower degree below 4 blocks)."""
    centres = factor * np.arange(coarse) + (factor - 1) / 2.0
    degree = min(3, coarse - 1)
    if degree == 0:
        return np.ones((coarse * factor, 1))
    return make_interp_spline(centres, np.eye(coarse), k=degree)(np.arange(coarse * factor, dtype=np.float64))


def coarse_guess(values: Tensor, factor: int) -> Tensor:
    """The ``factor x factor`` block means of ``values [N, H, W]`` (H, W multiples of ``factor``)
    interpolated back to every point by cubic splines along latitude and longitude."""
    means = block_means(values, factor)  # [N, H / f, W / f]
    rows, cols = (torch.as_tensor(spline_matrix(n, factor), dtype=values.dtype, device=values.device)
                  for n in means.shape[-2:])  # [H, H / f], [W, W / f]
    return rows @ means @ cols.T  # [N, H, W]


def first_guess(inputs: Tensor, modes: Tensor, token_size: tuple[int, int, int], coarsen_factor: int,
                damping: float = TREND_DAMPING) -> tuple[Tensor, Tensor]:
    """The first guess of every token of one field (see the module docstring).

    Args:
        inputs: ``[B, L, nT, nH, nW, D]`` the model's input tokens: visible values, noised or
            coarsened values; the values of MASKED tokens are ignored.
        modes: ``[B, L, nT, nH, nW]`` token modes.
        token_size: ``(tt, th, tw)``.
        coarsen_factor: the block length of COARSENED tokens.
        damping: per-step damping of the trend.

    Returns:
        The guess ``[B, L, nT, nH, nW, D]`` (the inputs at visible tokens) and the kind of every token
        ``[B, L, nT, nH, nW]`` int8 (:data:`GUESS_KINDS`).
    """
    work = inputs.to(torch.promote_types(inputs.dtype, torch.float32))
    values = untokenise(work, token_size)  # [B, L, T, H, W]
    visible = modes == VISIBLE
    masked = modes == MASKED
    kinds = torch.full_like(modes, KIND_VISIBLE, dtype=torch.int8)
    guess = values
    if not bool(masked.any()):  # coarsened or noised targets only: no temporal or spatial guess
        return _guess_corrupted(guess, kinds, modes, token_size, coarsen_factor, inputs.dtype)
    temporal, fitted = temporal_guess(values, visible, token_size, damping)
    kinds = torch.where(masked, fitted, KIND_VISIBLE).to(torch.int8)
    timed = masked & (kinds != KIND_VISIBLE)
    guess = torch.where(_points(timed, token_size), temporal, values)
    lonely = masked & ~timed  # whole column hidden
    if bool(lonely.any()):
        known = _points(visible | timed, token_size)  # points with a value or a temporal guess
        h, w = guess.shape[-2:]
        filled = spatial_fill(guess.reshape(-1, h, w), known.reshape(-1, h, w)).reshape(guess.shape)
        guess = torch.where(_points(lonely, token_size), filled, guess)
        kinds = torch.where(lonely, SPATIAL, kinds).to(torch.int8)
    return _guess_corrupted(guess, kinds, modes, token_size, coarsen_factor, inputs.dtype)


def _guess_corrupted(guess: Tensor, kinds: Tensor, modes: Tensor, token_size: tuple[int, int, int],
                     coarsen_factor: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Add the guesses of COARSENED, NOISED and GIVEN tokens to ``guess [B, L, T, H, W]`` and ``kinds``;
    tokenise."""
    coarse = modes == COARSENED
    if bool(coarse.any()):
        _, th, tw = token_size
        if th % coarsen_factor == 0 and tw % coarsen_factor == 0:
            h, w = guess.shape[-2:]
            upsampled = coarse_guess(guess.reshape(-1, h, w), coarsen_factor).reshape(guess.shape)
            guess = torch.where(_points(coarse, token_size), upsampled, guess)
        kinds = torch.where(coarse, COARSE, kinds).to(torch.int8)
    kinds = torch.where(modes == NOISED, NOISE, kinds).to(torch.int8)
    kinds = torch.where(modes == GIVEN, MODEL, kinds).to(torch.int8)
    return tokenise(guess, token_size).to(dtype), kinds


def time_differences(tokens: Tensor, token_size: tuple[int, int, int]) -> Tensor:
    """``[..., tt*th*tw]`` tokens to their within-token differences in time ``[..., (tt-1)*th*tw]``."""
    tt = token_size[0]
    x = tokens.unflatten(-1, (tt, math.prod(token_size[1:])))  # [..., tt, th*tw]
    return (x[..., 1:, :] - x[..., :-1, :]).flatten(-2)
