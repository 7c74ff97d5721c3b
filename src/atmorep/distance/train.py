"""Training the lag classifier whose encoder defines the distance (``atmorep distance train``).

Each step draws ``batch_size`` random pairs of the training store (:class:`PairSampler`), classifies
their lag with cross-entropy and steps AdamW; the learning rate warms up linearly, then decays along a
cosine to ``min_lr_ratio`` times its peak over the run's length, measured by steps or, when
``max_minutes`` is set and nearer, by wall-clock time. Every ``validate_every`` steps the accuracy and
loss on the enumerated validation pairs are logged. The run directory holds ``distance.yaml`` (the
resolved configuration), ``metrics.jsonl`` (one record per logged step) and ``model/``, the distance
model (:mod:`atmorep.distance.saved`), written every ``checkpoint_every`` steps and at the end.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from atmorep.distance.config import DistanceConfig
from atmorep.distance.network import LagClassifier, log_normalise
from atmorep.distance.pairs import Pairs, PairSampler, PatchSource, evaluation_pairs
from atmorep.distance.saved import MODEL_DIR, write_distance
from atmorep.errors import DataError
from atmorep.io import atomic_write_text
from atmorep.runtime import derive_seed, make_runtime

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    model: Path
    steps: int
    seconds: float
    validation: dict[str, float]


def normalisation(source: PatchSource, log_scale: float) -> dict:
    """Mean and log scale of each channel from a store's statistics (``scale = log_scale * std``)."""
    channels = []
    statistics = source.store.statistics
    for channel in source.spec.channels:
        level = 0.0 if source.store.is_surface(channel.field) else channel.level
        mean, std = statistics[channel.field].select((level,), channel.field)
        channels.append({"field": channel.field, "level": channel.level, "mean": float(mean[0]),
                         "scale": float(log_scale * std[0]), "units": _units(source, channel.field)})
    return {"channels": channels, "source": source.path}


def _units(source: PatchSource, field: str) -> str:
    return str(source.store.arrays[field].attrs.get("units", ""))


class PairTensors:
    """Pairs turned into normalised tensors on a device."""

    def __init__(self, norm: dict, device: torch.device):
        self.device = device
        self.mean = torch.tensor([c["mean"] for c in norm["channels"]], dtype=torch.float32, device=device)
        self.scale = torch.tensor([c["scale"] for c in norm["channels"]], dtype=torch.float32, device=device)

    def __call__(self, source: PatchSource, pairs: Pairs, second: PatchSource | None = None):
        """``(first, second, labels)``: normalised ``[N, C, H, W]`` twice and lag classes 0..K-1 ``[N]``."""
        a, b = source.patches(pairs, second)
        a, b = (log_normalise(torch.from_numpy(x).to(self.device), self.mean, self.scale) for x in (a, b))
        return a, b, torch.from_numpy(pairs.lag - 1).to(self.device)


