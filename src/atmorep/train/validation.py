"""Validation during training: fixed batches of the validation stores, fixed masks, skill vs climatology.

Every validation evaluates the same ``train.validation_batches`` batches (batch ``i`` of epoch 0
of this rank's validation stream, normalised with the *training* statistics; read once and kept in
memory), under the same masking tasks with the same masks
(:func:`atmorep.train.step.evaluate_batch`), so successive validations are directly comparable.
Metrics are averaged over batches and ranks. For each task and field the skill score
``1 - mse / mse_climatology`` is positive when the model beats climatology; ``"loss"`` is the mean
of the tasks' losses.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import torch

from atmorep.batch import Batch
from atmorep.config import RunConfig
from atmorep.data.dataset import BoxDataset
from atmorep.data.statistics import Statistics
from atmorep.runtime import Runtime
from atmorep.tasks import get_task
from atmorep.train import distributed
from atmorep.train.step import VALIDATION_TASKS, evaluate_batch, tasks_that_fit

logger = logging.getLogger(__name__)


def validation_tasks(config: RunConfig) -> tuple[str, ...]:
    """The fixed validation tasks, and the trained tasks validated whenever they are trained (model
    correction), that the box holds (:func:`atmorep.train.step.tasks_that_fit`)."""
    trained = tuple(name for name, weight in config.train.tasks.items()
                    if weight > 0 and get_task(name).validated_when_trained and name not in VALIDATION_TASKS)
    return tasks_that_fit(config, VALIDATION_TASKS + trained)


def summarise(means: dict[str, float]) -> dict[str, float]:
    """Add the skill scores ``"<task>/<field>/skill"`` and the overall ``"loss"`` to averaged metrics."""
    out = dict(means)
    for key, mse in means.items():
        if key.endswith("/mse"):
            climatology = means[key[: -len("mse")] + "mse_climatology"]
            out[key[: -len("mse")] + "skill"] = 1.0 - mse / climatology if climatology > 0 else float("nan")
    task_losses = [value for key, value in means.items() if key.count("/") == 1 and key.endswith("/loss")]
    out["loss"] = sum(task_losses) / len(task_losses)
    return out


class Validator:
    """Evaluates a model on the validation stores of a configuration (nothing if there are none)."""

    def __init__(self, config: RunConfig, runtime: Runtime, statistics: Statistics):
        self.config, self.runtime = config, runtime
        self.tasks = validation_tasks(config)
        self.dataset = None
        self._batches: list[Batch] | None = None
        if config.data.validation:
            paths, field_paths = config.data.stores("validation")
            self.dataset = BoxDataset(paths, config.fields, config.data, seed=config.train.seed,
                                      rank=runtime.env.rank, statistics=statistics, field_paths=field_paths,
                                      guide_paths=config.data.guide_stores("validation"))
        else:
            logger.info("no validation stores (data.validation): training without validation")

    def run(self, model: distributed.ParallelModel) -> dict[str, float] | None:
        """Metrics averaged over the validation batches and ranks, or None without validation stores."""
        if self.dataset is None:
            return None
        count = self.config.train.validation_batches
        sums: dict[str, float] = defaultdict(float)
        model.module.eval()
        try:
            for index, batch in enumerate(self.batches()):
                metrics = evaluate_batch(model.forward, batch, self.config, self.runtime, index, self.tasks)
                for key, value in metrics.items():
                    sums[key] += value
        finally:
            model.module.train()
        keys = sorted(sums)
        local = torch.tensor([sums[key] / count for key in keys], dtype=torch.float64,
                             device=self.runtime.device)
        means = distributed.all_reduce_mean(local).tolist()
        return summarise(dict(zip(keys, means)))

    def batches(self) -> list[Batch]:
        """The fixed validation batches (on the CPU), read on the first call and reused after."""
        if self._batches is None:
            count = self.config.train.validation_batches
            self._batches = [self.dataset.make_batch(0, index) for index in range(count)]
        return self._batches
