"""Learning-rate schedule: linear warm-up, then cosine, linear or constant decay.

The factor multiplying ``optim.lr`` at optimiser step ``s`` (0-based; ``W = warmup_steps``,
``S = max_steps``, ``r = min_lr_ratio``):

* warm-up, ``s < W``: ``(s + 1) / W``, rising linearly to 1 (the first step already learns);
* then, with progress ``p = (s - W) / max(1, S - W)`` clipped to ``[0, 1]``:

  - ``cosine``: ``r + (1 - r) (1 + cos(pi p)) / 2``,
  - ``linear``: ``r + (1 - r) (1 - p)``,
  - ``constant``: ``1``.

So the rate reaches ``r * lr`` at the last step of a cosine or linear schedule and stays there
if training is extended beyond ``max_steps``.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch.optim.lr_scheduler import LambdaLR

from atmorep.config import OptimConfig


def lr_factor(step: int, optim: OptimConfig, max_steps: int) -> float:
    """The factor of ``optim.lr`` at optimiser step ``step`` (see the module docstring)."""
    warmup = optim.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if optim.decay == "constant":
        return 1.0
    progress = min(1.0, max(0.0, (step - warmup) / max(1, max_steps - warmup)))
    ratio = optim.min_lr_ratio
    if optim.decay == "cosine":
        return ratio + (1.0 - ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return ratio + (1.0 - ratio) * (1.0 - progress)


def build_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig, max_steps: int) -> LambdaLR:
    """A ``LambdaLR`` applying :func:`lr_factor`; call ``step()`` once per optimiser step."""
    return LambdaLR(optimizer, partial(lr_factor, optim=optim, max_steps=max_steps))
