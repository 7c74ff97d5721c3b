"""Evaluation benchmark: the cost of scoring does not grow with the length of the archive.

Usage::

    python benchmarks/evaluation.py [--days N] [--repeats R] [--cases I] [--quick]

Builds, in a temporary directory, four prepared stores on the default-corpus grid (T31 Gaussian
latitudes, 48 x 96 points; t, u, v on the sigma levels 0.835, 0.51, 0.2; hourly), all made by
``atmorep.data.prepare.prepare_dataset``:

* the truth store of ``N`` days and the same data extended to ``10 N`` days (the first ``N`` days
  are identical);
* a climatology source (a training store, the same days of year one year earlier) of ``N`` and of
  ``10 N`` days;

and one forecast prediction store (``I`` cases every 12 h inside the first ``N`` days, leads 1-3 h,
8 members: the truth plus member noise) written by :class:`atmorep.prediction_store.PredictionWriter`.
Then :func:`atmorep.evaluate.scoring.score` and :func:`atmorep.evaluate.run.evaluate` (``maps=False``,
a fresh output directory each time, so the climatology is computed every time) run on the 1x and
the 10x stores, interleaved, ``R`` times each, in one process; the table gives the median seconds and
the ratio 10x / 1x, and the chunks and bytes (as stored, compressed) read from the truth store and
the climatology source by the first ``score`` call, counted under zarr's ``LocalStore``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import xarray as xr
import zarr.storage
from rich.console import Console
from rich.table import Table
from synthetic_corpus import FIELDS, GRID, SIGMA, corpus_dataset, grid_argument

from atmorep.data.prepare import prepare_dataset
from atmorep.evaluate.run import evaluate
from atmorep.evaluate.scoring import score
from atmorep.prediction_store import PredictionLayout, PredictionWriter

TRUTH_START = "2002-03-01"
TRAINING_START = "2001-03-01"  # the same days of year, a year earlier
LEADS = (1, 2, 3)  # hours: the tiny model's one-shot forecast block
MEMBERS = 8
SCALES = ("1x", "10x")
COLUMNS = ("measure", "1x", "10x", "10x / 1x")


def make_stores(workdir: Path, days: int, grid: tuple[int, int]) -> tuple[dict[str, Path], xr.Dataset]:
    """The truth and climatology stores of both lengths, and the short truth dataset in memory."""
    paths = {}
    truth = corpus_dataset(TRUTH_START, 10 * days, grid, seed=1)
    training = corpus_dataset(TRAINING_START, 10 * days, grid, seed=2)
    for scale, steps in zip(SCALES, (24 * days, 240 * days)):
        for name, data in (("truth", truth), ("climatology", training)):
            path = workdir / f"{name}-{scale}.zarr"
            part = data.isel(time=slice(0, steps))
            paths[f"{name} {scale}"] = prepare_dataset(part, path, box=(12, 16, 32))
    return paths, truth.isel(time=slice(0, 24 * days))


def write_prediction(path: Path, truth: xr.Dataset, cases: int) -> Path:
    """A forecast store: ``cases`` reference times every 12 h from 06 h, the truth plus member noise."""
    rng = np.random.default_rng(3)
    times = truth["time"].values[6::12][:cases]  # [I]
    leads = np.asarray(LEADS) * np.timedelta64(1, "h")  # [P]
    if times.size < cases or times[-1] + leads[-1] > truth["time"].values[-1]:
        raise ValueError(f"{cases} cases every 12 h do not fit a truth of {truth.sizes['time']} hours")
    layout = PredictionLayout(fields={name: SIGMA for name in FIELDS}, level_kind="sigma",
                              prediction_timedelta=leads, members=MEMBERS,
                              latitude=truth["latitude"].values, longitude=truth["longitude"].values,
                              attrs={"task": "forecast", "time_step_hours": 1.0})
    with PredictionWriter(path, layout) as writer:
        for reference in times:
            valid = truth.sel(time=reference + leads)  # [P, L, H, W] per field
            values = {name: valid[name].values[:, None]  # [P, L, H, W] -> [P, 1, L, H, W]
                      + rng.normal(0.0, 1.0, (leads.size, MEMBERS, *valid[name].shape[1:])).astype(np.float32)
                      for name in FIELDS}  # [P, E, L, H, W]
            writer.write(reference, values)
    return path


@contextlib.contextmanager
def counted_reads() -> Iterator[dict[str, list[int]]]:
    """Sizes of the chunks read through zarr's LocalStore, per store directory name."""
    seen: dict[str, list[int]] = {}
    original = zarr.storage.LocalStore.get

    async def counting(self, key, prototype=None, byte_range=None):
        buffer = await original(self, key, prototype, byte_range)
        if buffer is not None and "/c/" in key:
            seen.setdefault(Path(str(self.root)).name, []).append(len(buffer))
        return buffer

    zarr.storage.LocalStore.get = counting
    try:
        yield seen
    finally:
        zarr.storage.LocalStore.get = original


