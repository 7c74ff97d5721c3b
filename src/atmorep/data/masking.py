"""Masking as index arithmetic: which tokens are targets, and how their input is corrupted.

A *task* only says which tokens of a field are to be predicted (a bool ``[B, L, nT, nH, nW]``);
one engine, :func:`mask_fields`, turns that choice into model input. Each chosen token gets a mode:

* ``MASKED``: the input is zeros (the model substitutes a learned mask embedding);
* ``NOISED``: the input is ``(1 - a) * x + a * noise_std * eps``, ``eps ~ N(0, 1)`` per value and
  the blend ``a ~ U[0, 1]`` drawn once per token;
* ``COARSENED``: the token is average-pooled over latitude and longitude and restored to full size
  by nearest upsampling (:func:`coarsen_tokens`).

A task fixes the mode of its targets through its ``mode`` attribute (``MASKED`` when absent);
``mode = None`` draws each target's mode with probabilities proportional to the field's
``rate_mask : rate_noise : rate_coarsen`` (the BERT task). Random choice of tokens follows MAE:
draw noise per token, ``argsort`` it, keep the first ``n`` of the shuffled order and map back with
the restore indices (:class:`TokenShuffle`). The token sequence of a field is the flattening of
``(L, nT, nH, nW)``, as in :mod:`atmorep.numerics.tokens`. Every random number comes from the caller's
``torch.Generator`` (drawn on the generator's device), so masking is reproducible from the
generator state; results live on the device of the tokens.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from atmorep.config import FieldConfig, MaskingConfig
from atmorep.errors import AtmorepError
from atmorep.numerics.modes import COARSENED, MASKED, NOISED, VISIBLE

Shape5 = tuple[int, int, int, int, int]  # (B, L, nT, nH, nW)


class MaskingError(AtmorepError, ValueError):
    """A masking task, its options or the tokens given to it are invalid."""


@dataclass(frozen=True)
class MaskedField:
    """One field after masking.

    Attributes:
        tokens: ``[B, L, nT, nH, nW, D]`` model input: original values where VISIBLE, zeros where
            MASKED, noise-blended values where NOISED, coarsened values where COARSENED.
        modes: ``[B, L, nT, nH, nW]`` int8 mode of every token; targets are ``modes != VISIBLE``.
        target: ``[B, L, nT, nH, nW, D]`` the clean values (the input tensor itself, not a copy).
    """

    tokens: Tensor
    modes: Tensor
    target: Tensor

    @property
    def target_mask(self) -> Tensor:
        """``[B, L, nT, nH, nW]`` bool, True for the tokens to predict."""
        return self.modes != VISIBLE

    def targets(self) -> Tensor:
        """``[M, D]`` clean values of the M target tokens, in row-major (``torch.nonzero``) order."""
        return self.target[self.target_mask]


def apply_target_mask(modes: Tensor) -> tuple[Tensor, ...]:
    """Index of the target tokens: ``values[apply_target_mask(modes)]`` is ``[M, ...]``.

    Args:
        modes: ``[B, L, nT, nH, nW]`` token modes.

    Returns:
        One int64 tensor ``[M]`` per dimension, in row-major order (as ``torch.nonzero``).
    """
    return torch.nonzero(modes != VISIBLE, as_tuple=True)


def _uniform(shape: Sequence[int], generator: torch.Generator, dtype: torch.dtype = torch.float64) -> Tensor:
    """``U[0, 1)`` samples drawn on the generator's device."""
    return torch.rand(tuple(shape), generator=generator, device=generator.device, dtype=dtype)


def _normal(shape: Sequence[int], generator: torch.Generator) -> Tensor:
    return torch.randn(tuple(shape), generator=generator, device=generator.device)


def _integer_below(upper: Tensor, generator: torch.Generator) -> Tensor:
    """Uniform integers in ``[0, upper)`` elementwise (``upper >= 1``), int64, shape of ``upper``."""
    draw = torch.floor(_uniform(upper.shape, generator) * upper).long()
    return torch.minimum(draw, upper - 1)


# ----------------------------------------------------------------------------- shuffle and ratios


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
        noise = _uniform((batch, num_tokens), generator)  # [B, N]
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


# ----------------------------------------------------------------------------------------- tasks


class MaskingTask(Protocol):
    """Which tokens of a field are targets. An optional ``mode`` attribute fixes their mode."""

    name: str

    def select(self, shape: Shape5, generator: torch.Generator, field: FieldConfig) -> Tensor:
        """``[B, L, nT, nH, nW]`` bool of the tokens to predict."""
        ...


