"""Plug-and-play fields: a multiformer assembled from checkpoints of fields trained on their own.

:func:`assemble` takes checkpoints whose fields are disjoint (typically one field each, trained with
an ordinary ``atmorep train`` on a config of one field) and the same model size, box and grid. It
builds the multiformer of all their fields, each coupled with all the others, and copies every
field's weights (``fields.<name>.*``) as they are. Each encoder block's head groups are matched by
name: a coupling the checkpoint has keeps its heads, and a new one gains cross-attention heads whose
outputs enter through columns of the block's output map that start at zero. So the assembled model
starts as the separate models, exactly, and a short fine-tune (``atmorep train ... train.init=<assembled>``)
learns the new coupling. Adding a field to a trained multiformer works the same way; dropping one
(``drop``) removes it and every other field's heads towards it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from atmorep.checkpoint import (
    Checkpoint,
    checkpoint_meta,
    read_checkpoint,
    resolve_checkpoint,
    write_checkpoint,
)
from atmorep.config import RunConfig, resolve_config
from atmorep.errors import DataError
from atmorep.model.encoder import head_groups
from atmorep.model.multiformer import build_model

logger = logging.getLogger(__name__)

SHARED = ("dim", "heads", "encoder_layers", "decoder_layers", "mlp_ratio", "ensemble_members", "embedding",
          "alpha_embedding", "first_guess", "qk_norm")  # model settings every part must share


Part = tuple[Path, Checkpoint, RunConfig]


def _parts(checkpoints: Sequence[str | Path], drop: Sequence[str]) -> list[Part]:
    parts = []
    for path in checkpoints:
        directory = resolve_checkpoint(path)
        contents = read_checkpoint(directory)
        parts.append((directory, contents, resolve_config(contents.config, source=str(directory))))
    if len(parts) < (1 if drop else 2):
        raise DataError(f"assemble needs at least two checkpoints, or one and fields to drop; got "
                        f"{len(parts)}")
    first_dir, first, reference = parts[0]
    seen: dict[str, Path] = {}
    for directory, contents, config in parts:
        for key in SHARED:
            ours, theirs = getattr(config.model, key), getattr(reference.model, key)
            if ours != theirs:
                raise DataError(f"checkpoint '{directory}' has model.{key} = {ours!r}, '{first_dir}' has "
                                f"{theirs!r}; assembled fields need one model size")
        same_box = config.data.box.shape == reference.data.box.shape
        if not same_box or config.data.time_step != reference.data.time_step:
            raise DataError(f"checkpoint '{directory}' has the box {config.data.box.shape} (time step "
                            f"{config.data.time_step}), '{first_dir}' has {reference.data.box.shape} "
                            f"({reference.data.time_step})")
        for key in ("level_kind", "resolution"):
            if contents.meta.get(key) != first.meta.get(key):
                raise DataError(f"checkpoint '{directory}' has {key} {contents.meta.get(key)!r}, "
                                f"'{first_dir}' has {first.meta.get(key)!r}")
        for f in config.fields:
            if f.name in seen:
                raise DataError(f"field '{f.name}' is in both '{seen[f.name]}' and '{directory}'; give each "
                                "field once")
            seen[f.name] = directory
    unknown = [name for name in drop if name not in seen]
    if unknown or len(set(drop)) == len(seen):
        problem = f"has no field {unknown}" if unknown else "would keep no field"
        raise DataError(f"--drop {','.join(drop)}: the assembly of {sorted(seen)} {problem}")
    return parts


def assembled_config(configs: Sequence[RunConfig], cross_heads: int, drop: Sequence[str] = ()) -> RunConfig:
    """One config of all the parts' fields but ``drop``, each coupled with every other, their common model."""
    fields = [f.model_dump(mode="json") for config in configs for f in config.fields if f.name not in drop]
    names = [f["name"] for f in fields]
    for f in fields:
        f["coupled_with"] = [name for name in names if name != f["name"]]
    data = configs[0].model_dump(mode="json")
    data["fields"] = fields
    data["model"]["cross_heads"] = cross_heads
    return RunConfig.model_validate(data)