def _seconds(call) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def measure(paths: dict[str, Path], prediction: Path, workdir: Path, repeats: int) -> dict[str, dict]:
    """Median seconds of score and evaluate per scale, and the reads of the first score call."""
    times: dict[tuple[str, str], list[float]] = {}
    reads: dict[str, dict[str, list[int]]] = {}
    for repeat in range(repeats):
        for scale in SCALES if repeat % 2 == 0 else SCALES[::-1]:
            truth, source = paths[f"truth {scale}"], paths[f"climatology {scale}"]
            with counted_reads() as seen:
                seconds = _seconds(partial(score, prediction, truth, source))
            reads.setdefault(scale, seen)
            times.setdefault(("score", scale), []).append(seconds)
            directory = workdir / f"evaluation-{scale}-{repeat}"  # fresh: no climatology cache
            seconds = _seconds(partial(evaluate, [prediction], truth, source, directory, maps=False))
            times.setdefault(("evaluate", scale), []).append(seconds)
    result = {}
    for scale in SCALES:
        truth, source = paths[f"truth {scale}"], paths[f"climatology {scale}"]
        result[scale] = {"score": statistics.median(times[("score", scale)]),
                         "evaluate": statistics.median(times[("evaluate", scale)]),
                         "truth": reads[scale].get(truth.name, []),
                         "climatology": reads[scale].get(source.name, []),
                         "stored": _size(truth) + _size(source)}
    return result


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def rows(result: dict[str, dict], days: int) -> list[dict]:
    """The table rows: per measure the 1x and 10x values and their ratio."""
    def row(measure: str, values: list[float], unit: str = "{:.3f}") -> dict:
        ratio = values[1] / values[0] if values[0] else float("nan")
        return {"measure": measure, "1x": values[0], "10x": values[1], "10x / 1x": ratio, "format": unit}

    small, large = (result[scale] for scale in SCALES)
    table = [row("store days (truth, climatology source)", [days, 10 * days], "{:.0f}"),
             row("stored MB (truth + climatology source)",
                 [r["stored"] / 1e6 for r in (small, large)], "{:.1f}"),
             row("score: median s", [small["score"], large["score"]]),
             row("evaluate(maps=False): median s", [small["evaluate"], large["evaluate"]])]
    for name in ("truth", "climatology"):
        label = "truth store" if name == "truth" else "climatology source"
        table += [row(f"{label}: chunks read by score", [len(r[name]) for r in (small, large)], "{:.0f}"),
                  row(f"{label}: MB read by score", [sum(r[name]) / 1e6 for r in (small, large)], "{:.2f}")]
    return table


def table(entries: list[dict], info: dict) -> Table:
    """The rows as a rich table."""
    result = Table(title=f"evaluation cost against archive length: {info['cases']} forecast cases x "
                   f"{len(LEADS)} leads x {MEMBERS} members, grid {info['grid'][0]} x {info['grid'][1]}, "
                   f"{len(FIELDS)} fields x {len(SIGMA)} levels, median of {info['repeats']} runs")
    for column in COLUMNS:
        result.add_column(column, justify="left" if column == "measure" else "right")
    for entry in entries:
        values = (entry["format"].format(entry[scale]) for scale in SCALES)
        result.add_row(entry["measure"], *values, f"{entry['10x / 1x']:.2f}")
    result.caption = f"stores and prediction built in {info['setup']:.0f} s"
    return result


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=2, help="N: days of the short stores (the long: 10 N)")
    parser.add_argument("--cases", type=int, default=4, help="forecast cases (every 12 h from day 1, 06 h)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per function and store")
    parser.add_argument("--grid", type=grid_argument, default=GRID, help="latitudes,longitudes of the stores")
    parser.add_argument("--quick", action="store_true", help="one day, two cases, one repeat")
    parser.add_argument("--workdir", help="where to build the stores (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.quick:
        args.days, args.cases, args.repeats = 1, 2, 1
    return args


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Run the benchmark, print its table and return its rows."""
    args = parse(argv)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        workdir = Path(tmp)
        began = time.perf_counter()
        paths, truth = make_stores(workdir, args.days, args.grid)
        prediction = write_prediction(workdir / "forecast.zarr", truth, args.cases)
        setup = time.perf_counter() - began
        result = measure(paths, prediction, workdir, args.repeats)
    entries = rows(result, args.days)
    info = {"cases": args.cases, "grid": args.grid, "repeats": args.repeats, "setup": setup}
    Console(width=160).print(table(entries, info))
    return entries


if __name__ == "__main__":
    logging.getLogger("atmorep").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", "Consolidated metadata is currently not part", UserWarning)
    main()