@dataclass(frozen=True)
class BertTask:
    """Per sample a ratio ``r ~ U[min_ratio, max_ratio]``; ``round(r * N)`` random tokens are targets.

    Each target is MASKED, NOISED or COARSENED with probabilities proportional to the field's rates.
    """

    name: str = "bert"
    mode: int | None = None

    def draw(self, shape: Shape5, generator: torch.Generator, field: FieldConfig) -> RatioDraw:
        low, high = field.masking.min_ratio, field.masking.max_ratio
        ratios = (low + (high - low) * _uniform((shape[0],), generator)).clamp(low, high)  # [B]
        return draw_ratio(shape, ratios, generator)

    def select(self, shape: Shape5, generator: torch.Generator, field: FieldConfig) -> Tensor:
        return self.draw(shape, generator, field).chosen


@dataclass(frozen=True)
class ReconstructTask:
    """BERT with the fixed ``ratio`` for every sample and field, targets MASKED only."""

    ratio: float = 0.5
    name: str = "reconstruct"
    mode: int = MASKED

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio <= 1.0:
            raise MaskingError(f"task 'reconstruct': option ratio must lie in [0, 1], got {self.ratio}")

    def select(self, shape: Shape5, generator: torch.Generator, field: FieldConfig) -> Tensor:
        ratios = torch.full((shape[0],), float(self.ratio), dtype=torch.float64, device=generator.device)
        return draw_ratio(shape, ratios, generator).chosen


@dataclass(frozen=True)
class ForecastTask:
    """The last ``forecast_tokens`` time tokens (all levels, latitudes, longitudes) are targets."""

    forecast_tokens: int = 1
    name: str = "forecast"
    mode: int = MASKED

    def select(self, shape: Shape5, generator: torch.Generator, field: FieldConfig) -> Tensor:
        k, nt = self.forecast_tokens, shape[2]
        if not 1 <= k < nt:
            raise MaskingError(f"task 'forecast', field '{field.name}': forecast_tokens must be in "
                               f"[1, {nt - 1}] for {nt} time tokens, got {k}")
        return _time_selection(shape, range(nt - k, nt), generator.device)


@dataclass(frozen=True)
class InterpolateTask:
    """Time tokens in the middle are targets: ``time_tokens``, or all strictly inside the box."""

    time_tokens: Sequence[int] | None = None
    name: str = "interpolate"
    mode: int = MASKED

    def select(self, shape: Shape5, generator: torch.Generator, field: FieldConfig) -> Tensor:
        nt = shape[2]
        times = range(1, nt - 1) if self.time_tokens is None else self.time_tokens
        bad = [t for t in times if not 0 <= t < nt]
        if bad or not times:
            raise MaskingError(f"task 'interpolate', field '{field.name}': time_tokens must be a non-empty "
                               f"subset of [0, {nt - 1}], got {list(times)}")
        return _time_selection(shape, times, generator.device)


def _time_selection(shape: Shape5, times: Sequence[int], device: torch.device) -> Tensor:
    chosen = torch.zeros(shape, dtype=torch.bool, device=device)
    chosen[:, :, list(times)] = True
    return chosen


@dataclass(frozen=True)
class InfillTask:
    """Rectangles in (latitude, longitude) token space are targets at every time and level.

    Per sample, ``regions`` rectangles are drawn, each with height and width uniform in
    ``[1, max(1, round(max_fraction * n))]`` tokens and a uniform position inside the grid; each
    field draws its own. A given ``mask`` (bool, broadcastable to ``[B, L, nT, nH, nW]``, e.g.
    ``[nH, nW]``, or a mapping from field name to such a mask) replaces the draw.
    """

    regions: int = 1
    max_fraction: float = 0.5
    mask: Tensor | Mapping[str, Tensor] | None = None
    name: str = "infill"
    mode: int = MASKED

    def __post_init__(self) -> None:
        if self.regions < 1 or not 0.0 < self.max_fraction <= 1.0:
            raise MaskingError(f"task 'infill': need regions >= 1 and max_fraction in (0, 1], got "
                               f"{self.regions} and {self.max_fraction}")

    def select(self, shape: Shape5, generator: torch.Generator, field: FieldConfig) -> Tensor:
        if self.mask is not None:
            return self._given(shape, field).to(generator.device)
        b, levels, nt, nh, nw = shape
        rows = self._intervals(b, nh, generator)  # [B, R, nH]
        cols = self._intervals(b, nw, generator)  # [B, R, nW]
        area = (rows[:, :, :, None] & cols[:, :, None, :]).any(dim=1)  # [B, nH, nW]
        return area[:, None, None].expand(shape).clone()

    def _intervals(self, batch: int, n: int, generator: torch.Generator) -> Tensor:
        """``[B, R, n]`` bool, one random contiguous interval per sample and region."""
        longest = max(1, round(self.max_fraction * n))
        size = 1 + _integer_below(torch.full((batch, self.regions), longest, device=generator.device),
                                  generator)  # [B, R]
        start = _integer_below(n - size + 1, generator)  # [B, R]
        position = torch.arange(n, device=generator.device)
        return (position >= start[..., None]) & (position < (start + size)[..., None])

    def _given(self, shape: Shape5, field: FieldConfig) -> Tensor:
        mask = self.mask[field.name] if isinstance(self.mask, Mapping) else self.mask
        try:
            return torch.broadcast_to(torch.as_tensor(mask, dtype=torch.bool), shape).clone()
        except RuntimeError:
            raise MaskingError(f"task 'infill', field '{field.name}': mask of shape {tuple(mask.shape)} "
                               f"does not broadcast to the token grid {shape}") from None


