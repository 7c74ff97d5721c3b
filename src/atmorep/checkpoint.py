"""Checkpoints that explain themselves.

A checkpoint is a directory that inference can use with nothing else:

=====================  ===================================================================
``model.safetensors``  the weights: full float state dict keyed by parameter name
``config.yaml``        the resolved run configuration (fields with their levels, model, data)
``statistics.json``    the normalisation statistics (mean, std per field and level)
``meta.json``          format name and version, step, fields, levels, level kind, box, token
                       sizes, grid resolution, parameter count, package versions, time
``train_state.pt``     training checkpoints only: optimiser, scheduler, loss scaler, every
                       rank's random generator states, sampler state, step, metrics history
=====================  ===================================================================

Directories are written atomically (:func:`atmorep.io.atomic_directory`): a reader sees the old
complete checkpoint or the new one, never a mixture, even if the writer is killed.

Old formats keep loading through small named migrations: :data:`MIGRATIONS` maps a format
version ``v`` to a function that turns the contents of a version-``v`` checkpoint into those of
version ``v + 1``; :func:`read_checkpoint` applies them in turn up to :data:`FORMAT_VERSION`.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from atmorep.config import RunConfig, resolve_config
from atmorep.data.statistics import Statistics
from atmorep.errors import AtmorepError
from atmorep.io import atomic_directory, temporary_sibling
from atmorep.model.multiformer import MultiFormer, build_model

logger = logging.getLogger(__name__)

FORMAT = "atmorep-checkpoint"
FORMAT_VERSION = 6
WEIGHTS, CONFIG, STATISTICS, META, TRAIN_STATE = (
    "model.safetensors", "config.yaml", "statistics.json", "meta.json", "train_state.pt")
CHECKPOINT_DIR = "checkpoint"  # the latest checkpoint of a run: run_dir / CHECKPOINT_DIR
CALIBRATION = "spread_calibration"  # meta.json: how the spread factors were last calibrated on tiles


def calibration_label(meta: dict) -> str:
    """The checkpoint's tiled spread calibration as one string ("" if none): what a prediction made with
    it records, so that reusing a prediction can tell a recalibrated checkpoint of the same step."""
    record = meta.get(CALIBRATION)
    return json.dumps(record, sort_keys=True) if record else ""


class CheckpointError(AtmorepError, ValueError):
    """A checkpoint is missing, incomplete, of an unknown format, or does not fit its model."""


@dataclass(frozen=True)
class Checkpoint:
    """The inference-relevant contents of a checkpoint, in plain form (what migrations act on).

    Attributes:
        weights: parameter name -> tensor.
        config: the run configuration as a plain dict.
        statistics: the statistics as :meth:`Statistics.to_dict` gives them.
        meta: the description written to ``meta.json``.
    """

    weights: dict[str, torch.Tensor]
    config: dict
    statistics: dict
    meta: dict

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))


Migration = Callable[[Checkpoint], Checkpoint]
MIGRATIONS: dict[int, Migration] = {}
RENAMES: dict[int, Callable[[str], str]] = {}  # version -> how its migration renames parameters (also
# applied to the parameter names of a resumed run's optimiser state)


def register_migration(version: int) -> Callable[[Migration], Migration]:
    """Register a function upgrading a version-``version`` checkpoint to ``version + 1``."""

    def register(function: Migration) -> Migration:
        MIGRATIONS[version] = function
        return function

    return register


@register_migration(1)
def absolute_tail(checkpoint: Checkpoint) -> Checkpoint:
    """Version 1 predated the first guess: its tail predicts absolute values from a mask vector.

    The model of such a checkpoint is the ``model.first_guess: false`` formulation, whose weights have
    exactly the names and shapes of version 1.
    """
    config = dict(checkpoint.config)
    config["model"] = {**config.get("model", {}), "first_guess": False}
    return replace(checkpoint, config=config)


@register_migration(2)
def uncalibrated_spread(checkpoint: Checkpoint) -> Checkpoint:
    """Version 2 predated the spread calibration: its tails get spread factors of one (the raw ensemble).

    Every first-guess tail (one with a ``tails.<field>.scale`` buffer) gains ``tails.<field>.spread``
    of the same shape; calibrating needs a training run's end.
    """
    weights = dict(checkpoint.weights)
    for key, scale in checkpoint.weights.items():
        if key.startswith("tails.") and key.endswith(".scale"):
            weights.setdefault(key[: -len("scale")] + "spread", torch.ones_like(scale))
    return replace(checkpoint, weights=weights)


def name_rules(*rules: tuple[str, str]) -> Callable[[str], str]:
    """A renaming of parameters by ``(pattern, replacement)`` regular expressions (the first that matches)."""
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in rules]

    def rename(name: str) -> str:
        for pattern, replacement in compiled:
            if pattern.match(name):
                return pattern.sub(replacement, name, count=1)
        return name

    return rename


def _renamed(checkpoint: Checkpoint, version: int) -> Checkpoint:
    rename = RENAMES[version]
    return replace(checkpoint, weights={rename(name): value for name, value in checkpoint.weights.items()})


RENAMES[3] = name_rules((r"^(decoders\.[^.]+\.blocks\.\d+\.)context_norm\.", r"\1context_norms.encoder."))
RENAMES[4] = name_rules((r"^embeddings\.([^.]+)\.", r"fields.\1.embedding."),
                        (r"^encoder\.layers\.(\d+)\.blocks\.([^.]+)\.", r"fields.\2.encoder.\1."),
                        (r"^decoders\.([^.]+)\.", r"fields.\1.decoder."),
                        (r"^tails\.([^.]+)\.", r"fields.\1.tail."))


@register_migration(3)
def one_block_class(checkpoint: Checkpoint) -> Checkpoint:
    """Version 3 had a decoder block of its own with one ``context_norm``; the one block class keeps a
    norm per source group, so the decoder's is ``context_norms.encoder``."""
    return _renamed(checkpoint, 3)


