"""Token embedding: values, auxiliary information alpha and position in the box, to width D.

The embedding of a token of field f is

    e = value_embedding(token) + kind_embedding(kind of first guess)
        + difference_embedding(within-token time differences / their scale)
        + alpha_embedding(alpha)  (optional)
        + positional_encoding(level index, time index, latitude index, longitude index).

* **First guess** (``model.first_guess``, the default): a hidden token enters as its first guess
  (:mod:`atmorep.numerics.first_guess`) plus a learned vector per kind of guess (visible tokens have
  their own), and the differences between a token's successive time steps, divided by a per-level
  scale (their RMS in the training data, a buffer saved with the weights), get their own linear map:
  those differences are about 1 % of the values and would hardly show in the value embedding.
  Without the first guess (the original formulation) a MASKED token enters as the learned mask
  embedding alone.

* **Values**: a linear map ``D_f -> D`` (``embedding: linear``), or a small transformer over the
  token's grid points (``embedding: transformer``, :class:`SubTokenEmbedding`). The latter sees each
  point as a sub-token placed by its relative position inside the token, so one module accepts
  tokens of any size (a multi-resolution representation).
* **Alpha** (year, day of year, hour, level, latitude, longitude, resolution; see
  :func:`atmorep.numerics.tokens.token_alpha`) enters as cyclic features and a linear map
  (:func:`alpha_features`). Absolute place and time enter the model through alpha only.
* **Position** in the box: a fixed sinusoidal code per axis, the four axis codes concatenated
  (:func:`positional_encoding`). Each axis owns its own slice of the width, so the code is correct
  for any (non-square) token grid and (l, t, h, w) -> code is injective.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from atmorep.model.attention import SELF, Block
from atmorep.numerics.first_guess import GUESS_KINDS, time_differences
from atmorep.numerics.modes import MASKED

POSITION_MAX_PERIOD = 1000.0  # slowest wavelength of the positional code, in token indices
ALPHA_FEATURES = 20  # length of alpha_features(...)
_HARMONICS = (1.0, 2.0)  # harmonics of the cyclic alpha features
_SUB_POSITION_FREQUENCIES = 4  # frequencies per axis of a grid point's position inside a token


def positional_encoding(grid: tuple[int, int, int, int], dim: int, dtype: torch.dtype = torch.float32,
                        device: torch.device | str | None = None) -> Tensor:
    """Sinusoidal code of every token position in the box, axis codes concatenated.

    The width is split into four slices of ``2 F`` channels, ``F = dim // 8``, one per axis in the
    order (level, time, latitude, longitude); a position ``i`` along an axis gets
    ``[sin(i w_0), ..., sin(i w_{F-1}), cos(i w_0), ..., cos(i w_{F-1})]`` with
    ``w_j = POSITION_MAX_PERIOD ** (-j / F)``; ``w_0 = 1`` makes the code of distinct integer
    positions distinct. The last ``dim - 8 F`` channels are zero.

    Args:
        grid: ``(L, nT, nH, nW)`` the token grid of one field.
        dim: the width D (>= 8).

    Returns:
        ``[L, nT, nH, nW, D]``.
    """
    frequencies = dim // 8
    if frequencies < 1:
        raise ValueError(f"positional encoding needs a width of at least 8, got {dim}")
    omega = POSITION_MAX_PERIOD ** (-torch.arange(frequencies, dtype=torch.float64, device=device)
                                    / frequencies)  # [F]
    parts = []
    for axis, size in enumerate(grid):
        angle = torch.arange(size, dtype=torch.float64, device=device)[:, None] * omega  # [n, F]
        code = torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)  # [n, 2F]
        shape = [1, 1, 1, 1, 2 * frequencies]
        shape[axis] = size
        parts.append(code.reshape(shape).expand(*grid, 2 * frequencies))  # [L, nT, nH, nW, 2F]
    padding = dim - 8 * frequencies
    if padding:
        parts.append(torch.zeros(*grid, padding, dtype=torch.float64, device=device))
    return torch.cat(parts, dim=-1).to(dtype)


class _CodeCache:
    """Fixed codes (:func:`positional_encoding`, :func:`sub_token_positions`) built once per key.

    A plain dict, so nothing reaches the state dict. The codes are built outside inference mode
    (so a code first built during inference can enter autograd later) and not cached while
    ``torch.compile`` traces (the compiled graph builds or folds them itself).
    """

    def __init__(self) -> None:
        self._codes: dict[tuple, Tensor] = {}

    def get(self, build: Callable[..., Tensor], *args) -> Tensor:
        """``build(*args)``, from the cache when built before with the same ``args``."""
        if torch.compiler.is_compiling():
            return build(*args)
        key = (build.__name__, *args)
        code = self._codes.get(key)
        if code is None:
            with torch.inference_mode(False):
                code = self._codes[key] = build(*args)
        return code


def alpha_features(alpha: Tensor) -> Tensor:
    """Scaled and cyclic features of the auxiliary values.

    Features: ``(year - 2000) / 50``, ``level / 1000``, ``log1p(level) / log(1001)``,
    ``log(resolution)``, and ``sin(k a), cos(k a)`` for ``k`` in (1, 2) of the angles
    ``2 pi day_of_year / 365.25``, ``2 pi hour / 24``, latitude and longitude (in radians), so that
    longitudes 0 and 360 (and the last and first hour of a day) give the same features.

    Args:
        alpha: ``[..., 7]`` columns as :data:`atmorep.numerics.tokens.ALPHA_NAMES`.

    Returns:
        ``[..., ALPHA_FEATURES]`` in the dtype of ``alpha``.
    """
    year, day, hour, level, latitude, longitude, resolution = alpha.unbind(-1)
    level = level.clamp(min=0.0)
    scalars = [(year - 2000.0) / 50.0, level / 1000.0, torch.log1p(level) / math.log(1001.0),
               torch.log(resolution.clamp(min=1e-6))]
    angles = [day * (2 * math.pi / 365.25), hour * (2 * math.pi / 24.0), torch.deg2rad(latitude),
              torch.deg2rad(longitude)]
    cyclic = [f(k * a) for a in angles for k in _HARMONICS for f in (torch.sin, torch.cos)]
    return torch.stack(scalars + cyclic, dim=-1)


class AlphaEmbedding(nn.Module):
    """``[..., 7]`` alpha -> ``[..., D]``: :func:`alpha_features` and a linear map."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(ALPHA_FEATURES, dim)

    def forward(self, alpha: Tensor) -> Tensor:
        return self.proj(alpha_features(alpha.to(self.proj.weight.dtype)))


