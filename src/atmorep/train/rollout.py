"""Training through rollouts: the forecast trained on its own predictions, ``k`` passes deep.

A model trained on one box forecasts its last ``s = forecast_tokens * tt`` steps from true inputs;
rolled out at inference (:mod:`atmorep.infer.rollout`) it is fed its own predictions instead and its
errors compound. With ``train.rollout.steps = k > 1`` a forecast draw trains as it is used: the
sampler reads boxes of ``T + (k - 1) s`` steps (:func:`rollout_box`), and pass ``n`` (from 0) sees
the window of steps ``n s .. n s + T - 1``:

* its first ``T - s`` steps are what an inference rollout would hold there: the true steps of the
  first window, then the predictions of the passes before (fields that are not predicted, such as
  forcings, stay true);
* its last ``s`` steps are hidden and scored, with the configured ensemble losses, against the truth.

Every sample follows one ensemble member, drawn per sample from the step's masking generator and the
same in every pass, as an inference member rollout continues member ``e`` on its own output; each
pass scores all ``E`` members given that trajectory. The loss is the mean over the passes. Gradients
flow back through the fed-back predictions, through at most ``train.rollout.backprop_steps`` passes
(truncated backpropagation: the fed-back values are detached after every ``backprop_steps`` passes).
Other tasks of the mixture train on the first ``T`` steps of the same boxes.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from atmorep.batch import Batch
from atmorep.config import BoxConfig, RunConfig
from atmorep.model.output import FieldPrediction
from atmorep.numerics.tokens import untokenise
from atmorep.runtime import Runtime
from atmorep.tasks.base import time_token_size
from atmorep.tasks.masking import MaskedField
from atmorep.train.losses import combine_losses
from atmorep.train.step import field_losses, field_weights, forward_masked

FORECAST = "forecast"


def rollout_shift(config: RunConfig) -> int:
    """``s``: the steps one forecast pass predicts, and by which the next pass's window moves."""
    return config.train.forecast_tokens * time_token_size(config)


def rollout_box(config: RunConfig) -> BoxConfig:
    """The box the sampler reads: the model's box, ``(k - 1) s`` steps longer for a ``k``-pass rollout."""
    extra = (config.train.rollout.steps - 1) * rollout_shift(config) if config.train.rollout.steps > 1 else 0
    return config.data.box.model_copy(update={"time": config.data.box.time + extra})


def followed_member(prediction: FieldPrediction, field: MaskedField, follow: Tensor,
                    token_size: tuple[int, int, int]) -> Tensor:
    """The predicted steps of the member each sample follows.

    Args:
        prediction: the field's ensemble ``[M, E, D]`` for the forecast targets: every token of the last
            time tokens, so ``M = B L k nH nW`` in row-major order.
        field: the masked field (its modes give the token grid).
        follow: ``[B]`` int64, the member each sample follows.
        token_size: the field's ``(tt, th, tw)``.

    Returns:
        ``[B, L, s, H, W]``: member ``follow[b]`` of sample ``b`` at the predicted steps.
    """
    b, levels, nt, nh, nw = field.modes.shape
    members = prediction.members  # [M, E, D]
    e, d = members.shape[1:]
    grid = members.reshape(b, levels, -1, nh, nw, e, d)  # [B, L, k, nH, nW, E, D]
    index = follow.view(b, 1, 1, 1, 1, 1, 1).expand(b, levels, grid.shape[2], nh, nw, 1, d)
    chosen = grid.gather(5, index).squeeze(5)  # [B, L, k, nH, nW, D]
    return untokenise(chosen, token_size)  # [B, L, s, H, W]


def rollout_step(model: nn.Module, batch: Batch, config: RunConfig, generator: torch.Generator,
                 runtime: Runtime) -> tuple[Tensor, dict[str, Tensor], int, int]:
    """The loss of a ``k``-pass forecast rollout of a batch of long boxes (module docstring).

    Args:
        model: the multiformer (its forward).
        batch: ``[B, L, T + (k - 1) s, H, W]`` normalised boxes (:func:`rollout_box`).
        config: the run configuration.
        generator: the step's masking generator (draws the followed members).
        runtime: device and autocast.

    Returns:
        The mean loss over the passes, its unweighted components averaged over the passes, the tokens
        fed to the model and the target tokens scored (both summed over the passes).
    """
    passes, shift, window = config.train.rollout.steps, rollout_shift(config), config.data.box.time
    backprop = config.train.rollout.backprop_steps or passes
    batch = batch.to(runtime.device)
    follow = torch.randint(config.model.ensemble_members, (batch.batch_size,), generator=generator,
                           device=generator.device).to(runtime.device)
    predicted = {f.name for f in config.fields if f.predicted}
    given = {name: value[:, :, : window - shift]  # [B, L, T - s, H, W]
             for name, value in batch.fields.items()}
    total, components, tokens, targets = 0.0, {}, 0, 0
    for n in range(passes):
        start = n * shift
        truth = batch.time_window(start, window)
        fields = {name: torch.cat([given[name], value[:, :, -shift:]], dim=2)  # [B, L, T, H, W]
                  for name, value in truth.fields.items()}
        window_batch = replace(truth, fields=fields)
        output, masked, alpha = forward_masked(model, window_batch, config, FORECAST, generator, runtime)
        loss, parts = combine_losses(field_losses(output, masked, alpha, config.train.latitude_weighting),
                                     config.train.losses, field_weights(config))
        total = total + loss / passes
        for key, value in parts.items():
            components[key] = components.get(key, 0.0) + value / passes
        tokens += sum(m.modes.numel() for m in masked.values())
        targets += sum(int(p.members.shape[0]) for p in output.fields.values())
        if n == passes - 1:
            break
        cut = (n + 1) % backprop == 0
        for f in config.fields:
            if f.name in predicted:
                step = followed_member(output.fields[f.name], masked[f.name], follow, f.token_size)
                step = step.detach() if cut else step
            else:
                step = truth.fields[f.name][:, :, -shift:]
            given[f.name] = torch.cat([given[f.name][:, :, shift:], step.to(given[f.name].dtype)], dim=2)
    return total, components, tokens, targets
