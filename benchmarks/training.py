"""Training throughput of a preset on the available device: samples/s, tokens/s, peak memory.

Runs forward, backward and an AdamW step on random normalised batches with the box, fields and
levels of a config (default: the packaged ``tiny`` config), the masking-task mixture drawn as in
training. Prints a table.

    python benchmarks/training.py [--config PATH] [--steps N] [key=value ...]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

import atmorep
from atmorep.batch import Batch, BatchMetadata
from atmorep.config import load_config
from atmorep.model.multiformer import build_model
from atmorep.runtime import make_runtime
from atmorep.train.optimizer import build_optimizer
from atmorep.train.step import train_step

TINY = Path(atmorep.__file__).parent / "configs" / "tiny.yaml"


def random_batch(config, batch_size: int, generator: torch.Generator) -> Batch:
    t, h, w = config.data.box.shape
    levels = {f.name: tuple(f.levels or (0.0,)) for f in config.fields}
    fields = {n: torch.randn(batch_size, len(lv), t, h, w, generator=generator) for n, lv in levels.items()}
    start = torch.arange(batch_size, dtype=torch.int64)[:, None] * 86400 + 946684800
    meta = BatchMetadata(
        time=start + 3600 * torch.arange(t),
        latitude=torch.linspace(-30, 30, h).repeat(batch_size, 1).double(),
        longitude=torch.linspace(0, 120, w).repeat(batch_size, 1).double(),
        levels=levels,
        resolution=3.75,
    )
    return Batch(fields, meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(TINY))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    runtime = make_runtime(config.train.device, config.train.precision)
    model = build_model(config, runtime.device)
    optimizer = build_optimizer(model, config.train.optim, runtime.device)
    generator = torch.Generator().manual_seed(0)
    batch = random_batch(config, config.data.batch_size, generator).to(runtime.device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times, tokens = [], 0
    for step in range(args.steps + 2):
        start = time.perf_counter()
        result = train_step(model, batch, config, generator, runtime)
        result.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:  # two warm-up steps
            times.append(time.perf_counter() - start)
            tokens += result.tokens
    elapsed = sum(times)
    table = Table(
        title=f"training throughput: {Path(args.config).name} on {runtime.device} ({runtime.dtype}), "
        f"{torch.get_num_threads()} threads"
    )
    for column in ("parameters", "batch", "tokens/sample", "s/step", "samples/s", "tokens/s", "peak RSS MB"):
        table.add_column(column, justify="right")
    params = sum(p.numel() for p in model.parameters())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table.add_row(
        f"{params / 1e6:.2f} M",
        str(config.data.batch_size),
        str(tokens // (args.steps * config.data.batch_size)),
        f"{elapsed / args.steps:.3f}",
        f"{args.steps * config.data.batch_size / elapsed:.1f}",
        f"{tokens / elapsed:,.0f}",
        f"{peak:.0f} (+{peak - rss_before:.0f})",
    )
    Console().print(table)


if __name__ == "__main__":
    main()
