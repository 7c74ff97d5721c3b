"""Fine-tune a tail on a pre-trained backbone (``atmorep finetune --config``).

Each step draws ``boxes_per_batch`` boxes of the training period uniformly (start time, row and, on a
global grid, column), runs the backbone on them with every token visible, and scores the tail's
residuals on the boxes' rows (:func:`atmorep.tails.base.tail_loss`), plus, with ``train.content_loss``,
the distance of the predicted fine boxes to the true ones (:mod:`atmorep.tails.content`). The backbone is
frozen (``backbone_lr_ratio: 0``, run without gradients) or trained at ``lr * backbone_lr_ratio``. AdamW
and the warm-up/decay schedule are the backbone training's (:mod:`atmorep.train.optimizer`,
:mod:`atmorep.train.schedule`). Every ``validate_every`` steps and at the end the tail is scored on a
fixed set of validation boxes (``metrics.jsonl``); at the end the spread factors are fitted on them
and the checkpoint is written to ``run_dir/tail``. The resolved configuration is ``run_dir/finetune.yaml``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from atmorep.io import atomic_write_text
from atmorep.runtime import detect_device, seed_everything
from atmorep.tails.backbone import Backbone
from atmorep.tails.base import Tail, TailBatch, spread_factors, tail_loss
from atmorep.tails.coarse import BoxAt, CoarsePeriod
from atmorep.tails.config import FinetuneConfig
from atmorep.tails.content import ContentTerm
from atmorep.tails.registry import Pairs, get_tail
from atmorep.tails.saved import write_tail
from atmorep.train.loop import TrainingError
from atmorep.train.optimizer import parameter_groups
from atmorep.train.schedule import build_scheduler

logger = logging.getLogger(__name__)
TAIL_DIR = "tail"


@dataclass(frozen=True)
class FinetuneResult:
    checkpoint: Path
    steps: int
    seconds: float
    validation: dict


def finetune(config: FinetuneConfig, progress: Callable[[int, dict], None] | None = None) -> FinetuneResult:
    """Fine-tune the tail of ``config`` and write its checkpoint; see the module docstring."""
    spec, train = config.tail, config.train
    device = detect_device(train.device)
    seed_everything(train.seed)
    backbone = Backbone(spec.backbone, device)
    trained_backbone = train.backbone_lr_ratio > 0
    backbone.model.train(trained_backbone).requires_grad_(trained_backbone)
    recipe = get_tail(spec.name)
    coarse = CoarsePeriod(spec.coarse, backbone, spec.fields, *config.periods.bounds("train"))
    pairs, setup = recipe.fit(spec, coarse)
    validation = recipe.pairs(spec, CoarsePeriod(spec.coarse, backbone, spec.fields,
                                                 *config.periods.bounds("validation")), setup)
    content = (ContentTerm(train.content_loss, pairs, spec.fields, device) if train.content_loss
               else None)
    sizes = recipe.sizes(pairs, setup)
    tail = recipe.build(spec, backbone, sizes).to(device)
    tail.initialise(pairs)
    optimizer, scheduler = _optimiser(tail, backbone, config, device)
    run_dir = Path(train.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    atomic_write_text(run_dir / "finetune.yaml", resolved)
    rng = np.random.default_rng(train.seed)
    checked = np.random.default_rng(train.seed + 1)
    validation_boxes = validation.coarse.random_boxes(checked, train.validation_boxes)
    started, step, scores = time.monotonic(), 0, {}
    with (run_dir / "metrics.jsonl").open("a") as log:
        while step < train.max_steps:
            if train.max_minutes and time.monotonic() - started > 60 * train.max_minutes:
                break
            loss, term = _step(tail, backbone, pairs, coarse.random_boxes(rng, train.boxes_per_batch),
                               config, optimizer, scheduler, device, content)
            step += 1
            record = {"step": step, "loss": loss, "lr": scheduler.get_last_lr()[0]}
            if content is not None:
                record["content"] = term
            if step % train.validate_every == 0 or step == train.max_steps:
                scores = validate(tail, backbone, validation, validation_boxes, config)
                record.update({f"val_{name}": value for name, value in scores.items()})
            if step % train.log_every == 0 or "val_loss" in record:
                log.write(json.dumps(record) + "\n")
                log.flush()
                if progress:
                    progress(step, record)
    if "loss" not in scores or step % train.validate_every:
        scores = validate(tail, backbone, validation, validation_boxes, config)
    for group, calibration in enumerate(tail.calibration_sets(validation)):
        tail.spread[group] = _fit_spread(tail, backbone, calibration, validation_boxes, pairs.targets)
    meta = {"name": spec.name, "spec": spec.model_dump(mode="json"), "setup": setup, "sizes": sizes,
            "backbone": backbone.identity(), "periods": config.periods.model_dump(mode="json"),
            "step": step, "validation": scores, "spread": tail.spread.tolist(),
            "backbone_lr_ratio": train.backbone_lr_ratio, "losses": dict(train.losses),
            "content_loss": content.describe() if content is not None else None}
    checkpoint = write_tail(run_dir / TAIL_DIR, tail, meta, backbone if trained_backbone else None)
    return FinetuneResult(checkpoint, step, time.monotonic() - started, scores)


def _optimiser(tail: Tail, backbone: Backbone, config: FinetuneConfig, device: torch.device):
    optim = config.train.optim
    groups = parameter_groups(tail, optim.weight_decay)
    if config.train.backbone_lr_ratio > 0:
        for group in parameter_groups(backbone.model, optim.weight_decay):
            groups.append({**group, "lr": optim.lr * config.train.backbone_lr_ratio})
    optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas)
    return optimizer, build_scheduler(optimizer, optim, config.train.max_steps)


def features_of(backbone: Backbone, coarse: CoarsePeriod, boxes: list[BoxAt]) -> torch.Tensor:
    """The backbone's features ``[B, nT, nH, nW, C]`` of the boxes (gradients only when it trains)."""
    values, metadata = coarse.backbone_input(boxes)
    with torch.set_grad_enabled(backbone.model.training and torch.is_grad_enabled()):
        return backbone.features(values, metadata)


