"""Model size and shapes without allocating the model: built on the ``meta`` device."""

from __future__ import annotations

import math
from collections.abc import Mapping

from torch import nn

from atmorep.config import RunConfig
from atmorep.model.multiformer import build_model
from atmorep.numerics.tokens import token_grid

GROUPS = ("embedding", "encoder", "decoder", "tail")  # the parts of every field (fields.<name>.<part>)


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_parameters(config: RunConfig) -> dict[str, int]:
    """Parameter counts of the multiformer of ``config``, computed on the meta device.

    Returns:
        ``"total"``; per module group ``"embedding"``, ``"encoder"``, ``"decoder"``, ``"tail"``;
        and per field ``"field/{name}"`` (its embedding, encoder blocks, decoder and tail).
    """
    model = build_model(config, device="meta")
    counts = {"total": _numel(model)}
    parts = list(model.fields.values())
    counts.update({group: sum(_numel(getattr(part, group)) for part in parts if hasattr(part, group))
                   for group in GROUPS})
    counts.update({f"field/{name}": _numel(part) for name, part in model.fields.items()})
    return counts


def _format_count(count: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f}{unit}"
    return str(count)


def describe_model(config: RunConfig, levels: Mapping[str, int] | None = None) -> str:
    """A plain-text table of the model: sizes, per-field token shapes and parameter counts.

    Args:
        config: the run configuration.
        levels: number of levels per field for fields whose config leaves ``levels`` unset
            (all levels of the store); such fields count one level when absent here.

    Returns:
        Lines of text (no trailing newline).
    """
    model = config.model
    counts = count_parameters(config)
    lines = [
        f"multiformer '{model.preset}': dim {model.dim}, {model.encoder_layers} encoder + "
        f"{model.decoder_layers} decoder layers, {model.heads} heads + {model.cross_heads} per coupled "
        f"field, "
        f"mlp ratio {model.mlp_ratio:g}, {model.ensemble_members} members, embedding {model.embedding}",
        f"box (T, H, W) = {config.data.box.shape}",
        "",
        f"{'field':<8} {'L':>3} {'token':>11} {'D_f':>5} {'grid (nT,nH,nW)':>16} {'N':>7} {'predicted':>9} "
        f"{'params':>9}  coupled with",
    ]
    for f in config.fields:
        n_levels = len(f.levels) if f.levels is not None else (levels or {}).get(f.name, 1)
        grid = token_grid(config.data.box.shape, f.token_size, f.name)
        lines.append(
            f"{f.name:<8} {n_levels:>3} {str(tuple(f.token_size)):>11} {math.prod(f.token_size):>5} "
            f"{str(grid):>16} {n_levels * math.prod(grid):>7} {'yes' if f.predicted else 'no':>9} "
            f"{_format_count(counts[f'field/{f.name}']):>9}  {', '.join(f.coupled_with) or '-'}")
    lines += ["", "tokens [B, L, nT, nH, nW, D_f] -> sequence [B, N = L*nT*nH*nW, D] per field", ""]
    lines += [f"{group:<10} {counts[group]:>15,d}  ({_format_count(counts[group])})" for group in GROUPS]
    lines.append(f"{'total':<10} {counts['total']:>15,d}  ({_format_count(counts['total'])})")
    return "\n".join(lines)
