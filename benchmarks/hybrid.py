"""Hybrid models on the default corpus: the raw core, offline and online hybrids at equal wall time.

Steps, each skipped when its output exists (working directory ``--root``, default ``atmorep-hybrid``):

1. the truth: two independent jcm runs (SPEEDY physics, T31, all 8 sigma levels, 6-hourly, u, v,
   t, z, sp), each after 30 days of spin-up with its own seed: training 2000-01-01 + 60 days (seed
   1), test 2002-01-01 + 100 days (seed 3); about 4 minutes on 2 cores;
2. the correction trained for ``--minutes`` each (``configs/hybrid.yaml``): offline, online from
   scratch, and online after a third of the budget offline (``online-warm``), each on one
   thread, as many at once as there are cores, so that they have the same cost;
3. on the test period: RMSE and ACC against lead to ``--days`` for the raw core, both hybrids,
   persistence and climatology (the training period's mean), and a free run over the whole test
   period from its first state (``atmorep hybrid evaluate``);
4. the cost of one hybrid step and of one training step of each kind, on this machine.

    python benchmarks/hybrid.py [--root atmorep-hybrid] [--minutes 15] [--days 5]

Prints the tables of ``docs/hybrid.md``; the evaluation's files are in ``<root>/evaluation``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from rich.console import Console

from atmorep.data.simulate import SimulationSpec, simulate
from atmorep.hybrid.config import load_hybrid_config
from atmorep.hybrid.run import build_model, evaluate_hybrids
from atmorep.hybrid.state import read_truth
from atmorep.hybrid.training import TrainSettings, core_steps, train

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "hybrid.yaml"
FIELDS = ("u", "v", "t", "z", "sp")
PERIODS = {"train": ("2000-01-01", 60.0, 1), "test": ("2002-01-01", 100.0, 3)}


def truth(root: Path) -> dict[str, Path]:
    paths = {}
    for name, (start, days, seed) in PERIODS.items():
        paths[name] = root / f"{name}.zarr"
        if not paths[name].exists():
            spec = SimulationSpec(start=start, days=days, output_interval_hours=6, seed=seed, fields=FIELDS)
            simulate(spec, paths[name])
    return paths


def trained(root: Path, train_path: Path, minutes: float) -> list[Path]:
    """Offline, online and warm-started online checkpoints, each on one thread, as many at once as
    there are cores (so that every run has the same cost)."""
    runs = [root / mode for mode in ("offline", "online", "online-warm")]
    pending = [run for run in runs if not (run / "hybrid.json").exists()]
    parallel = max(1, os.cpu_count() or 1)
    for first in range(0, len(pending), parallel):
        jobs = []
        for run in pending[first:first + parallel]:
            warm = minutes / 3 if run.name == "online-warm" else 0  # a third of the budget offline first
            command = [sys.executable, "-m", "atmorep", "hybrid", "train", "--config", str(CONFIG),
                       f"data.train={train_path}", f"train.mode={run.name.split('-')[0]}",
                       f"train.minutes={minutes:g}", f"train.offline_minutes={warm:g}", f"run_dir={run}",
                       "--every", "50"]
            log = open(root / f"{run.name}.log", "w")  # noqa: SIM115 - closed when the job ends
            jobs.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                          env={**os.environ, "OMP_NUM_THREADS": "1"}), log))
        for job, log in jobs:
            if job.wait() != 0:
                raise SystemExit(f"training failed; see {log.name}")
            log.close()
    return runs


def speed(train_path: Path) -> pd.DataFrame:
    """Seconds per hybrid step (batch 1 and 16) and per training step (offline, online), one thread."""
    torch.set_num_threads(1)
    config = load_hybrid_config(CONFIG, [f"data.train={train_path}", "run_dir=unused"])
    core = config.core
    period = read_truth(train_path, "2000-01-01", "2000-01-10", core.truncation, core.interval_hours)
    model, _ = build_model(config, period)
    rows = []
    with torch.no_grad():
        for batch in (1, 16):
            fields, hours = period.fields[:batch], torch.zeros(batch)
            began = time.perf_counter()
            for _ in range(3):
                model.core_step(fields)
            core = (time.perf_counter() - began) / 3
            began = time.perf_counter()
            for _ in range(3):
                model(fields, hours)
            rows.append({"what": f"step of 6 h, batch {batch}", "core_s": core,
                         "hybrid_s": (time.perf_counter() - began) / 3})
    began = time.perf_counter()
    core_steps(model, period.fields)
    precompute = time.perf_counter() - began
    rows.append({"what": f"offline: the core's steps from {period.fields.shape[0]} states, once",
                 "core_s": precompute, "hybrid_s": float("nan")})
    for mode, steps in (("offline", 50), ("online", 3)):
        settings = TrainSettings(**{**config.train.model_dump(), "mode": mode, "max_steps": steps,
                                    "offline_minutes": 0})
        result = train(model, period, settings)
        seconds = result["seconds"] - (precompute if mode == "offline" else 0.0)
        rows.append({"what": f"training step, {mode} (batch {settings.batch_size}"
                             + (f", rollout {settings.rollout})" if mode == "online" else ")"),
                     "core_s": float("nan"), "hybrid_s": seconds / result["steps"]})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("atmorep-hybrid"))
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--days", type=float, default=5.0)
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    console = Console(width=200)
    paths = truth(args.root)
    runs = trained(args.root, paths["train"], args.minutes)
    evaluate_hybrids(runs, paths["test"], paths["train"], args.root / "evaluation", days=args.days)
    console.print((args.root / "evaluation" / "report.md").read_text(), markup=False, highlight=False)
    console.print(speed(paths["train"]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
