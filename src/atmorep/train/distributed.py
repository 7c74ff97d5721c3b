"""Data-parallel training: wrapping the model (DDP or FSDP2), full state dicts, collectives.

Under ``torchrun`` every rank holds a model replica (DDP) or a shard of it (FSDP2,
``torch.distributed.fsdp.fully_shard`` on each encoder layer (all fields' blocks as one unit) and each
decoder block, then the root).
``train.distributed`` chooses: ``auto`` is DDP when ``WORLD_SIZE > 1``; ``none`` refuses to run
under a multi-process launcher (every rank would train alone); on a single process every mode
trains without a wrapper.

State dicts for checkpoints are *full* and keyed by parameter name (the unwrapped model's names),
through ``torch.distributed.checkpoint.state_dict``: a checkpoint written by any number of ranks
loads into any other number, or into a single process. Every helper here is a no-op (or the
identity) when no process group exists.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.nn.parallel import DistributedDataParallel

from atmorep.config import ConfigError
from atmorep.runtime import DistributedEnv, Runtime

logger = logging.getLogger(__name__)

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def _shard_units(model: nn.Module) -> list[nn.Module | list[nn.Module]]:
    """The units FSDP shards and gathers together: each encoder layer (the blocks of every field, which
    run together) and each decoder block."""
    fields = list(model.fields.values())
    layers = [[field.encoder[k] for field in fields] for k in range(len(fields[0].encoder))]
    return layers + [block for field in fields if field.predicted for block in field.decoder.blocks]


def resolve_mode(requested: str, env: DistributedEnv) -> str:
    """``"none"``, ``"ddp"`` or ``"fsdp"`` for ``train.distributed`` in this environment."""
    if not env.is_distributed:
        if requested in ("ddp", "fsdp"):
            logger.info("train.distributed=%s on a single process: training without a wrapper", requested)
        return "none"
    if requested == "none":
        raise ConfigError(f"train.distributed: 'none' under a launcher with WORLD_SIZE={env.world_size}; "
                          f"use 'auto', 'ddp' or 'fsdp', or start a single process")
    return "ddp" if requested == "auto" else requested


@dataclass
class ParallelModel:
    """The model in its three roles.

    Attributes:
        module: the unwrapped model (parameter names, state dicts, optimiser groups).
        forward: what to call: the DDP/FSDP-wrapped and possibly compiled model.
        mode: ``"none"``, ``"ddp"`` or ``"fsdp"``.
        ddp: the DDP wrapper, if any (for ``no_sync``).
    """

    module: nn.Module
    forward: nn.Module
    mode: str = "none"
    ddp: DistributedDataParallel | None = None

    @contextlib.contextmanager
    def gradient_sync(self, enabled: bool) -> Iterator[None]:
        """Skip the gradient all-reduce while accumulating micro-batches (``enabled=False``)."""
        if self.mode == "ddp" and not enabled:
            with self.ddp.no_sync():  # type: ignore[union-attr]
                yield
            return
        if self.mode == "fsdp":
            self.module.set_requires_gradient_sync(enabled)  # type: ignore[operator]
        yield


def wrap_model(model: nn.Module, runtime: Runtime, requested: str, compile_model: bool) -> ParallelModel:
    """Wrap ``model`` (already on ``runtime.device``) for the distributed mode, then compile if asked."""
    mode = resolve_mode(requested, runtime.env)
    forward, ddp = model, None
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for unit in _shard_units(model):
            fully_shard(unit)
        fully_shard(model)
    elif mode == "ddp":
        device_ids = [runtime.device] if runtime.device.type == "cuda" else None
        forward = ddp = DistributedDataParallel(model, device_ids=device_ids)
    if compile_model:
        forward = torch.compile(forward)
    return ParallelModel(module=model, forward=forward, mode=mode, ddp=ddp)


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full state dict of the unwrapped model, on the CPU (collective under FSDP)."""
    return get_model_state_dict(model, options=_FULL)


def _load_options() -> StateDictOptions:
    """Full state dicts given to every rank; plain (name-keyed) ones without a process group."""
    return StateDictOptions(full_state_dict=is_active(), strict=True)


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict into a (possibly sharded) model; every key must match."""
    set_model_state_dict(model, state, options=_load_options())


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The full optimiser state keyed by parameter name, on the CPU (collective under FSDP)."""
    return get_optimizer_state_dict(model, optimizer, options=_FULL)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a full, name-keyed optimiser state into ``optimizer``."""
    set_optimizer_state_dict(model, optimizer, state, options=_load_options())


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (``[value]`` without a process group)."""
    if not is_active():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a float tensor (the tensor itself without a process group)."""
    if not is_active():
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / dist.get_world_size()


def any_rank(flags: list[bool], device: torch.device) -> list[bool]:
    """Per flag, True on every rank if it is true on any rank (one collective for all flags)."""
    if not is_active():
        return list(flags)
    values = torch.tensor([1.0 if flag else 0.0 for flag in flags], device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [value > 0 for value in values.tolist()]


def barrier() -> None:
    if is_active():
        dist.barrier()