def _rows(config: RunConfig, name: str) -> dict[str, slice]:
    """Per head group of field ``name``'s encoder attention its rows of the query map (columns of the
    output map)."""
    width = config.model.dim // config.model.heads
    rows, start = {}, 0
    for group, heads in head_groups(config.model, config.field(name).coupled_with).items():
        rows[group] = slice(start, start + heads * width)
        start += heads * width
    return rows


def _transplant(name: str, value: torch.Tensor, target: torch.Tensor, part: RunConfig,
                assembled: RunConfig) -> torch.Tensor:
    """A part's tensor placed into the assembled model's.

    An encoder block's query map keeps the part's rows of every head group both have (new groups keep
    their fresh rows), its output map the part's columns (new groups' columns zero, so they start
    silent); every other tensor must have the assembled model's shape.
    """
    kind = name.rsplit(".", 2)
    if kind[-2:] in (["query", "weight"], ["query", "bias"], ["out", "weight"]) and ".encoder." in name:
        field = name.split(".")[1]
        ours, theirs = _rows(part, field), _rows(assembled, field)
        placed = target.clone()
        if kind[-2] == "out":
            placed.zero_()
        for group, rows in theirs.items():
            if group not in ours:
                continue
            if kind[-2] == "out":
                placed[:, rows] = value[:, ours[group]]
            else:
                placed[rows] = value[ours[group]]
        return placed
    if tuple(value.shape) != tuple(target.shape):
        raise DataError(f"'{name}' has shape {tuple(value.shape)}, the assembled model's has "
                        f"{tuple(target.shape)}")
    return value


def assemble(checkpoints: Sequence[str | Path], output: str | Path, *, drop: Sequence[str] = (),
             cross_heads: int = 1, seed: int = 0, overwrite: bool = False) -> Path:
    """Assemble the fields of ``checkpoints`` but ``drop`` into one multiformer checkpoint at ``output``.

    Args:
        checkpoints: checkpoint or run directories with disjoint fields and one model size.
        output: the checkpoint directory to write (an inference checkpoint; fine-tune it with
            ``train.init``).
        drop: fields to leave out, with every other field's heads towards them (one checkpoint
            suffices then).
        cross_heads: heads per coupled field of the new coupling (at least one).
        seed: seed of the new coupling's fresh weights.
        overwrite: replace an existing output.
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise DataError(f"output '{output}' already exists (use --overwrite to replace it)")
    if cross_heads < 1:
        raise DataError(f"--cross-heads must be at least 1 to couple the fields, got {cross_heads}")
    drop = tuple(drop)
    parts = _parts(checkpoints, drop)
    config = assembled_config([config for _, _, config in parts], cross_heads, drop)
    kept = {f.name for f in config.fields}
    for directory, _, part in parts:  # a coupling that exists keeps its heads
        coupled = [f.name for f in part.fields if f.name in kept and set(f.coupled_with) & kept]
        if coupled and part.model.cross_heads != cross_heads:
            raise DataError(f"checkpoint '{directory}': the fields {coupled} have {part.model.cross_heads} "
                            f"heads per coupled field; use --cross-heads {part.model.cross_heads}")
    torch.manual_seed(seed)
    model = build_model(config)
    state = model.state_dict()
    for _, contents, part in parts:
        for f in part.fields:
            if f.name not in kept:
                continue
            prefix = f"fields.{f.name}."
            for name, value in contents.weights.items():
                if name.startswith(prefix) and name in state:  # a dropped field's heads have no place
                    state[name] = _transplant(name, value, state[name], part, config)
    model.load_state_dict(state, strict=True)
    statistics = {name: value for _, contents, _ in parts for name, value in contents.statistics.items()
                  if name in kept}
    first = parts[0][1].meta
    levels = {f.name: tuple(f.levels) for f in config.fields}
    meta = checkpoint_meta(config, 0, levels, level_kind=first.get("level_kind", "pressure"),
                           resolution=float(first.get("resolution", 0.0)),
                           parameters=sum(p.numel() for p in model.parameters()),
                           assembled_from=[str(directory) for directory, _, _ in parts], dropped=list(drop))
    contents = Checkpoint(model.state_dict(), config.model_dump(mode="json"), statistics, meta)
    write_checkpoint(output, contents)
    logger.info("assembled %s into '%s'", [f.name for f in config.fields], output)
    return output


__all__ = ["assemble", "assembled_config"]
