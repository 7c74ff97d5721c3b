"""The training loop: :func:`train` runs a :class:`~atmorep.config.RunConfig` on one CPU, one GPU or many.

One optimiser step draws ``optim.accumulate`` batches from this rank's stream, runs
:func:`~atmorep.train.step.train_step` on each (masks seeded by ``(seed, rank, step, micro-batch)``),
back-propagates the mean loss (gradients all-reduced on the last micro-batch only), clips the
gradient norm, and steps AdamW and the learning-rate schedule. Then, on their intervals: a
``"train"`` metrics record (``log_every``), validation on the validation stores with fixed masks
(``validate_every``), and a checkpoint (``checkpoint_every``, and at the end). When the run ends
by ``max_steps`` or ``max_minutes``, the ensemble's spread is calibrated on the validation batches
after the last validation and before the last checkpoint (``train.calibrate_spread``,
:mod:`atmorep.train.calibration`). Training and validation score the raw ensemble: a resumed run
resets the factors to one, and its end fits them again.

Stopping: after ``max_steps``; or, cleanly with a checkpoint, when ``max_minutes`` of wall-clock
time have passed or the process receives SIGTERM (as SLURM sends before a time limit). A loss or
gradient norm that is NaN or infinite stops the run with a :class:`TrainingError` naming the step,
before the optimiser touches the weights; the last checkpoint stays as it was.

Exact resumption (``resume=True``) restores weights, optimiser, schedule, loss scaler, every
rank's random generators, the sampler position and the step from ``run_dir/checkpoint``; the data
stream continues from the sampler position and the masks depend only on the step, so on the CPU
the losses after resuming are bit-identical to those of an uninterrupted run.

Only rank 0 writes files: ``config.yaml`` (the resolved configuration) at the start,
``metrics.jsonl``, ``tensorboard/``, ``checkpoint/``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from atmorep.checkpoint import (
    CHECKPOINT_DIR,
    CheckpointError,
    find_checkpoint,
    freeze_fields,
    load_fields,
    resolve_checkpoint,
)
from atmorep.config import ConfigError, RunConfig, save_config
from atmorep.data.dataset import BoxDataset, SamplerState, make_loader
from atmorep.data.statistics import Statistics
from atmorep.errors import AtmorepError
from atmorep.model.multiformer import build_model
from atmorep.runtime import (
    Runtime,
    derive_seed,
    destroy_distributed,
    init_distributed,
    make_runtime,
    seed_everything,
    set_rng_state,
)
from atmorep.train import distributed
from atmorep.train.calibration import calibration_tasks, fit_spread, reset_spread
from atmorep.train.checks import check_train_config, with_levels
from atmorep.train.optimizer import build_optimizer
from atmorep.train.residual_scales import fill_unestimated, initialise_scales
from atmorep.train.rollout import rollout_box
from atmorep.train.schedule import build_scheduler
from atmorep.train.state import DataDescription, TrainingParts, TrainingState, restore_state, save_state
from atmorep.train.step import masking_generator, train_step
from atmorep.train.telemetry import MetricsLogger, ProgressBar, Throughput, flops_per_sample, peak_flops
from atmorep.train.validation import Validator

logger = logging.getLogger(__name__)

RNG_STREAM = 0x726E67  # key of the per-rank global generator seeds among the streams of train.seed


class TrainingError(AtmorepError, RuntimeError):
    """Training cannot go on (a non-finite loss, an unusable run directory)."""


@dataclass(frozen=True)
class TrainResult:
    """The outcome of :func:`train`.

    Attributes:
        run_dir: the run directory.
        step: the optimiser steps completed in all (including those before a resume).
        losses: the loss of every optimiser step of this call (the mean over ranks).
        stop_reason: ``"max_steps"``, ``"max_minutes"`` or ``"signal"``.
        checkpoint: the last checkpoint written or resumed from.
        validation: the last validation metrics, if any.
    """

    run_dir: Path
    step: int
    losses: list[float]
    stop_reason: str
    checkpoint: Path | None
    validation: dict[str, float] | None


def train(config: RunConfig, resume: bool = False) -> TrainResult:
    """Train the model of ``config``; with ``resume``, continue exactly from ``run_dir/checkpoint``."""
    check_train_config(config)
    runtime = make_runtime(config.train.device, config.train.precision)
    owns_group = init_distributed(runtime)
    try:
        with stop_requests() as stop:
            return Trainer(config, runtime, stop).run(resume)
    finally:
        if owns_group:
            destroy_distributed()


@contextlib.contextmanager
def stop_requests() -> Iterator[dict[str, bool]]:
    """A flag set by SIGTERM (in the main thread), so the loop can stop with a checkpoint."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def request_stop(signum, frame) -> None:
        logger.warning("received signal %d: stopping after this step with a checkpoint", signum)
        flag["stop"] = True

    previous = signal.signal(signal.SIGTERM, request_stop)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


