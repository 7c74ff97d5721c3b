"""Spread calibration: one factor per field, level and kind of first guess, fitted on validation data.

The training loss sets the ensemble's spread only up to a loss-dependent factor: the member MSE
in ``crps_fair + w * mse_member`` pulls a unit-variance Gaussian ensemble to a spread of about 0.65
(``docs/benchmarks.md``), and tokens whose correction the network has learnt differ from tokens that
stay near their first guess. One loss weight cannot calibrate every kind of guess at once.

So when training ends, the ensemble is calibrated on the validation stores: the fixed validation
batches are masked with each zero-shot task (:func:`task_kinds`), and for every field, level
and kind of guess the factor ``c`` that makes the spread/skill ratio one is

``c = sqrt( mse(ensemble mean) / ((E + 1) / E * mean unbiased variance) )``,

latitude-weighted like the training loss (``train.latitude_weighting``). Outside training the tail
multiplies each member's deviation from the ensemble mean by ``c`` (the buffer ``fields.<field>.tail.spread``,
:class:`atmorep.model.tail.EnsembleTail`), which leaves the ensemble mean, and so the RMSE, unchanged.
Training always sees the raw ensemble (factors apply in eval mode only), so a resumed run trains as
before and is calibrated again when it ends. Kinds the tasks do not produce keep the factor 1;
factors are clipped to :data:`FACTOR_RANGE`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from atmorep.batch import Batch
from atmorep.config import RunConfig
from atmorep.model.output import ModelOutput
from atmorep.numerics.first_guess import GUESS_KINDS
from atmorep.runtime import Runtime, derive_seed
from atmorep.tasks import TASKS
from atmorep.train import distributed
from atmorep.train.step import field_losses, forward_masked, tasks_that_fit

logger = logging.getLogger(__name__)

def task_kinds() -> dict[str, int]:
    """Each registered task whose targets get a calibrated kind of first guess, and that kind."""
    return {name: task.guess_kind for name, task in TASKS.items() if task.guess_kind is not None}


CALIBRATION_STREAM = 0x63616C69  # key of the calibration masking streams
FACTOR_RANGE = (0.1, 10.0)


class SpreadSums:
    """Latitude-weighted sums of the ensemble mean's squared error, of the unbiased ensemble variance
    and of the weights, per field, level and kind of guess (``[L, K, 3]`` float64)."""

    def __init__(self, levels: dict[str, int], members: int) -> None:
        kinds = len(GUESS_KINDS)
        self.sums = {name: torch.zeros(n, kinds, 3, dtype=torch.float64) for name, n in levels.items()}
        self.members = members

    def add(self, name: str, members: Tensor, target: Tensor, level: Tensor, kind: Tensor,
            weights: Tensor | None) -> None:
        """Accumulate the targets ``[M, D]`` of one field and their members ``[M, E, D]``."""
        if members.shape[0] == 0:
            return
        members, target = members.double(), target.double()
        error = (members.mean(dim=1) - target).square().mean(dim=-1)  # [M]
        variance = members.var(dim=1, unbiased=True).mean(dim=-1)  # [M]
        weight = torch.ones_like(error) if weights is None else weights.double()
        index = level * len(GUESS_KINDS) + kind  # [M]
        values = torch.stack([error * weight, variance * weight, weight], dim=-1)  # [M, 3]
        flat = torch.zeros(self.sums[name][..., 0].numel(), 3, dtype=torch.float64, device=values.device)
        flat.index_add_(0, index, values)
        self.sums[name] += flat.reshape(self.sums[name].shape).cpu()

    def all_reduce(self, device: torch.device) -> None:
        """Combine the ranks' sums (their mean: the factors are ratios of sums)."""
        for name in sorted(self.sums):
            self.sums[name] = distributed.all_reduce_mean(self.sums[name].to(device)).cpu()

    def factors(self) -> dict[str, Tensor]:
        """Per field the spread factors ``[L, K]`` float32 (1 where nothing was counted)."""
        members = self.members
        out = {}
        for name, sums in self.sums.items():
            error, variance, weight = sums.unbind(dim=-1)
            counted = (weight > 0) & (variance > 0)
            ratio = error / ((members + 1) / members * variance.clamp(min=1e-300))
            factor = torch.sqrt(ratio).clamp(*FACTOR_RANGE)
            out[name] = torch.where(counted, factor, 1.0).float()
        return out


def calibration_tasks(config: RunConfig) -> tuple[str, ...]:
    """The zero-shot tasks of :func:`task_kinds` that the box holds."""
    return tasks_that_fit(config, tuple(task_kinds()))


def reset_spread(model: nn.Module) -> None:
    """Factors of one: the raw ensemble."""
    set_spread(model, {name: torch.ones_like(tail.spread) for name, tail in model.tails.items()})


@torch.no_grad()
def set_spread(model: nn.Module, factors: dict[str, Tensor]) -> None:
    """Copy spread factors ``[L, K]`` into the tails of ``model`` (all ones resets them)."""
    for name, factor in factors.items():
        model.tails[name].spread.copy_(factor.to(model.tails[name].spread))


@torch.no_grad()
def measure_spread(model: nn.Module, forward: Callable[..., ModelOutput], batches: Sequence[Batch],
                   config: RunConfig, runtime: Runtime, tasks: Sequence[str]) -> SpreadSums:
    """The spread sums of ``model`` as it is (its current factors applied) over ``batches`` and ``tasks``.

    Args:
        model: a first-guess model (its tails hold the factors).
        forward: its forward function (the wrapped, possibly distributed model), run in eval mode.
        batches: this rank's validation batches.
        config: the run configuration.
        runtime: device and autocast.
        tasks: masking tasks, each applied to every batch with masks fixed by ``train.seed``.
    """
    sums = SpreadSums({name: tail.spread.shape[0] for name, tail in model.tails.items()},
                      config.model.ensemble_members)
    was_training = model.training
    model.eval()
    try:
        for index, batch in enumerate(batches):
            for number, task in enumerate(tasks):
                generator = torch.Generator(device=runtime.device)
                generator.manual_seed(derive_seed(config.train.seed, CALIBRATION_STREAM, index, number))
                output, masked, alpha = forward_masked(forward, batch, config, task, generator, runtime)
                per_field = field_losses(output, masked, alpha, config.train.latitude_weighting)
                for name, prediction in output.fields.items():
                    if prediction.kind is not None:
                        sums.add(name, prediction.members, masked[name].targets(), prediction.level,
                                 prediction.kind, per_field[name].weights)
    finally:
        model.train(was_training)
    sums.all_reduce(runtime.device)
    return sums


def fit_spread(model: nn.Module, forward: Callable[..., ModelOutput], batches: Sequence[Batch],
               config: RunConfig, runtime: Runtime, tasks: Sequence[str]) -> dict[str, Tensor]:
    """Fit and set the spread factors of ``model`` from its raw ensemble (arguments as
    :func:`measure_spread`); returns the factors set, per predicted field ``[L, K]``."""
    previous = {name: tail.spread.clone() for name, tail in model.tails.items()}
    reset_spread(model)
    try:
        sums = measure_spread(model, forward, batches, config, runtime, tasks)
    except BaseException:
        set_spread(model, previous)
        raise
    factors = sums.factors()
    set_spread(model, factors)
    for name, factor in factors.items():
        weight = sums.sums[name][..., 2].sum(dim=0)  # [K]
        described = ", ".join(f"{kind} {factor[:, k].mean():.3g}" for k, kind in enumerate(GUESS_KINDS)
                              if weight[k] > 0)
        logger.info("field %s: spread factors (mean over levels): %s", name, described or "none fitted")
    return factors