def sub_token_positions(token_size: tuple[int, int, int], dtype: torch.dtype = torch.float32,
                        device: torch.device | str | None = None) -> Tensor:
    """Sinusoidal features of each grid point's relative position inside a token.

    A point ``i`` of an axis of extent ``n`` sits at ``r = (i + 0.5) / n`` in (0, 1); its features
    are ``sin(pi k r), cos(pi k r)`` for ``k = 1..4``. Tokens of any size get comparable features.

    Returns:
        ``[tt*th*tw, 24]``, points in the token's (time, latitude, longitude) flattening order.
    """
    k = torch.arange(1, _SUB_POSITION_FREQUENCIES + 1, dtype=torch.float64, device=device)  # [K]
    axes = [(torch.arange(n, dtype=torch.float64, device=device) + 0.5) / n for n in token_size]
    grids = torch.meshgrid(*axes, indexing="ij")  # 3 x [tt, th, tw]
    features = []
    for r in grids:
        angle = math.pi * r.reshape(-1, 1) * k  # [D_f, K]
        features += [torch.sin(angle), torch.cos(angle)]
    return torch.cat(features, dim=-1).to(dtype)  # [D_f, 6K]


class SubTokenEmbedding(nn.Module):
    """A small transformer over the grid points of each token, mean-pooled to width D.

    Every point is a sub-token: ``value * w + position_features @ P``; one or more pre-norm blocks
    of width ``width`` mix them; the mean over points, normalised, is mapped to D.

    Args:
        token_size: ``(tt, th, tw)`` of the field (the default for :meth:`forward`).
        dim: output width D.
        width: the sub-token width (default ``min(D, 64)``).
        layers: number of blocks.
    """

    def __init__(self, token_size: tuple[int, int, int], dim: int, width: int | None = None,
                 layers: int = 1) -> None:
        super().__init__()
        self.token_size = tuple(token_size)
        width = width or min(dim, 64)
        self.value = nn.Linear(1, width)
        self.position = nn.Linear(6 * _SUB_POSITION_FREQUENCIES, width)
        self.blocks = nn.ModuleList(Block(width, {SELF: max(1, width // 16)}) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, dim)
        self._codes = _CodeCache()

    def forward(self, tokens: Tensor, token_size: tuple[int, int, int] | None = None) -> Tensor:
        """``[..., tt*th*tw]`` -> ``[..., D]``; ``token_size`` defaults to the field's."""
        token_size = tuple(token_size or self.token_size)
        lead, points = tokens.shape[:-1], tokens.shape[-1]
        if points != math.prod(token_size):
            raise ValueError(f"token length {points} does not match token size {token_size}")
        position = self._codes.get(sub_token_positions, token_size, self.position.weight.dtype,
                                   tokens.device)  # [D_f, 24]
        x = self.value(tokens.reshape(-1, points, 1)) + self.position(position)  # [..., D_f] -> [M, D_f, w]
        for block in self.blocks:
            x = block(x)
        pooled = self.out(self.norm(x).mean(dim=1))  # [M, D]
        return pooled.reshape(*lead, -1)  # [M, D] -> [..., D]


class FieldEmbedding(nn.Module):
    """Embed one field's tokens, modes and alpha into its sequence of states ``[B, N, D]``.

    Without a first guess, MASKED tokens get the learned mask embedding instead of their value
    embedding; their values are zeroed before the value embedding, so neither their values nor NaNs
    in them reach the output or the gradients. NOISED and COARSENED tokens are embedded like visible
    ones. With a first guess, every token is embedded from its values (the guess at targets) plus
    the embedding of its kind of guess and of its scaled time differences.

    Args:
        token_size: ``(tt, th, tw)``.
        dim: width D.
        kind: ``"linear"`` or ``"transformer"`` (see the module docstring).
        alpha_embedding: add the embedding of alpha.
        dropout: dropout on the sum.
        first_guess: embed the first guess (see the module docstring).
        levels: the field's number of levels (the length of the difference scales).
    """

    def __init__(self, token_size: tuple[int, int, int], dim: int, kind: str = "linear",
                 alpha_embedding: bool = True, dropout: float = 0.0, first_guess: bool = False,
                 levels: int = 1) -> None:
        super().__init__()
        values = math.prod(token_size)
        if kind == "linear":
            self.values: nn.Module = nn.Linear(values, dim)
        elif kind == "transformer":
            self.values = SubTokenEmbedding(token_size, dim)
        else:
            raise ValueError(f"model.embedding: unknown kind '{kind}' (known: linear, transformer)")
        self.token_size = tuple(token_size)
        self.first_guess = first_guess
        if not first_guess:
            self.mask_token = nn.Parameter(torch.zeros(dim))
        else:
            self.kind_tokens = nn.Parameter(torch.zeros(len(GUESS_KINDS), dim))
            differences = (token_size[0] - 1) * token_size[1] * token_size[2]
            self.differences = nn.Linear(differences, dim) if differences else None
            self.register_buffer("difference_scale", torch.ones(levels))
        self.alpha = AlphaEmbedding(dim) if alpha_embedding else None
        self.dropout = nn.Dropout(dropout)
        self.dim = dim
        self._codes = _CodeCache()

    def forward(self, tokens: Tensor, modes: Tensor, alpha: Tensor, kinds: Tensor | None = None) -> Tensor:
        """Embed a field.

        Args:
            tokens: ``[B, L, nT, nH, nW, D_f]``: with a first guess, the guess at target tokens.
            modes: ``[B, L, nT, nH, nW]`` int8 token modes.
            alpha: ``[B, L, nT, nH, nW, 7]``.
            kinds: ``[B, L, nT, nH, nW]`` int8 kind of first guess (with a first guess).

        Returns:
            ``[B, N, D]`` with ``N = L * nT * nH * nW`` in (L, nT, nH, nW) order.
        """
        weight_dtype = next(self.values.parameters()).dtype
        if self.first_guess:
            x = self.values(tokens.to(weight_dtype))  # [B, L, nT, nH, nW, D]
            x = x + self.kind_tokens.to(x.dtype)[kinds.long()]
            if self.differences is not None:
                scale = self.difference_scale.to(weight_dtype)[:, None, None, None, None]  # [L, 1, 1, 1, 1]
                x = x + self.differences(time_differences(tokens.to(weight_dtype), self.token_size) / scale)
        else:
            masked = (modes == MASKED)[..., None]  # [B, L, nT, nH, nW, 1]
            x = self.values(tokens.to(weight_dtype).masked_fill(masked, 0.0))  # [B, L, nT, nH, nW, D]
            x = torch.where(masked, self.mask_token.to(x.dtype), x)
        if self.alpha is not None:
            x = x + self.alpha(alpha)
        x = x + self._codes.get(positional_encoding, tuple(tokens.shape[1:5]), self.dim, x.dtype, x.device)
        return self.dropout(x.flatten(1, 4))  # [B, L, nT, nH, nW, D] -> [B, N, D]
