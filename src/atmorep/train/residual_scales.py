"""The scales of the first guess's corrections and of the time differences, estimated from training data.

With a first guess (``model.first_guess``) the ensemble tail predicts the correction to the guess
divided by a scale, and the embedding sees the within-token time differences divided by a scale
(docs/training.md, "First guess and residuals"). Both scales are estimated once, before training
starts, from ``SCALE_BATCHES`` batches of the training stores masked with every task of ``train.tasks``:

* the residual scale of a field, level and kind of guess is the RMS of ``target - guess`` over the
  target points of that kind (``1`` for a kind no task produced);
* the difference scale of a field and level is the RMS of the differences between successive steps
  inside tokens.

They live in the model's buffers (``fields.<field>.tail.scale``,
``fields.<field>.embedding.difference_scale``), so checkpoints carry them and a resumed run keeps them.
The batches come from one fixed stream of the training stores (the same on every rank), so every rank
estimates the same scales.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from atmorep.config import RunConfig
from atmorep.data.dataset import BoxDataset
from atmorep.data.statistics import Statistics
from atmorep.numerics.first_guess import GUESS_KINDS, KIND_VISIBLE, first_guess, time_differences
from atmorep.numerics.tokens import guide_tokens, tokenise_batch
from atmorep.runtime import derive_seed
from atmorep.tasks import training_task
from atmorep.tasks.masking import mask_fields

logger = logging.getLogger(__name__)

SCALE_STREAM = 0x7363616C  # key of the estimation stream among the streams derived from train.seed
SCALE_BATCHES = 8
FLOOR = 1e-3  # smallest scale, in normalised units


class ScaleSums:
    """Sums of squares and counts per field, level and kind of guess, and of the time differences."""

    def __init__(self, levels: dict[str, int], predicted: list[str]) -> None:
        kinds = len(GUESS_KINDS)
        self.residual = {name: torch.zeros(levels[name], kinds, 2, dtype=torch.float64) for name in predicted}
        self.difference = {name: torch.zeros(n, 2, dtype=torch.float64) for name, n in levels.items()}

    def add_residual(self, name: str, target: torch.Tensor, guess: torch.Tensor, kinds: torch.Tensor) -> None:
        """Accumulate the guess's errors of one field of a masked batch (tokens ``[B, L, nT, nH, nW, D]``)."""
        error = (target - guess).double().square().sum(dim=-1)  # [B, L, nT, nH, nW]
        sums = self.residual[name]
        for kind in range(len(GUESS_KINDS)):
            chosen = (kinds == kind).to(torch.float64)
            sums[:, kind, 0] += (error * chosen).sum(dim=(0, 2, 3, 4)).cpu()
            sums[:, kind, 1] += chosen.sum(dim=(0, 2, 3, 4)).cpu() * target.shape[-1]

    def add_differences(self, name: str, target: torch.Tensor, token_size: tuple[int, int, int]) -> None:
        """Accumulate the time differences inside the tokens ``[B, L, nT, nH, nW, D]`` of one field."""
        if token_size[0] > 1:
            differences = time_differences(target, token_size).double()  # [B, L, nT, nH, nW, D']
            self.difference[name][:, 0] += differences.square().sum(dim=(0, 2, 3, 4, 5)).cpu()
            self.difference[name][:, 1] += differences.numel() / differences.shape[1]

    def scales(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Per field the residual scales ``[L, K]`` and the difference scales ``[L]``."""
        residual = {name: _rms(sums) for name, sums in self.residual.items()}
        for value in residual.values():
            value[:, KIND_VISIBLE] = 1.0
        return residual, {name: _rms(sums) for name, sums in self.difference.items()}


def _rms(sums: torch.Tensor) -> torch.Tensor:
    """``sqrt(sum / count)``, floored at FLOOR, and 1 where nothing was counted."""
    total, count = sums[..., 0], sums[..., 1]
    rms = torch.sqrt(total / count.clamp(min=1)).clamp(min=FLOOR)
    return torch.where(count > 0, rms, 1.0).float()


def estimate_scales(config: RunConfig, statistics: Statistics, batches: int = SCALE_BATCHES) -> ScaleSums:
    """Accumulate the scales' sums over ``batches`` training batches, each masked with every task."""
    paths, field_paths = config.data.stores("train")
    dataset = BoxDataset(paths, config.fields, config.data, seed=derive_seed(config.train.seed, SCALE_STREAM),
                         rank=0, statistics=statistics, field_paths=field_paths,
                         guide_paths=config.data.guide_stores("train"))
    levels = {f.name: len(dataset.levels[f.name]) for f in config.fields}
    sums = ScaleSums(levels, [f.name for f in config.fields if f.predicted])
    tasks = [task for task, weight in config.train.tasks.items() if weight > 0]
    for index in range(batches):
        batch = dataset.make_batch(0, index)
        tokens, _ = tokenise_batch(batch, config.fields)
        guide = guide_tokens(batch, config.fields)
        for f in config.fields:
            sums.add_differences(f.name, tokens[f.name], f.token_size)
        for number, task in enumerate(tasks):
            generator = torch.Generator().manual_seed(
                derive_seed(config.train.seed, SCALE_STREAM, index, number))
            masked = mask_fields(tokens, config.fields, training_task(task, config), generator, guide=guide)
            for f in config.fields:
                if f.predicted:
                    guess, kinds = first_guess(masked[f.name].tokens, masked[f.name].modes, f.token_size,
                                               f.masking.coarsen_factor)
                    sums.add_residual(f.name, masked[f.name].target, guess, kinds)
    return sums


@torch.no_grad()
def set_scales(model: nn.Module, residual: dict[str, torch.Tensor],
               difference: dict[str, torch.Tensor]) -> None:
    """Copy estimated scales into a model's buffers (fields the model does not predict are skipped)."""
    for name, scale in residual.items():
        tail = model.fields[name].tail
        tail.scale.copy_(scale.to(tail.scale))
    for name, scale in difference.items():
        embedding = model.fields[name].embedding
        embedding.difference_scale.copy_(scale.to(embedding.difference_scale))


@torch.no_grad()
def fill_unestimated(model: nn.Module, estimated: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Kinds of guess whose scales a loaded checkpoint never estimated (one at every level, e.g. a kind
    added after it was trained) take this run's ``estimated`` scales; returns them per field."""
    filled = {}
    for name, fresh in estimated.items():
        tail = model.fields[name].tail
        never = (tail.scale == 1.0).all(dim=0) & (fresh != 1.0).any(dim=0)  # [K]
        never[KIND_VISIBLE] = False
        if bool(never.any()):
            tail.scale[:, never] = fresh[:, never].to(tail.scale)
            filled[name] = [GUESS_KINDS[k] for k in torch.nonzero(never).flatten().tolist()]
    return filled


def initialise_scales(model: nn.Module, config: RunConfig, statistics: Statistics) -> None:
    """Estimate the scales from the training stores and set them in ``model`` (with a first guess)."""
    if not config.model.first_guess:
        return
    residual, difference = estimate_scales(config, statistics).scales()
    set_scales(model, residual, difference)
    for name, scale in residual.items():
        described = ", ".join(f"{kind} {scale[:, k].mean():.3g}" for k, kind in enumerate(GUESS_KINDS) if k)
        logger.info("field %s: first-guess error scales (mean over levels): %s; time differences %.3g",
                    name, described, float(difference[name].mean()))
