"""Inference benchmark: global forecasts of the tiny model on the default-corpus grid.

Usage::

    python benchmarks/inference.py [--device auto|cpu|cuda] [--repeats R] [--cases I] [--quick] [k=v ...]

Builds, in a temporary directory, a synthetic prepared store on the grid of the default corpus (T31
Gaussian latitudes, 48 x 96 points, latitudes -87.2 .. 87.2; sigma levels 0.835, 0.51, 0.2; fields
t, u, v; hourly, two days) and a checkpoint of the packaged ``tiny`` config with untrained weights
(the speed does not depend on them) whose grid spacing and level kind match the store. The model is
loaded once; after a warm-up case, :func:`atmorep.infer.engine.infer` runs global forecasts of
``--cases`` reference times in each of these configurations:

* one-shot forecasts (lead 3 h, the box's forecast block) with tile overlap 0.5 at batch sizes
  1, 8 and 32 tiles per model call;
* a 6 h forecast by rollout, continuing each member (``members``: the second step runs every
  member) or the ensemble mean (``mean``), batch size 8;
* a one-shot forecast with overlap 0.25 (fewer tiles), batch size 8.

The configurations run in ``--repeats`` rounds (every other round in reverse order); each row
reports the tiles of one domain pass, the tiles fed to the model per second and the whole-domain
passes per second (``InferenceResult.fields_per_second``: all fields of one model pass over the
globe) of the fastest run, the seconds of the prediction loop (reading, model, blending, writing) of
the fastest and the median run, and the share of it spent inside the model (``BoxPredictor.predict``).
``key=value`` arguments override the tiny config (e.g. ``model.ensemble_members=4``).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from synthetic_corpus import GRID, corpus_dataset, grid_argument

from atmorep.checkpoint import Checkpoint, checkpoint_meta, write_checkpoint
from atmorep.config import RunConfig, load_config
from atmorep.data.prepare import prepare_dataset
from atmorep.data.statistics import Statistics
from atmorep.data.store import Store
from atmorep.infer.engine import InferenceResult, infer
from atmorep.infer.predictor import BoxPredictor
from atmorep.infer.request import InferenceRequest
from atmorep.infer.tiling import TilePlan
from atmorep.model.multiformer import build_model
from atmorep.quickstart import CONFIG
from atmorep.tasks import get_task

START = "2001-03-01"
COLUMNS = ("config", "tiles per pass", "batch size", "tiles/s", "domain passes/s", "seconds (best / median)",
           "model share")


@dataclass(frozen=True)
class Setting:
    """One configuration of the benchmark: how the forecasts are run."""

    name: str
    batch_size: int
    overlap: float = 0.5
    lead_hours: float | None = None  # None: the one-shot lead
    rollout: str = "members"


SETTINGS = (
    Setting("one-shot, overlap 0.5", 1),
    Setting("one-shot, overlap 0.5", 8),
    Setting("one-shot, overlap 0.5", 32),
    Setting("rollout 6 h, members", 8, lead_hours=6.0, rollout="members"),
    Setting("rollout 6 h, mean", 8, lead_hours=6.0, rollout="mean"),
    Setting("one-shot, overlap 0.25", 8, overlap=0.25),
)


def make_store(path: Path, days: int, grid: tuple[int, int] = GRID) -> Path:
    """Prepare the synthetic corpus store at ``path``, chunked for the tiny box (12, 16, 32)."""
    return prepare_dataset(corpus_dataset(START, days, grid), path, box=(12, 16, 32))


def tiny_config(store: Path, overrides: Sequence[str] = ()) -> RunConfig:
    """The packaged tiny config reading ``store``, with ``key=value`` overrides."""
    stores = json.dumps([str(store)])  # a YAML list whatever characters the path holds
    return load_config(CONFIG, [f"data.train={stores}", f"data.validation={stores}", "train.device=cpu",
                                *overrides])


def make_checkpoint(directory: Path, store: Path | Store, overrides: Sequence[str] = ()) -> Path:
    """An untrained checkpoint (seed 0) of the tiny config with the store's statistics and grid."""
    opened = store if isinstance(store, Store) else Store(store)
    config = tiny_config(Path(opened.path), overrides)
    torch.manual_seed(0)
    model = build_model(config)
    levels = {f.name: tuple(f.levels) for f in config.fields}
    statistics = Statistics({name: opened.statistics[name] for name in levels})
    weights = {name: value.detach().clone() for name, value in model.state_dict().items()}
    parameters = sum(p.numel() for p in model.parameters())
    meta = checkpoint_meta(config, 0, levels, level_kind=opened.level_kind.value,
                           resolution=opened.resolution, parameters=parameters)
    contents = Checkpoint(weights, config.model_dump(mode="json"), statistics.to_dict(), meta)
    return write_checkpoint(directory, contents)


