"""What a training run must save to continue exactly, and saving/restoring it with a checkpoint.

A training checkpoint is an inference checkpoint (:mod:`atmorep.checkpoint`) plus
``train_state.pt``:

=============  ==========================================================================
``optimizer``  AdamW state, full and keyed by parameter name (any world size can load it)
``scheduler``  the learning-rate schedule's position
``scaler``     the float16 loss scaler (empty when unused)
``rng``        every rank's Python, NumPy, torch (and CUDA) generator states, in rank order
``sampler``    the data stream's position ``(epoch, next_batch)``, the same on every rank
``step``       optimiser steps completed
``metrics``    the metrics records so far
``world_size`` the number of ranks that wrote it
=============  ==========================================================================

Saving is collective (every rank calls it: FSDP gathers the full weights, every rank contributes
its generator states); only rank 0 writes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from atmorep.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_meta,
    migrated_name,
    migrated_tensor,
    read_checkpoint,
    read_meta,
    read_train_state,
    write_checkpoint,
)
from atmorep.config import RunConfig
from atmorep.data.dataset import SamplerState
from atmorep.data.statistics import Statistics
from atmorep.runtime import Runtime, rng_state
from atmorep.train import distributed

logger = logging.getLogger(__name__)

# What must match a checkpoint to resume from it: the model and what shapes its inputs. Loss
# weights, masking and every training option may change.
FIELD_KEYS = ("name", "levels", "token_size", "coupled_with", "predicted")


@dataclass
class TrainingState:
    """Where a run stands.

    Attributes:
        step: optimiser steps completed.
        sampler: the position of this rank's data stream.
        history: the metrics records so far.
        checkpoint: the last checkpoint written or resumed from, and ``checkpoint_step`` its step.
        validation: the last validation metrics.
    """

    step: int = 0
    sampler: SamplerState = field(default_factory=SamplerState)
    history: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None
    checkpoint_step: int | None = None
    validation: dict[str, float] | None = None


@dataclass
class TrainingParts:
    """The objects whose state a training checkpoint holds."""

    model: distributed.ParallelModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


@dataclass(frozen=True)
class DataDescription:
    """What a checkpoint records about the data it was trained on."""

    levels: dict[str, tuple[float, ...]]
    level_kind: str
    resolution: float
    statistics: Statistics
    stores: tuple[str, ...]


def save_state(directory: Path, parts: TrainingParts, state: TrainingState, config: RunConfig,
               data: DataDescription, runtime: Runtime) -> None:
    """Write a training checkpoint of the run (collective; rank 0 writes)."""
    weights = distributed.model_state(parts.model.module)
    optimizer = distributed.optimizer_state(parts.model.module, parts.optimizer)
    generators = distributed.all_gather_objects(rng_state())
    if runtime.env.is_main:
        buffers = {name for name, _ in parts.model.module.named_buffers()}  # scales: state, not parameters
        parameters = sum(value.numel() for name, value in weights.items() if name not in buffers)
        meta = checkpoint_meta(config, state.step, data.levels, level_kind=data.level_kind,
                               resolution=data.resolution, parameters=parameters,
                               train_stores=list(data.stores), world_size=runtime.env.world_size)
        contents = Checkpoint(weights, config.model_dump(mode="json"), data.statistics.to_dict(), meta)
        train_state = {"optimizer": optimizer, "scheduler": parts.scheduler.state_dict(),
                       "scaler": parts.scaler.state_dict(), "rng": generators,
                       "sampler": state.sampler.to_dict(), "step": state.step,
                       "metrics": list(state.history), "world_size": runtime.env.world_size}
        write_checkpoint(directory, contents, train_state)
        logger.info("step %d: checkpoint written to '%s'", state.step, directory)
    distributed.barrier()
    state.checkpoint, state.checkpoint_step = directory, state.step


def architecture(config: dict) -> dict:
    """The parts of a plain configuration that fix the model's parameters and input shapes."""
    data = config.get("data", {})
    fields = [{key: f.get(key) for key in FIELD_KEYS} for f in config.get("fields", [])]
    return {"fields": fields, "model": config.get("model"), "data.box": data.get("box"),
            "data.time_step": data.get("time_step")}


def check_resumable(checkpoint: dict, config: RunConfig, where: str) -> None:
    """Raise CheckpointError if the fields (names, levels, tokens, coupling), model or box differ."""
    old, new = architecture(checkpoint), architecture(config.model_dump(mode="json"))
    for key in old:
        if old[key] != new[key]:
            raise CheckpointError(f"cannot resume from '{where}': '{key}' differs from the checkpoint's "
                                  f"(checkpoint {old[key]!r}, configuration {new[key]!r})")


def migrated_optimizer_state(state: dict, version: int) -> dict:
    """A name-keyed optimiser state of a version-``version`` checkpoint under the current parameter names."""
    def moments(name: str, entry: dict) -> dict:
        return {key: migrated_tensor(name, value, version) if torch.is_tensor(value) and value.ndim else value
                for key, value in entry.items()}

    return {**state, "state": {(new := migrated_name(name, version)): moments(new, value)
                               for name, value in state["state"].items()},
            "param_groups": [{**group, "params": [migrated_name(name, version) for name in group["params"]]}
                             for group in state["param_groups"]]}


def restore_state(directory: Path, parts: TrainingParts, config: RunConfig, runtime: Runtime) -> tuple[
        TrainingState, dict | None]:
    """Load a training checkpoint into ``parts``.

    Returns:
        The training state, and this rank's generator states (None if the checkpoint was
        written by fewer ranks: the caller seeds this rank afresh).
    """
    version = int(read_meta(directory).get("version", 0))
    checkpoint = read_checkpoint(directory)
    check_resumable(checkpoint.config, config, str(directory))
    saved = read_train_state(directory)
    distributed.load_model_state(parts.model.module, checkpoint.weights)
    optimizer = migrated_optimizer_state(saved["optimizer"], version)
    distributed.load_optimizer_state(parts.model.module, parts.optimizer, optimizer)
    parts.scheduler.load_state_dict(saved["scheduler"])
    if parts.scaler.is_enabled() and saved["scaler"]:
        parts.scaler.load_state_dict(saved["scaler"])
    generators = saved["rng"]
    rank = runtime.env.rank
    state = TrainingState(step=int(saved["step"]), sampler=SamplerState(**saved["sampler"]),
                          history=list(saved["metrics"]), checkpoint=Path(directory),
                          checkpoint_step=int(saved["step"]))
    if rank >= len(generators):
        logger.warning("checkpoint written by %d ranks: rank %d starts fresh generators",
                       len(generators), rank)
        return state, None
    return state, generators[rank]
