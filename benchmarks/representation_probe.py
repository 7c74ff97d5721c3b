"""Lag probe: do AtmoRep's and AtmoDist's frozen representations tell how far apart two states are?

Pairs of boxes at one place, the second 3..48 h after the first (16 classes), from the distance package's
pair sampler; features of each box from a frozen encoder; a multinomial logistic regression on
``[f(a), f(b), |f(a) - f(b)|]`` fitted on random pairs of the training store, its L2 penalty chosen on
the validation store, scored on the enumerated (balanced) pairs of the test store
(:mod:`atmorep.evaluate.representations`). Rows: AtmoRep (the backbone ``--checkpoint``; its box of
12 h x 16 x 32 points; the clock in its auxiliary values hidden) trained and randomly initialised, the
trained one with its clock visible, AtmoDist (``--distance``; its channels on the box's first time
and area) trained and randomly initialised, the box statistics and a constant guess.

    python benchmarks/representation_probe.py --distance runs/atmodist [-o runs/representation-probe]

Prints the table and writes ``<out>/scores.csv`` (one row per representation) and ``<out>/per_lag.csv``
(test accuracy per lag).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch
from pydantic import ValidationError
from rich.console import Console

from atmorep.distance.config import EvaluationSpec
from atmorep.errors import AtmorepError
from atmorep.evaluate.representations import ProbeResult, ProbeSpec, probe_representations
from atmorep.io import atomic_write_text

DATA = Path("atmorep-quickstart/data")
SHOWN = ["representation", "features", "penalty", "validation_accuracy", "accuracy", "accuracy_low",
         "accuracy_high", "mae_hours", "mae_low", "mae_high"]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("atmorep-quickstart/runs/tiny"),
                        help="AtmoRep checkpoint or run directory ('none' to leave AtmoRep out)")
    parser.add_argument("--distance", type=Path, default=None, help="AtmoDist model or run directory")
    parser.add_argument("--train", type=Path, default=DATA / "train.zarr")
    parser.add_argument("--validation", type=Path, default=DATA / "validation.zarr")
    parser.add_argument("--test", type=Path, default=DATA / "test.zarr")
    parser.add_argument("--train-pairs", type=int, default=1500)
    parser.add_argument("--validation-pairs", type=int, default=600)
    parser.add_argument("--test-stride-hours", type=int, default=12,
                        help="spacing of the test pairs' first times")
    parser.add_argument("--test-latitudes", type=int, default=2, help="box rows of the test pairs")
    parser.add_argument("--test-longitude-stride", type=int, default=32, help="columns between test boxes")
    parser.add_argument("--lags", type=int, default=16)
    parser.add_argument("--step-hours", type=float, default=3.0)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-o", "--output", type=Path, default=Path("runs/representation-probe"))
    return parser.parse_args(argv)


def report(result: ProbeResult, output: Path, seconds: float, console: Console) -> None:
    """Print the table; write ``scores.csv`` and ``per_lag.csv`` into ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "scores.csv", result.table.to_csv(index=False, float_format="%.5g"))
    atomic_write_text(output / "per_lag.csv", result.per_lag.to_csv(float_format="%.4g"))
    pairs = ", ".join(f"{split} {count}" for split, count in result.pairs.items())
    console.print(f"lag probe ({pairs} pairs; {seconds:.0f} s)")
    console.print(result.table[SHOWN].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    console.print(f"wrote {output / 'scores.csv'} and {output / 'per_lag.csv'}")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    console = Console()
    checkpoint = None if str(args.checkpoint).lower() == "none" else args.checkpoint
    started = time.perf_counter()
    try:
        test = EvaluationSpec(time_stride_hours=args.test_stride_hours, latitude_places=args.test_latitudes,
                              longitude_stride=args.test_longitude_stride)
        spec = ProbeSpec(lags=args.lags, step_hours=args.step_hours, train_pairs=args.train_pairs,
                         validation_pairs=args.validation_pairs, bootstrap=args.bootstrap, seed=args.seed,
                         test=test)
        result = probe_representations(args.train, args.validation, args.test, checkpoint, args.distance,
                                       spec)
    except (AtmorepError, FileNotFoundError) as error:
        Console(stderr=True).print(f"error: {error}", highlight=False, soft_wrap=True)
        return 2
    except ValidationError as error:  # the test pairs' options
        first = error.errors()[0]
        Console(stderr=True).print(f"error: test pairs: {first['loc'][0]}: {first['msg']}", highlight=False)
        return 2
    report(result, args.output, time.perf_counter() - started, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