@dataclass(frozen=True)
class DownscaleTask:
    """Every token is a target, given coarsened: predict full resolution from a coarse input."""

    name: str = "downscale"
    mode: int = COARSENED

    def select(self, shape: Shape5, generator: torch.Generator, field: FieldConfig) -> Tensor:
        return torch.ones(shape, dtype=torch.bool, device=generator.device)


TASKS: dict[str, Callable[..., MaskingTask]] = {
    "bert": BertTask, "reconstruct": ReconstructTask, "forecast": ForecastTask,
    "interpolate": InterpolateTask, "infill": InfillTask, "downscale": DownscaleTask,
}


def register_task(name: str, factory: Callable[..., MaskingTask]) -> None:
    """Make a task available by name; ``factory(**options)`` builds it."""
    TASKS[name] = factory


def _options_of(factory: Callable[..., MaskingTask]) -> set[str]:
    return {p for p in inspect.signature(factory).parameters if p not in ("name", "mode")}


def make_task(name: str, **options: object) -> MaskingTask:
    """Build the registered task ``name``.

    Options that another registered task accepts are ignored, so that one call site can serve a
    mixture of tasks (``forecast_tokens`` with a BERT batch); options no task accepts raise.
    """
    if name not in TASKS:
        raise MaskingError(f"unknown masking task '{name}'; registered: {sorted(TASKS)}")
    known = set().union(*(_options_of(factory) for factory in TASKS.values()))
    unknown = sorted(set(options) - known)
    if unknown:
        raise MaskingError(f"masking task '{name}': unknown options {unknown}; known: {sorted(known)}")
    accepted = _options_of(TASKS[name])
    return TASKS[name](**{key: value for key, value in options.items() if key in accepted})


def draw_task(tasks: Mapping[str, float], generator: torch.Generator) -> str:
    """Draw one task name with probability proportional to its weight (e.g. ``train.tasks``)."""
    names, weights = list(tasks), [float(w) for w in tasks.values()]
    unknown = [n for n in names if n not in TASKS]
    if unknown or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise MaskingError(f"train.tasks: need registered names {sorted(TASKS)} with non-negative "
                           f"weights of positive sum, got {dict(tasks)}")
    edges = torch.tensor(weights, dtype=torch.float64).cumsum(0)  # [K]
    u = float(_uniform((1,), generator)) * float(edges[-1])
    index = int(torch.searchsorted(edges, torch.tensor([u], dtype=torch.float64), right=True))
    return names[min(index, len(names) - 1)]


# ---------------------------------------------------------------------------------------- engine


