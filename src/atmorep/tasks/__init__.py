"""Tasks: one object per task (what is hidden and predicted, in training and at inference; its first
guess, baselines, options and output attributes), one module per task, one registry."""

from atmorep.tasks.base import CaseLayout, MaskingError, Task
from atmorep.tasks.registry import (
    TASKS,
    draw_task,
    get_task,
    inference_tasks,
    make_task,
    register_task,
    training_task,
)

__all__ = ["TASKS", "CaseLayout", "MaskingError", "Task", "draw_task", "get_task", "inference_tasks",
           "make_task", "register_task", "training_task"]