class ModelClock:
    """Accumulates the seconds spent in ``predictor.predict`` (synchronised on CUDA)."""

    def __init__(self, predictor: BoxPredictor):
        self.seconds = 0.0
        original, device = predictor.predict, predictor.device

        def timed(*args, **kwargs):
            began = time.perf_counter()
            out = original(*args, **kwargs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.seconds += time.perf_counter() - began
            return out

        predictor.predict = timed  # type: ignore[method-assign]


def tiles_per_pass(store: Store, config: RunConfig, overlap: float) -> int:
    """Tiles covering the store's global grid with the model's box."""
    _, h, w = config.data.box.shape
    return TilePlan.from_grid(store.latitude, store.longitude, (h, w), overlap).count


def run_setting(setting: Setting, predictor: BoxPredictor, clock: ModelClock, paths: dict[str, Path],
                times: tuple[np.datetime64, ...], output: Path) -> InferenceResult:
    """Run one setting over ``times``; the model's seconds are left in ``clock``."""
    request = InferenceRequest(checkpoint=paths["checkpoint"], data=paths["store"], output=output,
                               times=times, lead_hours=setting.lead_hours, overlap=setting.overlap,
                               batch_size=setting.batch_size, rollout=setting.rollout,  # type: ignore[arg-type]
                               device=str(predictor.device), overwrite=True)
    clock.seconds = 0.0
    return infer(request, predictor=predictor)


def summarise(setting: Setting, results: list[InferenceResult], model_seconds: list[float],
              tiles_per_pass: int) -> dict:
    """A row from the repeated runs of one setting: rates from the fastest run, also the median seconds.

    On a shared machine other jobs only ever slow a run down, so the fastest run is the best estimate
    of the cost; the median shows how much the runs were disturbed.
    """
    seconds = [r.seconds for r in results]
    best, first = min(seconds), results[0]
    return {"config": setting.name, "tiles per pass": tiles_per_pass, "batch size": setting.batch_size,
            "tiles/s": first.tiles / best, "domain passes/s": first.domain_passes / best,
            "seconds": best, "median seconds": statistics.median(seconds),
            "model share": statistics.median(m / s for m, s in zip(model_seconds, seconds)),
            "cases": first.cases, "tiles": first.tiles, "domain passes": first.domain_passes}


def run(args: argparse.Namespace, workdir: Path) -> tuple[list[dict], dict]:
    """Build the store and checkpoint in ``workdir``, warm up, and time every setting ``repeats`` times.

    The settings run in rounds (reversed every other round), so that a change in the load of a shared
    machine spreads over all of them (see :func:`summarise`).
    """
    store = make_store(workdir / "corpus.zarr", args.days, args.grid)
    grid = Store(store)
    checkpoint = make_checkpoint(workdir / "run" / "checkpoint", grid, args.overrides)
    paths = {"store": store, "checkpoint": checkpoint}
    predictor = BoxPredictor.from_checkpoint(paths["checkpoint"], args.device, args.precision)
    clock = ModelClock(predictor)
    steps = grid.time
    reference = get_task("forecast").layout(predictor.config).reference  # the first possible initialisation
    times = tuple(steps[reference + 1: reference + 1 + args.cases])
    run_setting(SETTINGS[1], predictor, clock, paths, steps[reference: reference + 1], workdir / "warm.zarr")
    results: dict[int, list[InferenceResult]] = {number: [] for number in range(len(SETTINGS))}
    model: dict[int, list[float]] = {number: [] for number in range(len(SETTINGS))}
    for repeat in range(args.repeats):
        order = range(len(SETTINGS)) if repeat % 2 == 0 else reversed(range(len(SETTINGS)))
        for number in order:
            output = workdir / f"out-{number}.zarr"
            results[number].append(run_setting(SETTINGS[number], predictor, clock, paths, times, output))
            model[number].append(clock.seconds)
    rows = [summarise(setting, results[number], model[number],
                      tiles_per_pass(grid, predictor.config, setting.overlap))
            for number, setting in enumerate(SETTINGS)]
    info = {"device": str(predictor.device), "dtype": str(predictor.autocast_dtype or torch.float32),
            "parameters": sum(p.numel() for p in predictor.model.parameters()), "members": predictor.members,
            "cases": len(times), "repeats": args.repeats, "threads": torch.get_num_threads(),
            "grid": (grid.latitude.size, grid.longitude.size)}
    return rows, info


def table(rows: list[dict], info: dict) -> Table:
    """The rows as a rich table."""
    result = Table(title=f"global forecast inference: tiny ({info['parameters'] / 1e6:.2f} M parameters, "
                   f"{info['members']} members) on {info['device']} ({info['dtype']}), "
                   f"{info['threads']} threads, grid {info['grid'][0]} x {info['grid'][1]}, {info['cases']} "
                   f"case(s) per run, best of {info['repeats']} run(s)")
    for column in COLUMNS:
        result.add_column(column, justify="left" if column == "config" else "right")
    for row in rows:
        result.add_row(row["config"], str(row["tiles per pass"]), str(row["batch size"]),
                       f"{row['tiles/s']:.1f}", f"{row['domain passes/s']:.3f}",
                       f"{row['seconds']:.2f} / {row['median seconds']:.2f}",
                       f"{row['model share']:.0%}")
    return result


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda or mps")
    parser.add_argument("--precision", default="auto", help="auto (bfloat16 on cuda), float32 or bfloat16")
    parser.add_argument("--cases", type=int, default=1, help="reference times per run of a configuration")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every configuration (median)")
    parser.add_argument("--days", type=int, default=2, help="length of the synthetic store")
    parser.add_argument("--grid", type=grid_argument, default=GRID, help="latitudes,longitudes of the store")
    parser.add_argument("--quick", action="store_true", help="one run of each configuration, a one-day store")
    parser.add_argument("--workdir", help="where to build the store (default: a temporary directory)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the tiny config")
    args = parser.parse_args(argv)
    if args.quick:
        args.cases, args.repeats, args.days = 1, 1, 1
    return args


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Run the benchmark, print its table and return its rows."""
    args = parse(argv)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        rows, info = run(args, Path(tmp))
    Console(width=160).print(table(rows, info))
    return rows


if __name__ == "__main__":
    logging.getLogger("atmorep").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", "Consolidated metadata is currently not part", UserWarning)
    main()
