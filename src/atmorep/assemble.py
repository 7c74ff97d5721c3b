"""Plug-and-play fields: a multiformer assembled from checkpoints of fields trained on their own.

:func:`assemble` takes checkpoints whose fields are disjoint (typically one field each, trained with
an ordinary ``atmorep train`` on a config of one field) and the same model size, box and grid. It
builds the multiformer of all their fields, each coupled with all the others, and copies every
field's weights (``fields.<name>.*``) as they are. The coupling is new: each encoder block gains
cross-attention heads towards the other fields, whose outputs enter through columns of the block's
output map that start at zero. So the assembled model starts as the separate models, exactly, and a
short fine-tune (``atmorep train ... train.init=<assembled>``) learns the coupling. Adding a field to a
trained multiformer works the same way.
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
from atmorep.model.multiformer import build_model

logger = logging.getLogger(__name__)

SHARED = ("dim", "heads", "encoder_layers", "decoder_layers", "mlp_ratio", "ensemble_members", "embedding",
          "alpha_embedding", "first_guess", "qk_norm")  # model settings every part must share


def _parts(checkpoints: Sequence[str | Path]) -> list[tuple[Path, Checkpoint, RunConfig]]:
    parts = []
    for path in checkpoints:
        directory = resolve_checkpoint(path)
        contents = read_checkpoint(directory)
        parts.append((directory, contents, resolve_config(contents.config, source=str(directory))))
    if len(parts) < 2:
        raise DataError(f"assemble needs at least two checkpoints, got {len(parts)}")
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
    return parts


def assembled_config(configs: Sequence[RunConfig], cross_heads: int) -> RunConfig:
    """One config of all the parts' fields, each coupled with every other, their common model."""
    fields = [f.model_dump(mode="json") for config in configs for f in config.fields]
    names = [f["name"] for f in fields]
    for f in fields:
        f["coupled_with"] = [name for name in names if name != f["name"]]
    data = configs[0].model_dump(mode="json")
    data["fields"] = fields
    data["model"]["cross_heads"] = cross_heads
    return RunConfig.model_validate(data)


def _transplant(name: str, value: torch.Tensor, target: torch.Tensor, self_width: int) -> torch.Tensor:
    """A part's tensor placed into the assembled model's: equal shapes as they are; a block's query map
    keeps the part's rows (its self heads and existing cross heads come first; new cross heads keep
    their fresh rows) and its output map the part's columns, the new cross heads' columns zero."""
    if tuple(value.shape) == tuple(target.shape):
        return value
    placed = target.clone()
    if name.endswith("attention.query.weight") or name.endswith("attention.query.bias"):
        placed[:value.shape[0]] = value
        return placed
    if name.endswith("attention.out.weight"):
        placed[:, :value.shape[1]] = value
        placed[:, value.shape[1]:] = 0.0
        return placed
    raise DataError(f"'{name}' has shape {tuple(value.shape)}, the assembled model's has "
                    f"{tuple(target.shape)}")


def assemble(checkpoints: Sequence[str | Path], output: str | Path, *, cross_heads: int = 1,
             seed: int = 0, overwrite: bool = False) -> Path:
    """Assemble the fields of ``checkpoints`` into one multiformer checkpoint at ``output``.

    Args:
        checkpoints: checkpoint or run directories with disjoint fields and one model size.
        output: the checkpoint directory to write (an inference checkpoint; fine-tune it with
            ``train.init``).
        cross_heads: heads per coupled field of the new coupling (at least one).
        seed: seed of the new coupling's fresh weights.
        overwrite: replace an existing output.
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise DataError(f"output '{output}' already exists (use --overwrite to replace it)")
    if cross_heads < 1:
        raise DataError(f"--cross-heads must be at least 1 to couple the fields, got {cross_heads}")
    parts = _parts(checkpoints)
    config = assembled_config([config for _, _, config in parts], cross_heads)
    for directory, _, part in parts:  # existing couplings must come first, with as many heads
        for f in part.fields:
            new = config.field(f.name).coupled_with
            if f.coupled_with and (new[:len(f.coupled_with)] != list(f.coupled_with)
                                   or part.model.cross_heads != cross_heads):
                raise DataError(f"checkpoint '{directory}': field '{f.name}' is coupled with "
                                f"{f.coupled_with} ({part.model.cross_heads} heads each); list its "
                                f"checkpoint so that these come first and use --cross-heads "
                                f"{part.model.cross_heads}")
    torch.manual_seed(seed)
    model = build_model(config)
    state = model.state_dict()
    self_width = config.model.dim  # the self heads' rows of a block's query map, columns of its output map
    for _, contents, part in parts:
        for f in part.fields:
            prefix = f"fields.{f.name}."
            for name, value in contents.weights.items():
                if name.startswith(prefix):
                    state[name] = _transplant(name, value, state[name], self_width)
    model.load_state_dict(state, strict=True)
    statistics = {name: value for _, contents, _ in parts for name, value in contents.statistics.items()
                  if name in {f.name for f in config.fields}}
    first = parts[0][1].meta
    levels = {f.name: tuple(f.levels) for f in config.fields}
    meta = checkpoint_meta(config, 0, levels, level_kind=first.get("level_kind", "pressure"),
                           resolution=float(first.get("resolution", 0.0)),
                           parameters=sum(p.numel() for p in model.parameters()),
                           assembled_from=[str(directory) for directory, _, _ in parts])
    contents = Checkpoint(model.state_dict(), config.model_dump(mode="json"), statistics, meta)
    write_checkpoint(output, contents)
    logger.info("assembled %s into '%s'", [f.name for f in config.fields], output)
    return output


__all__ = ["assemble", "assembled_config"]
