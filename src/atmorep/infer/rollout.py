"""Rollout: longer lead times by iterating a forecast step on its own output.

A forecast step sees a window of ``T`` time steps and predicts the next ``k`` (``1 <= k <= T``).
For the next step the window moves forward by ``k``: its input is the last ``T - k`` steps of the
previous input followed by the ``k`` predicted steps, so step ``n`` (from 1) predicts the time steps
``T + (n - 1) k .. T + n k - 1`` counted from the start of the initial window. The step function
is any callable (a persistence or advection baseline, or the model run tile by tile over the globe
with :func:`atmorep.infer.tiling.run_tiled`). The rollout is a generator, so a caller can stop
early, write each step as it arrives, and hold only one window in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from atmorep.errors import DataError

StepFn = Callable[[torch.Tensor], torch.Tensor]


def rollout(step_fn: StepFn, initial: torch.Tensor, steps: int, *, dim: int = -3) -> Iterator[torch.Tensor]:
    """Iterate a forecast step, yielding each step's forecast.

    Args:
        step_fn: maps a window ``[..., T, H, W]`` to its forecast ``[..., k, H, W]``: the same shape
            except ``1 <= k <= T`` along the time axis, the same ``k`` at every step.
        initial: the first window ``[..., T, H, W]``.
        steps: number of forecast steps (0 yields nothing).
        dim: the time axis of ``initial`` (``-3`` for ``[..., T, H, W]``).

    Returns:
        An iterator over the forecasts ``[..., k, H, W]`` of steps 1 .. ``steps``.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise DataError(f"rollout: steps must be a non-negative integer, got {steps!r}")
    if not -initial.ndim <= dim < initial.ndim:
        raise DataError(f"rollout: time axis {dim} out of range for an initial window of shape "
                        f"{tuple(initial.shape)}")
    return _iterate(step_fn, initial, steps, dim % initial.ndim)


def _iterate(step_fn: StepFn, window: torch.Tensor, steps: int, dim: int) -> Iterator[torch.Tensor]:
    length = window.shape[dim]
    lead: int | None = None
    for step in range(1, steps + 1):
        forecast = step_fn(window)
        lead = _check_forecast(forecast, window, dim, step, lead)
        yield forecast
        if step < steps:
            kept = window.narrow(dim, lead, length - lead)  # [..., T - k, H, W]
            window = torch.cat([kept, forecast.to(window.dtype)], dim=dim)  # [..., T, H, W]


def _check_forecast(forecast: torch.Tensor, window: torch.Tensor, dim: int, step: int,
                    lead: int | None) -> int:
    """The forecast length ``k`` of one step, after checking the forecast's shape."""
    expected = list(window.shape)
    if forecast.ndim == window.ndim:
        expected[dim] = forecast.shape[dim]
    k = forecast.shape[dim] if forecast.ndim == window.ndim else 0
    if list(forecast.shape) != expected or not 1 <= k <= window.shape[dim] or lead not in (None, k):
        raise DataError(f"rollout step {step}: step_fn returned shape {tuple(forecast.shape)} for a "
                        f"window of shape {tuple(window.shape)}; expected the same shape with "
                        f"1..{window.shape[dim]} time steps along axis {dim}"
                        + (f" (k={lead} as before)" if lead else ""))
    return k