def _step(tail: Tail, backbone: Backbone, pairs: Pairs, boxes: list[BoxAt], config: FinetuneConfig,
          optimizer: torch.optim.Optimizer, scheduler, device: torch.device,
          content: ContentTerm | None = None) -> tuple[float, float]:
    """One optimiser step; the loss and the content loss's distance (NaN without one)."""
    tail.train()
    batch = pairs.batch(boxes).to(device)
    optimizer.zero_grad(set_to_none=True)
    if batch.guess.shape[0] == 0:  # boxes without a valid observation: nothing to learn from
        scheduler.step()
        return float("nan"), float("nan")
    residual = tail.residuals(features_of(backbone, pairs.coarse, boxes), batch)
    loss = tail_loss(residual, batch, config.train.losses)
    term = torch.full((), float("nan"))
    if content is not None:
        term = content(residual, batch, len(boxes))
        loss = loss + content.weight * term
    if not torch.isfinite(loss):
        raise TrainingError(f"the tail's loss is {loss.item()} at step {scheduler.last_epoch + 1}; the "
                            "checkpoint was not written")
    loss.backward()
    if config.train.optim.grad_clip:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, config.train.optim.grad_clip)
    optimizer.step()
    scheduler.step()
    return float(loss.detach()), float(term.detach())


def _chunks(boxes: list[BoxAt], size: int = 8) -> list[list[BoxAt]]:
    return [boxes[i:i + size] for i in range(0, len(boxes), size)]


@torch.no_grad()
def _residuals(tail: Tail, backbone: Backbone, pairs: Pairs, boxes: list[BoxAt]
               ) -> tuple[list[torch.Tensor], list[TailBatch]]:
    residuals, batches = [], []
    training = backbone.model.training
    backbone.model.eval()
    for chunk in _chunks(boxes):
        batch = pairs.batch(chunk).to(backbone.device)
        if batch.guess.shape[0]:
            residuals.append(tail.residuals(features_of(backbone, pairs.coarse, chunk), batch))
            batches.append(batch)
    backbone.model.train(training)
    return residuals, batches


def validate(tail: Tail, backbone: Backbone, pairs: Pairs, boxes: list[BoxAt],
             config: FinetuneConfig) -> dict:
    """Loss, and per target the RMSE of the ensemble mean and of the first guess (physical units)."""
    residuals, batches = _residuals(tail, backbone, pairs, boxes)
    if not batches:
        return {}
    losses = [float(tail_loss(r, b, config.train.losses)) for r, b in zip(residuals, batches, strict=True)]
    loss = np.mean(losses)
    scores = {"loss": float(loss)}
    std = np.asarray(pairs.std)
    for k, target in enumerate(config.tail.fields):
        model, guess, count = 0.0, 0.0, 0
        for residual, batch in zip(residuals, batches, strict=True):
            chosen = batch.target == k
            mean = batch.guess + batch.scale * residual.mean(dim=1)
            model += float(((mean - batch.truth)[chosen] ** 2).sum())
            guess += float(((batch.guess - batch.truth)[chosen] ** 2).sum())
            count += int(chosen.sum())
        scores[f"rmse_{target.label}"] = float(np.sqrt(model / max(count, 1)) * std[k])
        scores[f"rmse_guess_{target.label}"] = float(np.sqrt(guess / max(count, 1)) * std[k])
    return scores


def _fit_spread(tail: Tail, backbone: Backbone, pairs: Pairs, boxes: list[BoxAt],
                targets: int) -> torch.Tensor:
    residuals, batches = _residuals(tail, backbone, pairs, boxes)
    if not batches:
        return torch.ones(targets)
    return spread_factors(residuals, batches, targets).to(tail.spread.device)