def learning_rate_factor(step: int, progress: float, warmup: int, floor: float) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine from 1 to ``floor`` as ``progress`` goes 0..1."""
    if step < warmup:
        return (step + 1) / warmup
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def validate(classifier: LagClassifier, tensors: PairTensors, source: PatchSource, pairs: Pairs,
             batch: int = 1024) -> dict[str, float]:
    """Accuracy, top-3 accuracy and mean cross-entropy of the classifier on ``pairs``."""
    classifier.eval()
    correct = top3 = loss = 0.0
    with torch.no_grad():
        for start in range(0, len(pairs), batch):
            a, b, labels = tensors(source, pairs.take(slice(start, start + batch)))
            logits = classifier(a, b)
            loss += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            correct += float((logits.argmax(1) == labels).sum())
            top3 += float((logits.topk(3, dim=1).indices == labels[:, None]).any(1).sum())
    classifier.train()
    count = len(pairs)
    return {"accuracy": correct / count, "top3": top3 / count, "loss": loss / count}


def train_distance(config: DistanceConfig,
                   progress: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train the lag classifier of ``config`` and write its distance model to ``run_dir/model``.

    Args:
        config: the resolved configuration.
        progress: called with ``(step, record)`` for every logged record.
    """
    spec = config.train
    if spec.threads:
        torch.set_num_threads(spec.threads)
    device = make_runtime(spec.device, "float32").device
    train_source = PatchSource(config.data.train, config.pairs)
    validation_source = PatchSource(config.data.validation, config.pairs)
    norm = normalisation(train_source, config.log_scale)
    tensors = PairTensors(norm, device)
    torch.manual_seed(spec.seed)
    classifier = LagClassifier(len(config.pairs.channels), config.pairs.lags, config.network).to(device)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    sampler = PairSampler(train_source, derive_seed(spec.seed, 1))
    validation_pairs = evaluation_pairs(validation_source, spec.validation)
    calibration = _calibration(validation_source, spec.calibration_pairs, derive_seed(spec.seed, 2))
    run_dir = Path(spec.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = config.model_dump(mode="json")
    atomic_write_text(run_dir / "distance.yaml", yaml.safe_dump(resolved, sort_keys=False))
    logger.info("training the lag classifier (%d parameters) on %s, validating on %d pairs of %s",
                _parameters(classifier), train_source.path, len(validation_pairs), validation_source.path)

    def save(step: int, scores: dict, seconds: float) -> Path:
        meta = {"step": step, "seconds": round(seconds, 1), "validation": scores,
                **_describe(config, classifier)}
        return write_distance(run_dir / MODEL_DIR, classifier, resolved, norm, calibration, meta)

    budget = 60 * spec.max_minutes if spec.max_minutes else math.inf  # seconds
    started, step, scores = time.monotonic(), 0, {}
    with (run_dir / "metrics.jsonl").open("w") as log:
        while step < spec.max_steps:
            elapsed = time.monotonic() - started
            if elapsed > budget:
                break
            fraction = max(step / spec.max_steps, elapsed / budget)
            factor = learning_rate_factor(step, fraction, spec.warmup_steps, spec.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = spec.lr * factor
            batch = tensors(train_source, sampler.draw(spec.batch_size))
            loss, accuracy = _step(classifier, optimizer, batch, spec.grad_clip)
            step += 1
            record = {"step": step, "loss": loss, "accuracy": accuracy, "lr": spec.lr * factor,
                      "seconds": round(time.monotonic() - started, 1)}
            if step % spec.validate_every == 0:
                scores = validate(classifier, tensors, validation_source, validation_pairs)
                record.update({f"val_{name}": value for name, value in scores.items()})
            if step % spec.log_every == 0 or "val_loss" in record:
                log.write(json.dumps(record) + "\n")
                log.flush()
                if progress:
                    progress(step, record)
            if step % spec.checkpoint_every == 0:
                save(step, scores, time.monotonic() - started)
        if step % spec.validate_every or not scores:
            scores = validate(classifier, tensors, validation_source, validation_pairs)
            record = {"step": step, **{f"val_{name}": value for name, value in scores.items()},
                      "seconds": round(time.monotonic() - started, 1)}
            log.write(json.dumps(record) + "\n")
            if progress:
                progress(step, record)
    seconds = time.monotonic() - started
    return TrainResult(save(step, scores, seconds), step, seconds, scores)


def _step(classifier: LagClassifier, optimizer: torch.optim.Optimizer, batch, grad_clip: float
          ) -> tuple[float, float]:
    first, second, labels = batch
    logits = classifier(first, second)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(classifier.parameters(), grad_clip)
    optimizer.step()
    if not torch.isfinite(loss):
        raise DataError(f"the training loss became {float(loss)}; check the stores for non-finite values or "
                        "lower train.lr")
    return float(loss.detach()), float((logits.argmax(1) == labels).float().mean())


def _calibration(source: PatchSource, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random lag-1 pairs of ``source`` ``[N, C, H, W]`` (physical), the distance's unit."""
    first, second = source.patches(PairSampler(source, seed).draw(count, lag=1))
    return torch.from_numpy(first), torch.from_numpy(second)


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _describe(config: DistanceConfig, classifier: LagClassifier) -> dict:
    pairs = config.pairs
    return {"channels": [c.label for c in pairs.channels], "lags": pairs.lags, "step_hours": pairs.step_hours,
            "patch": list(pairs.patch), "max_latitude": pairs.max_latitude,
            "network": config.network.model_dump(mode="json"), "parameters": _parameters(classifier),
            "features": config.network.features, "reduction": config.network.reduction,
            "train_store": config.data.train.path, "torch_version": torch.__version__}