@register_migration(4)
def field_grouped_weights(checkpoint: Checkpoint) -> Checkpoint:
    """Version 4 kept each stage's modules together (``embeddings.<f>``, ``encoder.layers.<k>.blocks.<f>``,
    ``decoders.<f>``, ``tails.<f>``); version 5 keeps each field's under ``fields.<f>`` (``embedding``,
    ``encoder.<k>``, ``decoder``, ``tail``)."""
    return _renamed(checkpoint, 4)


def _model_kind(name: str, value: torch.Tensor, moment: bool) -> torch.Tensor:
    """Version 5's kind-indexed tensors with a column for the kind ``model``: a zero kind embedding (and
    zero optimiser moments), residual scale and spread factor one (not estimated, not calibrated)."""
    if name.endswith(".embedding.kind_tokens") and value.ndim == 2 and value.shape[0] == 6:
        return torch.cat([value, value.new_zeros(1, value.shape[1])])
    if name.endswith((".tail.scale", ".tail.spread")) and value.ndim == 2 and value.shape[1] == 6:
        return torch.cat([value, value.new_ones(value.shape[0], 1)], dim=1)  # buffers: no moments
    return value


WIDENINGS: dict[int, Callable[[str, torch.Tensor, bool], torch.Tensor]] = {5: _model_kind}  # version ->
# how its migration widens tensors (also applied to a resumed run's optimiser moments, ``moment=True``)


@register_migration(5)
def model_guess_kind(checkpoint: Checkpoint) -> Checkpoint:
    """Version 6 added the kind of first guess ``model`` (model correction): kind-indexed tensors gain it."""
    return replace(checkpoint, weights={name: _model_kind(name, value, moment=False)
                                        for name, value in checkpoint.weights.items()})


def migrated_tensor(name: str, value: torch.Tensor, version: int) -> torch.Tensor:
    """An optimiser moment of parameter ``name`` (current name) of a version-``version`` checkpoint, widened
    as the migrations widen the parameter."""
    for step in range(version, FORMAT_VERSION):
        if step in WIDENINGS:
            value = WIDENINGS[step](name, value, True)
    return value


def migrated_name(name: str, version: int) -> str:
    """A parameter name of a version-``version`` checkpoint under the current format."""
    for step in range(version, FORMAT_VERSION):
        name = RENAMES[step](name) if step in RENAMES else name
    return name


def migrate(checkpoint: Checkpoint, where: str = "checkpoint") -> Checkpoint:
    """Apply the registered migrations up to :data:`FORMAT_VERSION`."""
    version = int(checkpoint.meta.get("version", 0))
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{where}: format version {version} is newer than this atmorep reads "
                              f"({FORMAT_VERSION}); upgrade atmorep")
    while version < FORMAT_VERSION:
        if version not in MIGRATIONS:
            raise CheckpointError(f"{where}: no migration from checkpoint format version {version}")
        checkpoint = MIGRATIONS[version](checkpoint)
        version += 1
        checkpoint = replace(checkpoint, meta={**checkpoint.meta, "version": version})
        logger.info("%s: migrated to checkpoint format version %d", where, version)
    return checkpoint


