"""Masking as index arithmetic: which tokens are targets, and how their input is corrupted.

A *task* (:mod:`atmorep.tasks`) only says which tokens of a field are to be predicted (a bool
``[B, L, nT, nH, nW]``); one engine, :func:`mask_fields`, turns that choice into model input. Each
chosen token gets a mode:

* ``MASKED``: the input is zeros (the model substitutes a learned mask embedding);
* ``NOISED``: the input is ``(1 - a) * x + a * noise_std * eps``, ``eps ~ N(0, 1)`` per value and
  the blend ``a ~ U[0, 1]`` drawn once per token;
* ``COARSENED``: the token is average-pooled over latitude and longitude and restored to full size
  by nearest upsampling (:func:`coarsen_tokens`);
* ``GIVEN``: the input is another model's values for the token (``guide``, model correction).

A task fixes the mode of its targets through its ``mode`` attribute; ``mode = None`` draws each
target's mode with probabilities proportional to the field's ``rate_mask : rate_noise : rate_coarsen``
(the BERT task). The token sequence of a field is the flattening of ``(L, nT, nH, nW)``, as in
:mod:`atmorep.numerics.tokens`. Every random number comes from the caller's ``torch.Generator``, so
masking is reproducible from the generator state; results live on the device of the tokens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from atmorep.config import FieldConfig, MaskingConfig
from atmorep.numerics.coarsening import coarsen
from atmorep.numerics.modes import COARSENED, GIVEN, MASKED, NOISED, VISIBLE
from atmorep.tasks.base import MaskingError, Shape5, Task
from atmorep.tasks.draws import normal, uniform
from atmorep.tasks.registry import make_task


@dataclass(frozen=True)
class MaskedField:
    """One field after masking.

    Attributes:
        tokens: ``[B, L, nT, nH, nW, D]`` model input: original values where VISIBLE, zeros where
            MASKED, noise-blended values where NOISED, coarsened values where COARSENED, another
            model's values where GIVEN.
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
    blocks = tuple(factor if extent % factor == 0 else extent for extent in (th, tw))
    x = values.reshape(-1, tt, th, tw)  # [M, D] -> [M, tt, th, tw]
    return coarsen(x, blocks).reshape(values.shape)  # [M, tt, th, tw] -> [M, D]


def _draw_modes(chosen: Tensor, mode: int | None, masking: MaskingConfig,
                generator: torch.Generator) -> Tensor:
    """``[B, L, nT, nH, nW]`` int8 modes: ``mode`` for chosen tokens, or drawn by the field's rates."""
    modes = torch.zeros(chosen.shape, dtype=torch.int8, device=chosen.device)
    if mode is not None:
        modes[chosen] = mode
        return modes
    total = masking.rate_mask + masking.rate_noise + masking.rate_coarsen
    to_noise, to_coarsen = masking.rate_mask / total, (masking.rate_mask + masking.rate_noise) / total
    u = uniform((int(chosen.sum()),), generator).to(chosen.device)  # [M]
    modes[chosen] = (MASKED + (u >= to_noise).to(torch.int8) + (u >= to_coarsen).to(torch.int8))
    return modes


def _corrupt(tokens: Tensor, modes: Tensor, field: FieldConfig, generator: torch.Generator,
             guide: Tensor | None) -> Tensor:
    """Model input: zeros where MASKED, noise blend where NOISED, coarsened where COARSENED, the guide
    where GIVEN."""
    x = tokens.clone()
    given = modes == GIVEN
    if bool(given.any()):
        if guide is None or guide.shape != tokens.shape:
            got = "none" if guide is None else f"{tuple(guide.shape)}"
            raise MaskingError(f"field '{field.name}': GIVEN tokens need another model's values of the field "
                               f"(data.guide), shaped as its tokens {tuple(tokens.shape)}; got {got}")
        x[given] = guide[given].to(x.dtype)
    x[modes == MASKED] = 0
    noised = modes == NOISED
    count, d = int(noised.sum()), tokens.shape[-1]
    if count:
        blend = uniform((count, 1), generator).to(tokens)  # [M, 1] one blend per token
        noise = normal((count, d), generator).to(tokens) * field.masking.noise_std  # [M, D]
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


def mask_field(tokens: Tensor, field: FieldConfig, task: Task, generator: torch.Generator,
               guide: Tensor | None = None) -> MaskedField:
    """Apply ``task`` to one field's tokens ``[B, L, nT, nH, nW, D]``; non-predicted fields stay visible.
    ``guide``: another model's tokens of the field, the input of GIVEN tokens."""
    _check_tokens(tokens, field)
    shape: Shape5 = tuple(tokens.shape[:5])  # type: ignore[assignment]
    if not field.predicted:
        return MaskedField(tokens, torch.zeros(shape, dtype=torch.int8, device=tokens.device), tokens)
    chosen = task.select(shape, generator, field)
    if chosen.shape != shape or chosen.dtype != torch.bool:
        raise MaskingError(f"task '{task.name}', field '{field.name}': select must return bool {shape}, "
                           f"got {chosen.dtype} {tuple(chosen.shape)}")
    modes = _draw_modes(chosen.to(tokens.device), task.mode, field.masking, generator)
    return MaskedField(_corrupt(tokens, modes, field, generator, guide), modes, tokens)


def mask_fields(tokens: Mapping[str, Tensor], fields: Sequence[FieldConfig], task: str | Task,
                generator: torch.Generator, guide: Mapping[str, Tensor] | None = None,
                **task_options: object) -> dict[str, MaskedField]:
    """Mask the tokens of every field with one task.

    Args:
        tokens: per field name, ``[B, L, nT, nH, nW, D]`` tokens.
        fields: the field configurations; fields absent from ``tokens`` are skipped, and fields
            are processed (and the generator consumed) in this order.
        task: a registered task name (built with ``task_options``) or a task object.
        generator: the source of every random number.
        guide: per field name, another model's tokens, the input of GIVEN tokens (model correction).

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
    guide = guide or {}
    return {f.name: mask_field(tokens[f.name], f, task, generator, guide.get(f.name))
            for f in fields if f.name in tokens}
