"""The task registry: every task is one object that training, inference and evaluation take by name."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import atmorep
from atmorep.config import resolve_config
from atmorep.errors import DataError
from atmorep.evaluate.task_baselines import BUILDERS
from atmorep.infer.request import inference_task
from atmorep.numerics.temporal_fit import TREND
from atmorep.tasks import TASKS, MaskingError, Task, get_task, inference_tasks, make_task, register_task
from atmorep.tasks.base import time_selection
from atmorep.tasks.masking import mask_fields
from atmorep.train.calibration import task_kinds
from tests.train.conftest import config_dict

SOURCE = Path(atmorep.__file__).parent


@pytest.fixture
def config(tmp_path):
    stores = {"train": str(tmp_path / "train.zarr"), "validation": str(tmp_path / "validation.zarr")}
    return resolve_config(config_dict(stores, tmp_path / "run"))  # box of 3 time tokens of 2 steps


def test_no_task_name_is_compared_outside_the_registry():
    compared = re.compile(r"""task\w*(\.name)?\s*(==|!=)\s*["']|["']\s*(==|!=)\s*\w*task""")
    offenders = [f"{path.relative_to(SOURCE)}:{number}"
                 for path in SOURCE.rglob("*.py") if "tasks" not in path.relative_to(SOURCE).parts
                 for number, line in enumerate(path.read_text().splitlines(), 1) if compared.search(line)]
    assert offenders == []


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_is_complete(name, config):
    task = get_task(name)
    assert task.name == name
    assert set(task.baselines) <= set(BUILDERS)
    assert set(task.history) <= set(task.baselines)
    assert set(task.required_options) <= set(task.options)
    if not task.inference:
        assert name not in inference_tasks()
        return
    layout = task.layout(config)
    assert layout.task == name and 0 <= layout.reference < layout.window
    assert all(0 <= step < layout.window for step in layout.predicted)
    assert layout.read_steps <= layout.window and layout.with_mask == task.with_mask
    if task.rolls_out:  # a forecast never reads its targets
        assert layout.read_steps <= min(layout.predicted)


def test_the_calibrated_kinds_come_from_the_tasks():
    assert task_kinds() == {"forecast": TREND, **{n: TASKS[n].guess_kind for n in ("interpolate", "infill",
                                                                                "downscale", "correct")}}
    assert all(get_task(name).guess_kind is not None for name in task_kinds())


@dataclass(frozen=True)
class FirstStepTask(Task):
    """Backcasting the first time token: a new task is one class."""

    name = "backcast"
    baselines = ("climatology",)

    def select(self, shape, generator, field):
        return time_selection(shape, [0], generator.device)

    def layout(self, config):
        layout = super().layout(config)
        return type(layout)(self.name, layout.window, layout.window - 1, tuple(range(2)))


def test_a_registered_task_is_used_by_training_and_inference(config):
    register_task("backcast", FirstStepTask)
    try:
        tokens = {"t": torch.randn(1, 2, 3, 2, 2, 32), "u": torch.randn(1, 2, 3, 2, 2, 32)}
        masked = mask_fields(tokens, config.fields, "backcast", torch.Generator().manual_seed(0))
        assert masked["t"].target_mask[:, :, 0].all() and not masked["t"].target_mask[:, :, 1:].any()
        assert "backcast" in inference_tasks()
        assert inference_task("backcast").layout(config).offsets.tolist() == [-5, -4]
        with pytest.raises(MaskingError, match="already registered"):
            register_task("backcast", type("Other", (FirstStepTask,), {}))
    finally:
        TASKS.pop("backcast")
    with pytest.raises(DataError, match="unknown inference task 'backcast'"):
        inference_task("backcast")


def test_training_only_tasks_are_refused_at_inference():
    with pytest.raises(DataError, match="unknown inference task 'bert'"):
        inference_task("bert")
    with pytest.raises(MaskingError, match="unknown options"):
        make_task("forecast", lead=3)


def test_options_are_picked_by_the_task():
    options = {"lead_hours": 6.0, "infill_region": (0, 1, 2, 3)}
    assert get_task("forecast").pick(options) == {"lead_hours": 6.0}
    assert get_task("infill").pick(options) == {"infill_region": (0, 1, 2, 3)}
    assert get_task("interpolate").pick(options) == {}


def test_interpolation_hides_the_steps_between_the_first_and_the_last_time_token(config):
    task = get_task("interpolate")
    points = task.target_points(task.layout(config), (2, 3))  # [T, H, W]
    assert points[:, 0, 0].tolist() == [False, False, True, True, False, False]
    assert points.all(dim=(1, 2)).tolist() == points.any(dim=(1, 2)).tolist()
