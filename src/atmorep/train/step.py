"""One training step, and the evaluation of one validation batch.

A step on a :class:`~atmorep.batch.Batch` (fields ``[B, L, T, H, W]``, normalised):

1. tokenise every field with its token size: ``[B, L, nT, nH, nW, D_f]``, and compute each
   token's auxiliary values alpha ``[B, L, nT, nH, nW, 7]``;
2. draw a task from the ``train.tasks`` mixture and mask the tokens with it
   (:func:`atmorep.tasks.masking.mask_fields`), every random number from one ``torch.Generator``
   seeded by ``(seed, rank, step, micro-batch)`` (:func:`masking_generator`), so a resumed run
   masks exactly as an uninterrupted one;
3. run the multiformer under the runtime's autocast (the ensemble tail switches it off itself);
4. score the ensemble of every target token against its clean values with the configured losses
   (with a first guess, the scaled corrections against ``(target - guess) / scale``),
   per-token latitude weights ``cos(latitude of the token centre)`` when ``train.latitude_weighting``,
   and per-field weights ``FieldConfig.loss_weight`` (:func:`atmorep.train.losses.combine_losses`).

The backward pass, accumulation and the optimiser live in :mod:`atmorep.train.loop`.

Validation (:func:`evaluate_batch`) uses a fixed set of tasks (forecast and BERT by default)
with generators fixed per batch, so successive validations see identical masks. Besides the
loss it reports, per field, the MSE of the ensemble mean and of climatology: predicting zero in
normalised units (the per-level mean), whose MSE is ``mean(target^2)``; a model with skill has
``mse < mse_climatology``; with a first guess also the MSE of the guess alone (``mse_first_guess``)
and, for the forecast task, of persistence (the last given step of each token column,
``mse_persistence``), so that what the network adds is visible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from atmorep.batch import Batch
from atmorep.config import RunConfig
from atmorep.model.output import ModelOutput
from atmorep.numerics.latitude import latitude_weights
from atmorep.numerics.tokens import ALPHA_NAMES, guide_tokens, tokenise_batch
from atmorep.runtime import Runtime, derive_seed
from atmorep.tasks import draw_task, get_task, training_task
from atmorep.tasks.masking import MaskedField, mask_fields
from atmorep.train.losses import FieldLoss, combine_losses, crps_fair, mse_mean

MASKING_STREAM = 0x6D61736B  # key of the masking streams among the streams derived from train.seed
VALIDATION_STREAM = 0x76616C69  # key of the validation masking streams
VALIDATION_TASKS = ("forecast", "bert")
LATITUDE = ALPHA_NAMES.index("latitude")  # column of the token centre latitude in alpha


@dataclass(frozen=True)
class StepResult:
    """What one forward pass and loss computation gives.

    Attributes:
        loss: the scalar total loss (attached to the graph).
        components: each unweighted loss, detached, keyed ``"<field>/<loss>"``.
        task: the masking task that was drawn.
        tokens: number of tokens of all fields fed to the model.
        targets: number of target tokens of all predicted fields.
    """

    loss: Tensor
    components: dict[str, Tensor]
    task: str
    tokens: int
    targets: int


def tasks_that_fit(config: RunConfig, tasks: Sequence[str]) -> tuple[str, ...]:
    """``tasks`` without those the box cannot hold (:meth:`atmorep.tasks.Task.misfit`: a forecast needs more
    time tokens than it masks, interpolation at least three)."""
    return tuple(task for task in tasks if training_task(task, config).misfit(config) is None)


def masking_generator(seed: int, rank: int, step: int, micro: int = 0,
                      device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of the masks of one micro-batch: depends only on ``(seed, rank, step, micro)``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, MASKING_STREAM, rank, step, micro))
    return generator


def field_weights(config: RunConfig) -> dict[str, float]:
    """``FieldConfig.loss_weight`` of every predicted field."""
    return {f.name: f.loss_weight for f in config.fields if f.predicted}


def field_losses(output: ModelOutput, masked: Mapping[str, MaskedField], alpha: Mapping[str, Tensor],
                 latitude_weighting: bool) -> dict[str, FieldLoss]:
    """The loss inputs of every predicted field: members ``[M, E, D]``, targets ``[M, D]``, weights ``[M]``.

    Targets and weights are gathered in the row-major order of the target tokens, the order of the
    model's predictions.
    """
    per_field = {}
    for name, prediction in output.fields.items():
        field = masked[name]
        target = field.targets()  # [M, D]
        weights = None
        if latitude_weighting and target.shape[0] > 0:
            weights = latitude_weights(alpha[name][..., LATITUDE][field.target_mask])  # [M]
        if prediction.residual is None:
            per_field[name] = FieldLoss(prediction.members, target, weights)
        else:  # the scaled correction against the scaled error of the first guess
            correction = (target.to(prediction.residual.dtype) - prediction.guess) / prediction.scale
            per_field[name] = FieldLoss(prediction.residual, correction, weights)
    return per_field


def forward_masked(model: nn.Module, batch: Batch, config: RunConfig, task: str, generator: torch.Generator,
                   runtime: Runtime) -> tuple[ModelOutput, dict[str, MaskedField], dict[str, Tensor]]:
    """Tokenise, mask with ``task`` and run the model under autocast.

    Returns:
        The model output, the masked fields and the alpha of every field.
    """
    batch = batch.to(runtime.device)
    tokens, alpha = tokenise_batch(batch, config.fields)
    masked = mask_fields(tokens, config.fields, training_task(task, config), generator,
                         guide=guide_tokens(batch, config.fields))
    with runtime.autocast():
        output = model({name: m.tokens for name, m in masked.items()},
                       {name: m.modes for name, m in masked.items()}, alpha)
    return output, masked, alpha


def train_step(model: nn.Module, batch: Batch, config: RunConfig, generator: torch.Generator,
               runtime: Runtime) -> StepResult:
    """Forward pass and loss of one (micro-)batch with a task drawn from ``train.tasks``."""
    task = draw_task(config.train.tasks, generator)
    if get_task(task).rolls_out and config.train.rollout.steps > 1:
        from atmorep.train.rollout import rollout_step  # it builds on this module's forward pass

        total, components, tokens, targets = rollout_step(model, batch, config, generator, runtime)
        return StepResult(loss=total, components=components, task=task, tokens=tokens, targets=targets)
    batch = batch.time_window(0, config.data.box.time)  # a rollout run reads longer boxes
    output, masked, alpha = forward_masked(model, batch, config, task, generator, runtime)
    per_field = field_losses(output, masked, alpha, config.train.latitude_weighting)
    total, components = combine_losses(per_field, config.train.losses, field_weights(config))
    tokens = sum(m.modes.numel() for m in masked.values())
    targets = sum(int(p.members.shape[0]) for p in output.fields.values())
    return StepResult(loss=total, components=components, task=task, tokens=tokens, targets=targets)


@torch.no_grad()
def evaluate_batch(model: nn.Module, batch: Batch, config: RunConfig, runtime: Runtime, index: int,
                   tasks: Sequence[str] = VALIDATION_TASKS) -> dict[str, float]:
    """Validation metrics of one batch under fixed masking tasks.

    Args:
        model: the model (in eval mode).
        batch: a validation batch.
        config: the run configuration (losses, latitude weighting, field weights).
        runtime: device and autocast.
        index: the batch's index in the validation set; with ``train.seed`` it fixes the masks.
        tasks: the masking tasks, each applied to the whole batch.

    Returns:
        Per task: ``"<task>/loss"`` (the training loss) and per predicted field
        ``"<task>/<field>/mse"`` (ensemble mean), ``"<task>/<field>/mse_climatology"`` (predicting
        zero, i.e. the per-level mean) and ``"<task>/<field>/crps"`` (fair CRPS), all
        latitude-weighted when ``train.latitude_weighting``.
    """
    metrics: dict[str, float] = {}
    for k, task in enumerate(tasks):
        generator = torch.Generator(device=runtime.device)
        generator.manual_seed(derive_seed(config.train.seed, VALIDATION_STREAM, index, k))
        output, masked, alpha = forward_masked(model, batch, config, task, generator, runtime)
        per_field = field_losses(output, masked, alpha, config.train.latitude_weighting)
        total, _ = combine_losses(per_field, config.train.losses, field_weights(config))
        metrics[f"{task}/loss"] = float(total)
        for name, (_, _, weights) in per_field.items():
            prediction, target = output.fields[name], masked[name].targets()  # [M, E, D], [M, D]
            references = {"climatology": torch.zeros_like(target)}  # zero in normalised units
            if prediction.guess is not None:
                references["first_guess"] = prediction.guess
            references |= get_task(task).validation_references(masked[name], config.field(name).token_size[0])
            metrics[f"{task}/{name}/mse"] = float(mse_mean(prediction.members, target, weights))
            for reference, values in references.items():
                metrics[f"{task}/{name}/mse_{reference}"] = float(mse_mean(values[:, None], target, weights))
            metrics[f"{task}/{name}/crps"] = float(crps_fair(prediction.members, target, weights))
    return metrics

