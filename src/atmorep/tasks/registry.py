"""The tasks by name. A new task is one module with a :class:`~atmorep.tasks.base.Task` subclass,
registered here (or by :func:`register_task` from outside the package)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

import torch

from atmorep.config import RunConfig
from atmorep.tasks.base import MaskingError, Task
from atmorep.tasks.bert import BertTask
from atmorep.tasks.correct import CorrectTask
from atmorep.tasks.downscale import DownscaleTask
from atmorep.tasks.draws import uniform
from atmorep.tasks.forecast import ForecastTask
from atmorep.tasks.infill import InfillTask
from atmorep.tasks.interpolate import InterpolateTask
from atmorep.tasks.reconstruct import ReconstructTask

TASKS: dict[str, Callable[..., Task]] = {
    "bert": BertTask, "reconstruct": ReconstructTask, "forecast": ForecastTask,
    "interpolate": InterpolateTask, "infill": InfillTask, "downscale": DownscaleTask, "correct": CorrectTask,
}


def register_task(name: str, factory: type[Task]) -> None:
    """Make a task available by name; ``factory(**options)`` builds it."""
    if name in TASKS and TASKS[name] is not factory:
        raise MaskingError(f"task '{name}' is already registered")
    TASKS[name] = factory


def inference_tasks() -> tuple[str, ...]:
    """The names of the tasks that exist at inference (and so in prediction stores)."""
    return tuple(name for name, factory in TASKS.items() if factory.inference)


def _options_of(factory: Callable[..., Task]) -> set[str]:
    return set(inspect.signature(factory).parameters)


def make_task(name: str, **options: object) -> Task:
    """Build the registered task ``name``.

    Options that another registered task accepts are ignored, so that one call site can serve a
    mixture of tasks (``forecast_tokens`` with a BERT batch); options no task accepts raise.
    """
    if name not in TASKS:
        raise MaskingError(f"unknown masking task '{name}'; registered: {sorted(TASKS)}")
    known = set().union(*(_options_of(factory) for factory in TASKS.values()))
    unknown = sorted(set(options) - known)
    if unknown:
        raise MaskingError(f"masking task '{name}': unknown options {unknown}; known: {sorted(known)}")
    accepted = _options_of(TASKS[name])
    return TASKS[name](**{key: value for key, value in options.items() if key in accepted})


def training_task(name: str, config: RunConfig) -> Task:
    """The task ``name`` as a run trains with it: ``train.forecast_tokens`` and ``train.task_options[name]``.

    Raises:
        MaskingError: naming the key, for an unknown task, an option the task does not take, or a
            value it refuses.
    """
    key = f"train.task_options.{name}"
    if name not in TASKS:
        raise MaskingError(f"{key}: unknown masking task '{name}'; registered: {sorted(TASKS)}")
    options = dict(config.train.task_options.get(name, {}))
    accepted = _options_of(TASKS[name]) - {"mask"}  # a mask is given at inference, never configured
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise MaskingError(f"{key}: task '{name}' takes no options {unknown}; it takes {sorted(accepted)}")
    options.setdefault("forecast_tokens", config.train.forecast_tokens)
    try:
        return make_task(name, **options)
    except (TypeError, ValueError) as error:  # a refused value (MaskingError is a ValueError)
        raise MaskingError(f"{key}: {error}") from error


def get_task(name: str, what: str = "task") -> Task:
    """The task ``name`` with its default options; a MaskingError naming the known ones if there is none."""
    if name not in TASKS:
        raise MaskingError(f"unknown {what} '{name}'; expected one of {list(TASKS)}")
    return TASKS[name]()


def draw_task(tasks: Mapping[str, float], generator: torch.Generator) -> str:
    """Draw one task name with probability proportional to its weight (e.g. ``train.tasks``)."""
    names, weights = list(tasks), [float(w) for w in tasks.values()]
    unknown = [n for n in names if n not in TASKS]
    if unknown or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise MaskingError(f"train.tasks: need registered names {sorted(TASKS)} with non-negative "
                           f"weights of positive sum, got {dict(tasks)}")
    edges = torch.tensor(weights, dtype=torch.float64).cumsum(0)  # [K]
    u = float(uniform((1,), generator)) * float(edges[-1])
    index = int(torch.searchsorted(edges, torch.tensor([u], dtype=torch.float64), right=True))
    return names[min(index, len(names) - 1)]
