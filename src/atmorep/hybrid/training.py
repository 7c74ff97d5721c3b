"""Training the correction: offline on one-step errors, or online through differentiable rollouts.

* **offline**: the core steps every training state once (no gradient); the network learns the error
  of that step, ``truth_{n+1} - core(truth_n)``, scaled by its spread, by mean squared error.
* **online** ("solver in the loop"): from a training state the hybrid rolls out ``rollout`` steps,
  gradients flowing through the core; the loss is the scaled squared error against the truth at
  every step ``j`` (weighted ``1 / j``, since errors grow about linearly in variance). ``truncate``
  cuts the gradient every that many steps (truncated backpropagation through time); gradients are
  clipped to norm ``clip``. ``offline_minutes`` starts an online run with that many minutes of
  offline fitting (a warm start within the same budget), so that the costly rollouts refine a
  correction that already knows the one-step error (an offline run is offline throughout).

Both are latitude-weighted, use AdamW with a cosine decay over the wall-time budget, and stop at
``minutes`` of wall time or ``max_steps``, so the two can be compared at the same cost.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from atmorep.errors import DataError
from atmorep.hybrid.correction import HybridModel, Normaliser, channel_spread
from atmorep.hybrid.state import Truth

log = logging.getLogger(__name__)


class TrainSettings(BaseModel):
    """How the correction is trained (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["offline", "online"] = "online"
    minutes: float = Field(10.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(4, ge=1)
    rollout: int = Field(8, ge=1)
    truncate: int | None = Field(None, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    clip: float = Field(1.0, gt=0)
    seed: int = 0
    offline_minutes: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _warm_start_within_budget(self) -> TrainSettings:
        if self.mode == "online" and self.offline_minutes >= self.minutes:
            raise ValueError(f"offline_minutes {self.offline_minutes:g}, the offline warm start of an online "
                             f"run, must be less than its minutes ({self.minutes:g})")
        return self


def utc_hours(times: np.ndarray) -> torch.Tensor:
    """Hours of the day ``[T]`` of datetime64 times."""
    day = times.astype("datetime64[D]")
    return torch.as_tensor((times - day) / np.timedelta64(1, "s") / 3600.0, dtype=torch.float32)


@torch.no_grad()
def core_steps(model: HybridModel, fields: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """The raw core's step from every state ``[T, C, H, W]`` -> ``[T, C, H, W]``, in batches."""
    return torch.cat([model.core_step(fields[i:i + batch]) for i in range(0, fields.shape[0], batch)])


def measure_normaliser(truth: Truth, core: torch.Tensor) -> Normaliser:
    """The scales of the training period, from its states and the core's steps from them ``[T, ...]``."""
    fields = truth.fields
    mean = fields.double().mean(dim=(0, 2, 3)).float()
    return Normaliser(mean=mean, std=channel_spread(fields - mean[None, :, None, None]),
                      increment=channel_spread(core[:-1] - fields[:-1]),
                      error=channel_spread(fields[1:] - core[:-1]))


def _scaled_error(error: torch.Tensor, scale: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return ((error / scale[None, :, None, None]) ** 2 * weights).mean()


def train(model: HybridModel, truth: Truth, settings: TrainSettings,
          progress: Callable[[int, float], None] | None = None, cores: torch.Tensor | None = None) -> dict:
    """Train ``model.correction`` on ``truth`` in place; returns what was done (steps, seconds, losses).

    ``cores``: the raw core's step from every state (:func:`core_steps`), if already computed;
    offline fitting needs them.

    Raises:
        DataError: the period is too short for one rollout.
    """
    if model.correction is None:
        raise DataError("hybrid training: the model has no correction to train")
    length = truth.fields.shape[0]
    if length < settings.rollout + 1:
        raise DataError(f"hybrid training: the training period holds {length} states; a rollout of "
                        f"{settings.rollout} steps needs {settings.rollout + 1}")
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    optimiser = torch.optim.AdamW(model.correction.parameters(), lr=settings.learning_rate,
                                  weight_decay=settings.weight_decay)
    weights = truth.weights()
    hours = utc_hours(truth.times)
    began, step, offline_steps, losses = time.perf_counter(), 0, 0, []
    warm = settings.offline_minutes * 60.0
    if cores is None and (settings.mode == "offline" or warm > 0):
        cores = core_steps(model, truth.fields)
    budget = settings.minutes * 60.0
    while True:
        elapsed = time.perf_counter() - began
        offline = settings.mode == "offline" or elapsed < warm
        if elapsed >= budget or (settings.max_steps is not None and step >= settings.max_steps):
            break
        for group in optimiser.param_groups:  # cosine decay over the wall-time budget
            group["lr"] = settings.learning_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, elapsed / budget)))
        if offline:
            index = torch.randint(0, length - 1, (settings.batch_size,), generator=generator)
            loss = _offline_loss(model, truth, cores, hours, index, weights)
        else:
            index = torch.randint(0, length - settings.rollout, (settings.batch_size,), generator=generator)
            loss = _online_loss(model, truth, hours, index, weights, settings)
        if not torch.isfinite(loss):
            raise DataError(f"hybrid training: the loss became {float(loss)} at step {step}; lower "
                            "train.learning_rate or the rollout")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.correction.parameters(), settings.clip)
        optimiser.step()
        losses.append(float(loss.detach()))
        step += 1
        offline_steps += int(offline)
        if progress is not None:
            progress(step, losses[-1])
    return {"steps": step, "seconds": time.perf_counter() - began, "offline_steps": offline_steps,
            "final_loss": float(np.mean(losses[-20:])) if losses else float("nan")}


def _offline_loss(model: HybridModel, truth: Truth, cores: torch.Tensor, hours: torch.Tensor,
                  index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    fields, core = truth.fields[index], cores[index]
    correction = model.correct(fields, core, hours[index])
    return _scaled_error(core + correction - truth.fields[index + 1], model.normaliser.error, weights)


def _online_loss(model: HybridModel, truth: Truth, hours: torch.Tensor, index: torch.Tensor,
                 weights: torch.Tensor, settings: TrainSettings) -> torch.Tensor:
    fields = truth.fields[index]
    total = fields.new_zeros(())
    norm = sum(1.0 / j for j in range(1, settings.rollout + 1))
    for j in range(1, settings.rollout + 1):
        fields = model(fields, hours[index + j - 1])
        error = _scaled_error(fields - truth.fields[index + j], model.normaliser.error, weights)
        total = total + error / (j * norm)
        if settings.truncate is not None and j % settings.truncate == 0:
            fields = fields.detach()
    return total