class Trainer:
    """The state of a training run and its loop (built by :func:`train`)."""

    def __init__(self, config: RunConfig, runtime: Runtime, stop: dict[str, bool]):
        self.runtime, self.stop = runtime, stop
        self.run_dir = Path(config.train.run_dir)
        paths, field_paths = config.data.stores("train")
        sampled = config.data.model_copy(update={"box": rollout_box(config)})  # longer boxes for a rollout
        self.dataset = BoxDataset(paths, config.fields, sampled, seed=config.train.seed,
                                  rank=runtime.env.rank, field_paths=field_paths,
                                  guide_paths=config.data.guide_stores("train"))
        self.config = with_levels(config, self.dataset.levels)
        self.data = _describe_data(self.dataset, config)
        seed_everything(config.train.seed)  # identical initial weights on every rank
        model = build_model(self.config, runtime.device)
        initialise_scales(model, self.config, self.data.statistics)  # a resumed run loads its own
        self._initialise_from(model, config)
        freeze_fields(model, config.train.freeze)
        wrapped = distributed.wrap_model(model, runtime, config.train.distributed, config.train.compile)
        optim = config.train.optim
        optimizer = build_optimizer(model, optim, runtime.device)  # after sharding: FSDP replaces parameters
        scheduler = build_scheduler(optimizer, optim, config.train.max_steps)
        scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.needs_loss_scaling)
        self.parts = TrainingParts(model=wrapped, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
        self.state = TrainingState()
        self.validator = Validator(self.config, runtime, self.data.statistics)
        self.samples_per_step = config.data.batch_size * optim.accumulate * runtime.env.world_size
        self.flops = flops_per_sample(model, self.config, self.dataset.levels)
        self.metrics: MetricsLogger | None = None
        logger.info("%s; %d parameters; %d samples per step", runtime.describe(),
                    sum(p.numel() for p in model.parameters()), self.samples_per_step)

    def _initialise_from(self, model: torch.nn.Module, config: RunConfig) -> None:
        """Start from the fields of ``train.init`` (not when resuming: the run's own checkpoint wins)."""
        if config.train.init is None or find_checkpoint(self.run_dir) is not None:
            return
        guessing = config.model.first_guess
        estimated = {name: model.tails[name].scale.clone() for name in model.predicted} if guessing else {}
        fresh = load_fields(model, resolve_checkpoint(config.train.init), config.train.init_fields)
        if guessing:  # spread factors fitted elsewhere: train and validate the raw ensemble
            reset_spread(model)
            for name, kinds in fill_unestimated(model, estimated).items():
                logger.info("field '%s': first-guess scales of %s estimated by this run (not in '%s')", name,
                            kinds, config.train.init)
        for name, missing in fresh.items():
            if missing and name in config.train.freeze:
                raise ConfigError(f"train.freeze: field '{name}' has weights that '{config.train.init}' does "
                                  f"not hold and that would stay random ({missing[:3]}...); do not freeze it")
            if missing:
                logger.warning("field '%s': %d weights not in '%s' start fresh (e.g. %s)", name,
                               len(missing), config.train.init, missing[0])

    # -------------------------------------------------------------------------------- the run

    def run(self, resume: bool) -> TrainResult:
        """Set up (fresh or resumed), loop until a stop condition, write the final checkpoint."""
        generators = self._start(resume)
        # creating the iterator draws a seed from torch's generator: restore the generators after it
        batches = iter(make_loader(self.dataset, self.config.data.num_workers))
        if generators is not None:
            set_rng_state(generators)
        else:
            seed_everything(derive_seed(self.config.train.seed, RNG_STREAM, self.runtime.env.rank))
        is_main = self.runtime.env.is_main
        self.metrics = MetricsLogger(self.run_dir, is_main, self.state.history, self.state.step)
        progress = ProgressBar(self.config.train.max_steps, self.state.step, is_main)
        try:
            losses, reason = self._loop(batches, progress)
        finally:
            progress.close()
            self.metrics.close()
        return TrainResult(self.run_dir, self.state.step, losses, reason, self.state.checkpoint,
                           self.state.validation)

    def _start(self, resume: bool) -> dict | None:
        """Restore a checkpoint (returning this rank's generator states) or start fresh."""
        found = find_checkpoint(self.run_dir)
        if resume and found is None:
            raise CheckpointError(f"no checkpoint to resume from in '{self.run_dir / CHECKPOINT_DIR}'")
        if not resume and found is not None:
            raise TrainingError(f"run directory '{self.run_dir}' already holds a checkpoint; resume it with "
                                f"--resume, or choose another train.run_dir")
        if self.runtime.env.is_main:
            save_config(self.config, self.run_dir / "config.yaml")
        if not resume:
            return None
        self.state, generators = restore_state(found, self.parts, self.config, self.runtime)
        if self.config.model.first_guess:  # factors fitted to older weights: back to the raw ensemble
            reset_spread(self.parts.model.module)
        self.dataset.state = SamplerState(**self.state.sampler.to_dict())
        logger.info("resumed from '%s' at step %d", found, self.state.step)
        return generators

    def _loop(self, batches: Iterator, progress: ProgressBar) -> tuple[list[float], str]:
        train = self.config.train
        losses: list[float] = []
        pending: list[float] = []  # losses since the last train record
        throughput, started = Throughput(), time.monotonic()
        self.parts.model.module.train()
        while self.state.step < train.max_steps:
            loss, grad_norm, lr, tokens = self._optimizer_step(batches)
            self.state.step += 1
            step = self.state.step
            losses.append(loss)
            pending.append(loss)
            throughput.add(self.samples_per_step, tokens)
            if step % train.log_every == 0 or step == train.max_steps:
                self._log(progress, pending, grad_norm, lr, throughput)
                pending = []
            progress.update(step)
            reason = self._stop_reason(started) or ("max_steps" if step == train.max_steps else "")
            if step % train.validate_every == 0 or reason in ("max_steps", "max_minutes"):
                self._validate()
            if reason in ("max_steps", "max_minutes"):
                self._calibrate()
            if reason or step % train.checkpoint_every == 0:
                self._checkpoint()
            if reason:
                return losses, reason
        return losses, "max_steps"

    # ------------------------------------------------------------------------------- one step

    def _optimizer_step(self, batches: Iterator) -> tuple[float, float, float, int]:
        """Accumulate gradients over micro-batches and step.

        Returns:
            The loss (mean over micro-batches and ranks), the gradient norm before clipping, the
            learning rate of the step and the number of tokens processed on all ranks.
        """
        model, optimizer, scaler = self.parts.model, self.parts.optimizer, self.parts.scaler
        seed, rank = self.config.train.seed, self.runtime.env.rank
        accumulate = self.config.train.optim.accumulate
        total, tokens = torch.zeros((), device=self.runtime.device), 0
        for micro in range(accumulate):
            batch = next(batches)
            self.state.sampler.advance(1, self.config.data.batches_per_epoch)
            generator = masking_generator(seed, rank, self.state.step, micro, self.runtime.device)
            with model.gradient_sync(micro == accumulate - 1):
                result = train_step(model.forward, batch, self.config, generator, self.runtime)
                scaler.scale(result.loss / accumulate).backward()
            total = total + result.loss.detach() / accumulate
            tokens += result.tokens * self.runtime.env.world_size
        scaler.unscale_(optimizer)
        clip = self.config.train.optim.grad_clip or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(model.module.parameters(), clip)
        values = distributed.all_reduce_mean(torch.stack([total.float(), _local(grad_norm).float()]))
        loss, norm = values.tolist()  # one synchronisation per step
        self._check_finite(loss, norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        lr = optimizer.param_groups[0]["lr"]
        self.parts.scheduler.step()
        return loss, norm, lr, tokens

    def _check_finite(self, loss: float, grad_norm: float) -> None:
        step = self.state.step + 1
        last = (f"the last checkpoint '{self.state.checkpoint}' (step {self.state.checkpoint_step}) is intact"
                if self.state.checkpoint else "no checkpoint was written")
        if not math.isfinite(loss):
            raise TrainingError(f"step {step}: the loss is {loss}; training stopped before updating the "
                                f"weights, {last} (lower train.optim.lr or check the data)")
        if not math.isfinite(grad_norm) and not self.parts.scaler.is_enabled():
            raise TrainingError(f"step {step}: the gradient norm is {grad_norm}; training stopped before "
                                f"updating the weights, {last} (lower train.optim.lr)")

    # ------------------------------------------------------------------ logging, checkpoints

    def _log(self, progress: ProgressBar, losses: list[float], grad_norm: float, lr: float,
             throughput: Throughput) -> None:
        rates = throughput.report()
        record = {"kind": "train", "step": self.state.step, "loss": sum(losses) / len(losses),
                  "lr": lr, "grad_norm": grad_norm,
                  "epoch": self.state.sampler.epoch, **rates}
        peak = peak_flops(self.runtime.device)
        if peak:
            record["mfu"] = self.flops * rates["samples_per_s"] / self.runtime.env.world_size / peak
        self.metrics.log(record)
        progress.update(self.state.step, loss=record["loss"], samples=rates["samples_per_s"],
                        tokens=rates["tokens_per_s"])
        if self.runtime.env.is_main and not progress.live:
            logger.info("step %d/%d: loss %.4f, lr %.3g, %.1f samples/s, %.3g tokens/s", self.state.step,
                        self.config.train.max_steps, record["loss"], record["lr"], rates["samples_per_s"],
                        rates["tokens_per_s"])

    def _calibrate(self) -> None:
        """Fit the spread factors on the validation batches (first-guess models with validation stores)."""
        module = self.parts.model.module
        if not (self.config.train.calibrate_spread and self.config.model.first_guess):
            return
        if self.validator.dataset is None:
            logger.info("no validation stores: the ensemble's spread is left uncalibrated")
            return
        fit_spread(module, self.parts.model.forward, self.validator.batches(), self.config, self.runtime,
                   calibration_tasks(self.config))

    def _validate(self) -> None:
        result = self.validator.run(self.parts.model)
        if result is None:
            return
        self.state.validation = result
        self.metrics.log({"kind": "validation", "step": self.state.step, **result})
        logger.info("step %d: validation loss %.4f", self.state.step, result["loss"])

    def _checkpoint(self) -> None:
        self.state.history = list(self.metrics.history)
        directory = self.run_dir / CHECKPOINT_DIR
        save_state(directory, self.parts, self.state, self.config, self.data, self.runtime)

    def _stop_reason(self, started: float) -> str:
        """``"max_minutes"`` or ``"signal"`` when any rank wants to stop, else ``""``."""
        limit = self.config.train.max_minutes
        late = limit is not None and time.monotonic() - started >= 60.0 * limit
        late, signalled = distributed.any_rank([late, self.stop["stop"]], self.runtime.device)
        return "max_minutes" if late else "signal" if signalled else ""


def _describe_data(dataset: BoxDataset, config: RunConfig) -> DataDescription:
    store = dataset.stores[0]
    statistics = Statistics({f.name: dataset.statistics[f.name] for f in config.fields})
    return DataDescription(levels=dict(dataset.levels), level_kind=store.level_kind.value,
                           resolution=store.resolution, statistics=statistics,
                           stores=tuple(config.data.train))


def _local(value: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a (possibly distributed) one (gradient norms under FSDP are DTensors)."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value

