"""A fine-tuned tail on disk: ``tail.safetensors`` (its weights), ``tail.json`` (what it is, what it
learned of the data, and the backbone's identity), and ``backbone/`` when the backbone was fine-tuned
with it (a complete multiformer checkpoint).

``tail.json`` is written last: a directory without it is not a tail checkpoint. A tail is loaded only
on the backbone it was fine-tuned on (the SHA-256 of the weights must match).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from atmorep.checkpoint import Checkpoint, CheckpointError, load_weights, read_checkpoint, write_checkpoint
from atmorep.io import atomic_directory
from atmorep.tails.backbone import Backbone, weights_digest
from atmorep.tails.base import Tail
from atmorep.tails.config import TailSpec
from atmorep.tails.registry import Recipe, get_tail

FORMAT, VERSION = "atmorep-tail", 1
WEIGHTS, META, BACKBONE = "tail.safetensors", "tail.json", "backbone"


def is_tail_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / META).is_file()


def write_tail(directory: str | Path, tail: Tail, meta: dict, backbone: Backbone | None = None) -> Path:
    """Write (or atomically replace) a tail checkpoint; ``backbone``: a fine-tuned backbone to keep."""
    directory = Path(directory)
    weights = {name: value.detach().cpu().contiguous().clone() for name, value in tail.state_dict().items()}
    with atomic_directory(directory, overwrite=True) as tmp:
        tmp.mkdir(parents=True)
        save_file(weights, str(tmp / WEIGHTS), metadata={"format": FORMAT, "version": str(VERSION)})
        if backbone is not None:
            original = read_checkpoint(backbone.directory)
            state = {name: value.detach().cpu() for name, value in backbone.model.state_dict().items()}
            kept = {**original.meta, "fine_tuned_with_tail": meta["name"]}
            write_checkpoint(tmp / BACKBONE, Checkpoint(state, original.config, original.statistics, kept))
            meta = {**meta, "backbone": {**meta["backbone"], "path": str(directory / BACKBONE),
                                         "sha256": weights_digest(tmp / BACKBONE),
                                         "fine_tuned_from": meta["backbone"]}}
        (tmp / META).write_text(json.dumps({"format": FORMAT, "version": VERSION, **meta}, indent=1))
    return directory


def read_tail_meta(directory: str | Path) -> dict:
    path = Path(directory) / META
    if not path.is_file():
        raise CheckpointError(f"'{directory}' is not a tail checkpoint (no {META})")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' does not describe a tail (format {meta.get('format')!r})")
    return meta


@dataclass
class LoadedTail:
    tail: Tail
    recipe: Recipe
    spec: TailSpec
    setup: dict
    backbone: Backbone
    meta: dict


def load_tail(directory: str | Path, backbone: str | Path | None = None,
              device: torch.device | str = "cpu") -> LoadedTail:
    """A tail checkpoint with its backbone: the one kept with it, ``backbone`` if given, else the one
    it names; CheckpointError when that backbone is not the one it was fine-tuned on."""
    directory = Path(directory)
    meta = read_tail_meta(directory)
    kept = directory / BACKBONE
    source = backbone or (kept if kept.is_dir() else meta["backbone"]["path"])
    if backbone is None and not Path(source).is_dir():
        raise CheckpointError(f"tail checkpoint '{directory}': its backbone '{source}' is not there; give "
                              "the backbone it was fine-tuned on with --backbone")
    model = Backbone(source, device)
    model.check_identity(meta["backbone"], str(directory))
    model.model.eval().requires_grad_(False)
    spec = TailSpec.model_validate(meta["spec"])
    recipe = get_tail(spec.name)
    try:
        weights = load_file(str(directory / WEIGHTS))
    except (FileNotFoundError, SafetensorError, OSError) as error:
        raise CheckpointError(f"cannot read tail weights '{directory / WEIGHTS}': {error}") from None
    tail = recipe.build(spec, model, meta["sizes"])
    load_weights(tail, weights, f"tail checkpoint '{directory}': weights do not fit the tail")
    return LoadedTail(tail.to(model.device).eval(), recipe, spec, meta["setup"], model, meta)