def coarsen_tokens(values: Tensor, token_size: tuple[int, int, int], factor: int) -> Tensor:
    """Reduce tokens' resolution: block means over latitude and longitude, nearest upsampling back.

    Along latitude (and likewise longitude) the blocks are ``factor`` points long when ``factor``
    divides the token extent ``th``, and the whole extent otherwise. Time is not pooled. Each block's
    mean is preserved, so is the token mean.

    Args:
        values: ``[M, D]`` tokens, ``D = tt * th * tw`` flattened in (time, lat, lon) order.
        token_size: ``(tt, th, tw)``.
        factor: block length in grid points (>= 1).

    Returns:
        ``[M, D]`` coarsened tokens.
    """
    tt, th, tw = token_size
    x = values.reshape(-1, tt, th, tw)  # [M, D] -> [M, tt, th, tw]
    for dim, extent in ((2, th), (3, tw)):
        block = factor if extent % factor == 0 else extent
        split = x.unflatten(dim, (extent // block, block))  # block axis at dim + 1
        x = split.mean(dim=dim + 1, keepdim=True).expand_as(split).flatten(dim, dim + 1)
    return x.reshape(values.shape)  # [M, tt, th, tw] -> [M, D]


def _draw_modes(chosen: Tensor, mode: int | None, masking: MaskingConfig,
                generator: torch.Generator) -> Tensor:
    """``[B, L, nT, nH, nW]`` int8 modes: ``mode`` for chosen tokens, or drawn by the field's rates."""
    modes = torch.zeros(chosen.shape, dtype=torch.int8, device=chosen.device)
    if mode is not None:
        modes[chosen] = mode
        return modes
    total = masking.rate_mask + masking.rate_noise + masking.rate_coarsen
    to_noise, to_coarsen = masking.rate_mask / total, (masking.rate_mask + masking.rate_noise) / total
    u = _uniform((int(chosen.sum()),), generator).to(chosen.device)  # [M]
    modes[chosen] = (MASKED + (u >= to_noise).to(torch.int8) + (u >= to_coarsen).to(torch.int8))
    return modes


def _corrupt(tokens: Tensor, modes: Tensor, field: FieldConfig, generator: torch.Generator) -> Tensor:
    """Model input: zeros where MASKED, noise blend where NOISED, coarsened where COARSENED."""
    x = tokens.clone()
    x[modes == MASKED] = 0
    noised = modes == NOISED
    count, d = int(noised.sum()), tokens.shape[-1]
    if count:
        blend = _uniform((count, 1), generator).to(tokens)  # [M, 1] one blend per token
        noise = _normal((count, d), generator).to(tokens) * field.masking.noise_std  # [M, D]
        x[noised] = (1 - blend) * x[noised] + blend * noise
    coarse = modes == COARSENED
    if coarse.any():
        x[coarse] = coarsen_tokens(x[coarse], field.token_size, field.masking.coarsen_factor)
    return x


def _check_tokens(tokens: Tensor, field: FieldConfig) -> None:
    d = math.prod(field.token_size)
    if tokens.ndim != 6 or tokens.shape[-1] != d or not tokens.is_floating_point():
        raise MaskingError(f"field '{field.name}': tokens must be floating [B, L, nT, nH, nW, {d}] for token "
                           f"size {field.token_size}, got {tokens.dtype} {tuple(tokens.shape)}")


def mask_field(tokens: Tensor, field: FieldConfig, task: MaskingTask,
               generator: torch.Generator) -> MaskedField:
    """Apply ``task`` to one field's tokens ``[B, L, nT, nH, nW, D]``; non-predicted fields stay visible."""
    _check_tokens(tokens, field)
    shape: Shape5 = tuple(tokens.shape[:5])  # type: ignore[assignment]
    if not field.predicted:
        return MaskedField(tokens, torch.zeros(shape, dtype=torch.int8, device=tokens.device), tokens)
    chosen = task.select(shape, generator, field)
    if chosen.shape != shape or chosen.dtype != torch.bool:
        raise MaskingError(f"task '{task.name}', field '{field.name}': select must return bool {shape}, "
                           f"got {chosen.dtype} {tuple(chosen.shape)}")
    modes = _draw_modes(chosen.to(tokens.device), getattr(task, "mode", MASKED), field.masking, generator)
    return MaskedField(_corrupt(tokens, modes, field, generator), modes, tokens)


def mask_fields(tokens: Mapping[str, Tensor], fields: Sequence[FieldConfig], task: str | MaskingTask,
                generator: torch.Generator, **task_options: object) -> dict[str, MaskedField]:
    """Mask the tokens of every field with one task.

    Args:
        tokens: per field name, ``[B, L, nT, nH, nW, D]`` tokens.
        fields: the field configurations; fields absent from ``tokens`` are skipped, and fields
            are processed (and the generator consumed) in this order.
        task: a registered task name (built with ``task_options``) or a task object.
        generator: the source of every random number.

    Returns:
        Per field name of ``tokens``, its :class:`MaskedField`, in the order of ``fields``.
    """
    if isinstance(task, str):
        task = make_task(task, **task_options)
    elif task_options:
        raise MaskingError(f"task '{task.name}' is already built; options {sorted(task_options)} not allowed")
    configured = {f.name for f in fields}
    missing = [name for name in tokens if name not in configured]
    if missing:
        raise MaskingError(f"tokens of fields {missing} have no field configuration")
    return {f.name: mask_field(tokens[f.name], f, task, generator) for f in fields if f.name in tokens}
