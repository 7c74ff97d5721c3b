"""Temporal fits of a grid-point column as linear maps of its values (NumPy only).

The temporal rules of the first guess (:mod:`atmorep.numerics.first_guess`), kept free of torch so that
evaluation can apply the same rules to the truth as baselines:

* a hidden step with visible steps on both sides: a least-squares polynomial through the nearest
  ``context`` visible steps on each side, of degree ``min(3, n - 1)`` for ``n`` points;
* a hidden step with visible steps on one side: the nearest visible value plus the least-squares
  slope through the nearest ``context`` visible steps, extrapolated over ``h`` steps as
  ``slope * sum_{i=1..h} damping**i`` (one visible step: persistence).
"""

from __future__ import annotations

import functools

import numpy as np

BETWEEN, TREND = 1, 2  # kinds of temporal guess (atmorep.numerics.first_guess.GUESS_KINDS)
CONTEXT_STEPS = 3  # visible steps used on each side of a hidden one
TREND_DAMPING = 0.9  # per-step damping of the extrapolated trend


@functools.lru_cache(maxsize=1 << 16)
def temporal_weights(pattern: tuple[bool, ...], context: int = CONTEXT_STEPS,
                     damping: float = TREND_DAMPING) -> tuple[np.ndarray, np.ndarray]:
    """The temporal guess of a grid-point column as a linear map of its values (module docstring).

    Args:
        pattern: per time step, whether it is visible.
        context: visible steps used on each side.
        damping: per-step damping of the trend.

    Returns:
        ``R [T, T]`` float64 (the guess at step ``s`` is ``sum_t R[s, t] x[t]``; identity rows at
        visible steps, zero rows where no step is visible) and ``kinds [T]`` int8.
    """
    steps = len(pattern)
    known = np.flatnonzero(np.asarray(pattern, dtype=bool))
    weights = np.zeros((steps, steps))
    kinds = np.zeros(steps, dtype=np.int8)
    for s in range(steps):
        if pattern[s]:
            weights[s, s] = 1.0
            continue
        before, after = known[known < s][-context:], known[known > s][:context]
        if before.size and after.size:
            points = np.concatenate([before, after])
            degree = min(3, points.size - 1)
            vander = np.vander((points - s).astype(np.float64), degree + 1, increasing=True)  # [n, d+1]
            weights[s, points] = np.linalg.pinv(vander)[0]  # the fitted polynomial's value at s
            kinds[s] = BETWEEN
        elif before.size or after.size:
            side = before if before.size else after
            nearest = side[-1] if before.size else side[0]
            weights[s, nearest] = 1.0
            if side.size > 1:
                offset = (side - side.mean()).astype(np.float64)
                slope = offset / np.square(offset).sum()  # least-squares slope per step
                distance = abs(s - nearest)
                travelled = sum(damping ** i for i in range(1, distance + 1)) * np.sign(s - nearest)
                weights[s, side] += travelled * slope
            kinds[s] = TREND
    return weights, kinds
