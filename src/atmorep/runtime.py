"""Runtime setup in one place: device, compute dtype (with the reason), seeding, distributed environment.

Library code never calls ``.cuda()`` or branches on CUDA itself: it asks :func:`make_runtime` for a
:class:`Runtime` and uses ``runtime.device`` and ``runtime.autocast()``.

* **Device**: CUDA (the GPU of this process's local rank) if available, else Apple MPS, else CPU;
  a request such as ``"cpu"`` overrides the detection.
* **Compute dtype**: bfloat16 autocast on CUDA devices that support it; float16 autocast with loss
  scaling on older GPUs; float32 on CPU and MPS (autocast gives no speed-up on CPU, and MPS
  autocast does not cover every operation). ``Runtime.dtype_reason`` says which rule applied.
* **Distributed**: ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as set by ``torchrun`` (or SLURM's
  ``srun`` with those variables exported); :func:`init_distributed` uses the NCCL backend on CUDA
  and gloo on CPU.
* **Random state**: :func:`seed_everything` seeds Python, NumPy and torch (all devices);
  :func:`rng_state` / :func:`set_rng_state` capture and restore all of them, for exact resumption.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from atmorep.errors import AtmorepError

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "float32", "bfloat16")


class RuntimeSetupError(AtmorepError, RuntimeError):
    """The requested device, precision or distributed setup is not available here."""


@dataclass(frozen=True)
class DistributedEnv:
    """This process's place in a distributed job (``world_size == 1`` outside ``torchrun``)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def distributed_env() -> DistributedEnv:
    """Read ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` from the environment (``torchrun`` sets them)."""
    values = {}
    for name, default in (("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", 1)):
        raw = os.environ.get(name, str(default))
        try:
            values[name] = int(raw)
        except ValueError:
            raise RuntimeSetupError(f"environment variable {name}={raw!r} is not an integer") from None
    env = DistributedEnv(rank=values["RANK"], local_rank=values["LOCAL_RANK"],
                         world_size=values["WORLD_SIZE"])
    if not 0 <= env.rank < env.world_size:
        raise RuntimeSetupError(f"RANK={env.rank} does not lie in [0, WORLD_SIZE={env.world_size})")
    return env


def detect_device(request: str = "auto", local_rank: int = 0) -> torch.device:
    """The compute device: CUDA (GPU ``local_rank``) > MPS > CPU, or the requested kind."""
    if request not in DEVICES:
        raise RuntimeSetupError(f"device '{request}' is not one of {DEVICES}")
    cuda, mps = torch.cuda.is_available(), _mps_available()
    if request == "cuda" and not cuda:
        raise RuntimeSetupError("device 'cuda' requested but no CUDA device is available")
    if request == "mps" and not mps:
        raise RuntimeSetupError("device 'mps' requested but MPS is not available")
    if request == "cuda" or (request == "auto" and cuda):
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    if request == "mps" or (request == "auto" and mps):
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def compute_dtype(device: torch.device, precision: str = "auto") -> tuple[torch.dtype, str]:
    """The autocast dtype of the transformer trunk on ``device`` and the reason for it."""
    if precision not in PRECISIONS:
        raise RuntimeSetupError(f"precision '{precision}' is not one of {PRECISIONS}")
    if precision == "float32":
        return torch.float32, "float32 requested (train.precision)"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, f"bfloat16 autocast: {torch.cuda.get_device_name(device)} supports it"
        if precision == "bfloat16":
            raise RuntimeSetupError(f"bfloat16 requested but {torch.cuda.get_device_name(device)} lacks it")
        return torch.float16, "float16 autocast with loss scaling: this GPU lacks bfloat16"
    if precision == "bfloat16":
        if device.type == "cpu":
            return torch.bfloat16, "bfloat16 requested (CPU autocast)"
        raise RuntimeSetupError(f"bfloat16 autocast is not supported on device '{device.type}'")
    return torch.float32, f"float32: autocast brings no speed-up on {device.type}"


@dataclass(frozen=True)
class Runtime:
    """Where and how this process computes.

    Attributes:
        device: the compute device.
        dtype: the autocast dtype of the transformer trunk (float32: no autocast).
        dtype_reason: why this dtype was chosen.
        env: the distributed environment.
    """

    device: torch.device
    dtype: torch.dtype = torch.float32
    dtype_reason: str = "float32"
    env: DistributedEnv = DistributedEnv()

    @property
    def autocast_enabled(self) -> bool:
        return self.dtype != torch.float32

    @property
    def needs_loss_scaling(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for the transformer trunk (a no-op in float32)."""
        return torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=self.autocast_enabled)

    def describe(self) -> str:
        place = f"rank {self.env.rank}/{self.env.world_size}, " if self.env.is_distributed else ""
        return f"{place}device {self.device}, {self.dtype_reason}"


def make_runtime(device: str = "auto", precision: str = "auto", env: DistributedEnv | None = None) -> Runtime:
    """Detect device and compute dtype for this process."""
    env = env or distributed_env()
    chosen = detect_device(device, env.local_rank)
    dtype, reason = compute_dtype(chosen, precision)
    return Runtime(device=chosen, dtype=dtype, dtype_reason=reason, env=env)


def init_distributed(runtime: Runtime) -> bool:
    """Join the process group of a ``torchrun`` job (NCCL on CUDA, gloo otherwise).

    Returns:
        True if this call initialised the group (the caller should destroy it), False when the
        job is not distributed or the group already exists.
    """
    if not runtime.env.is_distributed or dist.is_initialized():
        return False
    if runtime.device.type == "cuda":
        torch.cuda.set_device(runtime.device)
    backend = "nccl" if runtime.device.type == "cuda" else "gloo"
    kwargs = {"device_id": runtime.device} if backend == "nccl" else {}
    dist.init_process_group(backend=backend, rank=runtime.env.rank, world_size=runtime.env.world_size,
                            **kwargs)
    logger.info("joined process group: %s, backend %s", runtime.describe(), backend)
    return True


def destroy_distributed() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def derive_seed(seed: int, *key: int) -> int:
    """A 63-bit seed derived from ``seed`` and a key (independent streams for distinct keys)."""
    words = np.random.SeedSequence(seed, spawn_key=tuple(key)).generate_state(2, np.uint32)
    return ((int(words[0]) << 32) | int(words[1])) & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the global generator other libraries draw from
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Python, NumPy, torch and (if present) CUDA generator states, as tensors and plain values.

    The result holds only types that ``torch.load(weights_only=True)`` accepts.
    """
    kind, keys, position, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    numpy = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
             "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    state = {"python": random.getstate(), "numpy": numpy, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the generator states captured by :func:`rng_state`."""
    random.setstate(_as_tuples(state["python"]))
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["kind"], keys, numpy["position"], numpy["has_gauss"],  # noqa: NPY002
                         numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value):
    """Python's generator state with lists (as some serialisers return them) turned back into tuples."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuples(v) for v in value)
    return value

