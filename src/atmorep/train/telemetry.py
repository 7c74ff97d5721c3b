"""Reporting of a training run: metrics files, TensorBoard, MLflow, a progress bar, throughput.

Every record is a flat dict with ``"kind"`` (``"train"`` or ``"validation"``), ``"step"`` and
numbers. On the writing rank (rank 0) a record is appended as one JSON line to
``run_dir/metrics.jsonl``, written as scalars ``"<kind>/<key>"`` to TensorBoard under
``run_dir/tensorboard``, and, only if the ``mlflow`` package is importable, logged to an MLflow
file store under ``run_dir/mlruns``. The records so far are also kept in memory and saved with
every checkpoint, so a resumed run rewrites ``metrics.jsonl`` up to its checkpoint and continues
it without duplicated or orphaned steps.

Model FLOP utilisation (MFU, CUDA only) is an estimate: a transformer spends about 6 FLOPs per
parameter and token in a training step (2 forward, 4 backward). Each field's own parameters
(embedding, encoder blocks, decoder, tail) see that field's ``N_f = L nT nH nW`` tokens and the
remaining parameters see all tokens, so one sample costs ``6 sum_f P_f N_f`` FLOPs (attention's
``N^2`` term is left out; the tail, which only sees target tokens, is over-counted). MFU divides
the achieved FLOP rate per GPU by the GPU's peak dense bfloat16 rate (:data:`PEAK_BF16_FLOPS`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from rich.console import Console

from atmorep.config import RunConfig
from atmorep.io import atomic_write_text
from atmorep.model.multiformer import MultiFormer
from atmorep.numerics.tokens import tokens_per_field
from atmorep.progress import ProgressBar as Bar

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
# Peak dense (no sparsity) bfloat16 tensor-core FLOP/s per GPU, by a substring of the device name;
# the more specific names come first.
PEAK_BF16_FLOPS: dict[str, float] = {
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,  # SXM
    "A100": 312e12,
}


def peak_flops(device: torch.device) -> float | None:
    """The peak bfloat16 FLOP/s of a CUDA device listed in :data:`PEAK_BF16_FLOPS`, else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((value for key, value in PEAK_BF16_FLOPS.items() if key in name), None)


def flops_per_sample(model: MultiFormer, config: RunConfig, levels: Mapping[str, tuple[float, ...]]) -> float:
    """Estimated training FLOPs of one sample, ``6 sum_f P_f N_f`` (see the module docstring)."""
    tokens = {f.name: tokens_per_field(config.data.box.shape, f.token_size, len(levels[f.name]))
              for f in config.fields}
    own = {name: sum(p.numel() for p in model.fields[name].parameters()) for name in tokens}
    shared = sum(p.numel() for p in model.parameters()) - sum(own.values())
    return 6.0 * (sum(own[name] * n for name, n in tokens.items()) + shared * sum(tokens.values()))


class Throughput:
    """Samples and tokens per second between two reports."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.samples = 0
        self.tokens = 0

    def add(self, samples: int, tokens: int) -> None:
        self.samples += samples
        self.tokens += tokens

    def report(self) -> dict[str, float]:
        """``samples_per_s`` and ``tokens_per_s`` since the last report, then restart counting."""
        now = time.perf_counter()
        elapsed = max(now - self.start, 1e-9)
        rates = {"samples_per_s": self.samples / elapsed, "tokens_per_s": self.tokens / elapsed}
        self.start, self.samples, self.tokens = now, 0, 0
        return rates


class MetricsLogger:
    """Writes records to ``metrics.jsonl``, TensorBoard and (if installed) MLflow on the writing rank.

    Args:
        run_dir: the run directory.
        enabled: whether this rank writes.
        history: the records of the run so far (from a checkpoint), rewritten to ``metrics.jsonl``.
        start_step: the step the run continues from (TensorBoard events after it are purged).
    """

    def __init__(self, run_dir: Path, enabled: bool, history: list[dict] | None = None, start_step: int = 0):
        self.path = Path(run_dir) / METRICS_FILE
        self.enabled = enabled
        self.history: list[dict] = list(history or [])
        self._tensorboard = self._mlflow = None
        if not enabled:
            return
        atomic_write_text(self.path, "".join(json.dumps(record) + "\n" for record in self.history))
        from torch.utils.tensorboard import SummaryWriter

        self._tensorboard = SummaryWriter(str(Path(run_dir) / "tensorboard"),
                                          purge_step=start_step + 1 if start_step else None)
        self._mlflow = _start_mlflow(Path(run_dir))

    def log(self, record: dict) -> None:
        """Keep a record and write it (kind and step are required)."""
        self.history.append(record)
        if not self.enabled:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        numbers = {key: value for key, value in record.items()
                   if key not in ("kind", "step") and isinstance(value, int | float) and math.isfinite(value)}
        for key, value in numbers.items():
            self._tensorboard.add_scalar(f"{record['kind']}/{key}", value, record["step"])
        if self._mlflow is not None:
            try:
                self._mlflow.log_metrics({f"{record['kind']}/{k}": v for k, v in numbers.items()},
                                         step=record["step"])
            except Exception as error:  # tracking must never stop training
                logger.warning("mlflow logging failed (%s); continuing without it", error)
                self._mlflow = None

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._mlflow is not None:
            self._mlflow.end_run()


def _start_mlflow(run_dir: Path):
    """An active MLflow run in the file store ``run_dir/mlruns``, or None if mlflow is not installed."""
    if importlib.util.find_spec("mlflow") is None:
        return None
    try:
        import mlflow

        mlflow.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())
        mlflow.start_run(run_name=run_dir.name)
        return mlflow
    except Exception as error:  # tracking must never stop training
        logger.warning("mlflow is installed but could not start (%s); not using it", error)
        return None


class ProgressBar:
    """A rich progress bar on stderr with the loss, samples/s and tokens/s (on the writing rank only).

    ``live`` tells whether it is shown as it goes (a terminal); in batch jobs it is drawn once at
    the end, and the loop logs a line per train record instead.
    """

    def __init__(self, total: int, start: int, enabled: bool):
        console = Console(stderr=True)
        self.live = enabled and console.is_terminal  # else the caller logs progress as text lines
        self._bar = Bar("train", total, start, console=console, show=enabled,
                        numbers="loss {task.fields[loss]:.4f}  {task.fields[samples]:.1f} samples/s  "
                                "{task.fields[tokens]:.3g} tokens/s", loss=math.nan, samples=0.0, tokens=0.0)
        self._bar.update(start)

    def update(self, step: int, **fields: float) -> None:
        """Move to ``step``; keyword ``loss``, ``samples`` and ``tokens`` (per second) update the numbers."""
        self._bar.update(step, **fields)

    def close(self) -> None:
        self._bar.close()