def checkpoint_meta(config: RunConfig, step: int, levels: Mapping[str, tuple[float, ...]], *,
                    level_kind: str, resolution: float, parameters: int, **extra: object) -> dict:
    """The ``meta.json`` description of a checkpoint of ``config`` at ``step``."""
    import atmorep

    return {
        "format": FORMAT, "version": FORMAT_VERSION, "step": int(step),
        "fields": [f.name for f in config.fields],
        "predicted": [f.name for f in config.fields if f.predicted],
        "levels": {name: [float(v) for v in values] for name, values in levels.items()},
        "level_kind": level_kind, "resolution": float(resolution),
        "box": list(config.data.box.shape), "time_step": config.data.time_step,
        "token_size": {f.name: list(f.token_size) for f in config.fields},
        "parameters": int(parameters), "atmorep_version": getattr(atmorep, "__version__", "unknown"),
        "torch_version": torch.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def write_checkpoint(directory: str | Path, checkpoint: Checkpoint, train_state: dict | None = None) -> Path:
    """Write (or atomically replace) the checkpoint directory ``directory``."""
    directory = Path(directory)
    weights = {name: value.detach().cpu().contiguous().clone() for name, value in checkpoint.weights.items()}
    with atomic_directory(directory, overwrite=True) as tmp:
        tmp.mkdir(parents=True)
        save_file(weights, str(tmp / WEIGHTS), metadata={"format": FORMAT, "version": str(FORMAT_VERSION)})
        (tmp / CONFIG).write_text(yaml.safe_dump(checkpoint.config, sort_keys=False))
        (tmp / STATISTICS).write_text(json.dumps(checkpoint.statistics, indent=1))
        if train_state is not None:
            torch.save(train_state, tmp / TRAIN_STATE)
        (tmp / META).write_text(json.dumps(checkpoint.meta, indent=1))  # last: marks completeness
    return directory


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file '{path}' is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"checkpoint file '{path}' is not valid JSON: {error}") from None


def read_meta(directory: str | Path) -> dict:
    """The ``meta.json`` of a checkpoint directory (fields, levels, grid, box), without the weights."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint '{directory}' does not exist or is not a directory")
    return _read_json(directory / META)


def read_checkpoint(directory: str | Path) -> Checkpoint:
    """Read a checkpoint directory and migrate it to the current format."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint '{directory}' does not exist or is not a directory")
    meta = _read_json(directory / META)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"'{directory / META}' does not describe an atmorep checkpoint "
                              f"(format {meta.get('format')!r}, expected {FORMAT!r})")
    try:
        weights = load_file(str(directory / WEIGHTS))
    except (FileNotFoundError, SafetensorError, OSError) as error:
        raise CheckpointError(f"cannot read weights '{directory / WEIGHTS}': {error}") from None
    config_path = directory / CONFIG
    if not config_path.is_file():
        raise CheckpointError(f"checkpoint file '{config_path}' is missing")
    config = yaml.safe_load(config_path.read_text())
    statistics = _read_json(directory / STATISTICS)
    return migrate(Checkpoint(weights, config, statistics, meta), where=str(directory))


def read_train_state(directory: str | Path) -> dict:
    """The training state of a checkpoint (optimiser, scheduler, RNG, sampler, step, metrics)."""
    path = Path(directory) / TRAIN_STATE
    if not path.is_file():
        raise CheckpointError(f"'{directory}' holds no training state ({TRAIN_STATE}); it is an "
                              f"inference checkpoint and cannot resume training")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_model(directory: str | Path, device: torch.device | str = "cpu"
               ) -> tuple[MultiFormer, RunConfig, Statistics]:
    """The model of a checkpoint (in eval mode), its configuration and its normalisation statistics."""
    checkpoint = read_checkpoint(directory)
    config = resolve_config(checkpoint.config, source=str(Path(directory) / CONFIG))
    model = build_model(config, device)
    load_weights(model, checkpoint.weights,
                 f"checkpoint '{directory}': weights do not fit the model of its config")
    return model.eval(), config, Statistics.from_dict(checkpoint.statistics)


def load_weights(module: torch.nn.Module, weights: Mapping[str, torch.Tensor], failure: str) -> None:
    """Load exactly ``weights`` into ``module``; CheckpointError starting with ``failure`` when a tensor
    is missing, unexpected or of another shape."""
    try:
        missing, unexpected = module.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # shapes that differ
        reason = " ".join(str(error).split())[:400]
        raise CheckpointError(f"{failure}: {reason}") from None
    if missing or unexpected:
        raise CheckpointError(f"{failure} (missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]})")


def load_fields(model: MultiFormer, directory: str | Path,
                fields: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Load whole fields' weights (everything under ``fields.<name>.``) from a checkpoint into ``model``.

    Args:
        model: the model to load into (its other fields keep their weights).
        directory: a checkpoint directory (older formats are migrated).
        fields: the fields to take; default every field that both the checkpoint and the model have.

    Returns:
        Per loaded field, the names of its parameters and buffers the checkpoint does not hold (kept as
        they are, e.g. the cross-attention to a field the checkpoint was not coupled with).

    Raises:
        CheckpointError: a field one of them lacks, or a tensor whose shape differs (named).
    """
    checkpoint = read_checkpoint(directory)
    held = sorted({name.split(".")[1] for name in checkpoint.weights if name.startswith("fields.")})
    names = [name for name in model.fields if name in held] if fields is None else list(fields)
    for name in names:
        if name not in held:
            raise CheckpointError(f"checkpoint '{directory}' has no field '{name}' (it has {held})")
        if name not in model.fields:
            raise CheckpointError(f"the model has no field '{name}' to load from '{directory}' "
                                  f"(it has {list(model.fields)})")
    if not names:
        raise CheckpointError(f"checkpoint '{directory}' shares no field with the model ({held} and "
                              f"{list(model.fields)})")
    levels = checkpoint.meta.get("levels", {})
    for name in names:
        wanted = model.config.field(name).levels
        held_levels = [float(v) for v in levels.get(name, [])]
        if wanted is not None and held_levels and held_levels != [float(v) for v in wanted]:
            raise CheckpointError(f"checkpoint '{directory}': field '{name}' was trained on levels "
                                  f"{held_levels}, the model's are {list(wanted)}")
    state = model.state_dict()
    chosen, fresh = {}, {}
    for name in names:
        prefix = f"fields.{name}."
        own = {key: value for key, value in checkpoint.weights.items() if key.startswith(prefix)}
        for key, value in own.items():
            if key not in state:
                raise CheckpointError(f"checkpoint '{directory}': '{key}' has no place in the model (its "
                                      f"field '{name}' is built differently: another size, levels or "
                                      "coupling)")
            if tuple(value.shape) != tuple(state[key].shape):
                raise CheckpointError(f"checkpoint '{directory}': '{key}' has shape {tuple(value.shape)}, "
                                      f"the model's has {tuple(state[key].shape)}")
        chosen |= own
        fresh[name] = sorted(key for key in state if key.startswith(prefix) and key not in own)
    model.load_state_dict(chosen, strict=False)
    logger.info("loaded fields %s from '%s'", names, directory)
    return fresh


def freeze_fields(model: MultiFormer, fields: Sequence[str]) -> None:
    """Stop training the weights of ``fields`` (``requires_grad`` off)."""
    for name in fields:
        if name not in model.fields:
            raise CheckpointError(f"train.freeze: the model has no field '{name}' (it has "
                                  f"{list(model.fields)})")
        for parameter in model.fields[name].parameters():
            parameter.requires_grad_(False)


def find_checkpoint(run_dir: str | Path) -> Path | None:
    """The latest complete checkpoint of a run, or None.

    If a writer was killed between moving the old checkpoint aside and moving the new one into
    place, the old one is still complete at its temporary name and is returned.
    """
    path = Path(run_dir) / CHECKPOINT_DIR
    if (path / META).is_file():
        return path
    old = temporary_sibling(path, "old")
    if (old / META).is_file():
        logger.warning("using the checkpoint '%s' left by an interrupted write", old)
        return old
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory given itself or the run directory that holds one."""
    path = Path(path)
    if (path / META).is_file():
        return path
    found = find_checkpoint(path) if path.is_dir() else None
    if found is None:
        raise CheckpointError(f"'{path}' is neither a checkpoint nor a run directory holding one "
                              f"(no {META} in it or in its {CHECKPOINT_DIR}/)")
    return found
