"""Tails against their baselines on a nature run: downscaling T31 -> T63 and bias correction at sites.

Steps, each skipped when its output exists (working directory ``--root``, default ``atmorep-tails``):

1. the nature run: jcm at T63 (192 x 96), 60 days hourly from 2000-01-01 after 30 days of spin-up,
   u, v, t at sigma 0.95/0.835/0.51/0.2, sp and t2m (about 8 minutes on 2 cores);
2. its coarse-grained record on the T31 grid (``data prepare --grid T31``) and the fine store itself
   (``data prepare``); observation stores of t2m (noise 0.5 K) at ``--sites`` sites with each of
   ``--missing`` fractions missing (``data observe``, seed 1);
3. fine-tune the downscaling tail (t at 0.835 and t2m) and one observation tail (t2m) per observation
   store on the backbone ``--backbone`` (default: the quickstart's), frozen, on the training period;
   their spread factors are fitted on the validation period;
4. on the held-out test period: the tails (``atmorep infer`` on a tail checkpoint), the backbone's own
   zero-shot downscaling of the fine store (``--task downscale --coarsen-factor 2``), and the scores
   (``atmorep evaluate --coarse``).

    python benchmarks/tails.py [--root atmorep-tails] [--steps 1500] [--site-steps 1000]

Prints the tables of ``docs/tails.md`` and writes them as ``<root>/evaluation/*.csv``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from atmorep.checkpoint import resolve_checkpoint
from atmorep.data.observations import ObservationSpec, observe
from atmorep.data.prepare import prepare
from atmorep.data.simulate import SimulationSpec, simulate
from atmorep.evaluate.plots import plot_tail_spectra
from atmorep.evaluate.tails import score_downscaling, score_sites
from atmorep.infer.engine import infer
from atmorep.infer.request import InferenceRequest, reference_times
from atmorep.io import atomic_write_text
from atmorep.tails.apply import TailRequest, apply_tail
from atmorep.tails.config import resolve_finetune_config
from atmorep.tails.finetune import TAIL_DIR, finetune

NATURE = SimulationSpec(start="2000-01-01", days=60.0, levels=(0.95, 0.835, 0.51, 0.2), resolution="T63",
                        spinup_days=30.0, seed=1, fields=("u", "v", "t", "sp", "t2m"))
PERIODS = {"train": ["2000-01-01", "2000-02-01"], "validation": ["2000-02-01", "2000-02-10"]}
TEST = ("2000-02-10T00", "2000-02-29T23")  # held out: after the validation period
GRID_FIELDS, SITE_FIELDS = ["t@0.835", "t2m"], ["t2m"]


def data(root: Path, sites: list[int], missing: list[float]) -> dict[str, Path]:
    """The nature run, its coarse and fine stores, and the observation stores (made when missing)."""
    nature, coarse, fine = root / "nature-t63.zarr", root / "coarse-t31.zarr", root / "fine-t63.zarr"
    if not nature.exists():
        simulate(NATURE, nature)
    if not coarse.exists():
        prepare([nature], coarse, grid="T31", box=(12, 16, 32))
    if not fine.exists():
        prepare([nature], fine, box=(12, 32, 64))
    paths = {"nature": nature, "coarse": coarse, "fine": fine}
    for count in sites:
        for fraction in missing:
            path = root / f"obs-{count}-{fraction:g}.zarr"
            if not path.exists():
                observe(nature, path, ObservationSpec(sites=count, fields=("t2m",), noise={"t2m": 0.5},
                                                      missing=fraction, seed=1))
            paths[f"obs-{count}-{fraction:g}"] = path
    return paths


def tail_checkpoint(name: str, target: Path, fields: list[str], run_dir: Path, backbone: Path,
                    coarse: Path, steps: int) -> Path:
    """Fine-tune a tail (when its checkpoint is missing) and return its checkpoint."""
    checkpoint = run_dir / TAIL_DIR
    if not (checkpoint / "tail.json").is_file():
        config = {"tail": {"name": name, "backbone": str(backbone), "coarse": str(coarse),
                           "target": str(target), "fields": fields},
                  "periods": PERIODS,
                  "train": {"run_dir": str(run_dir), "max_steps": steps, "validate_every": 250,
                            "validation_boxes": 64}}
        finetune(resolve_finetune_config(config))  # writes run_dir/finetune.yaml
    return checkpoint


def run_tail(checkpoint: Path, coarse: Path, target: Path, out: Path) -> Path:
    if not out.exists():
        last = str(np.datetime64(TEST[1], "s") + np.timedelta64(1, "s"))
        apply_tail(TailRequest(checkpoint, coarse, target, out, TEST[0], last))
    return out


def zero_shot(backbone: Path, fine: Path, out: Path) -> Path:
    if not out.exists():
        times = reference_times((), TEST[0], "2000-02-29T12", "12h")
        infer(InferenceRequest(checkpoint=resolve_checkpoint(backbone), data=fine, output=out,
                               task="downscale", times=times, coarsen_factor=2, overlap=0, device="cpu",
                               precision="float32"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("atmorep-tails"))
    parser.add_argument("--backbone", type=Path, default=Path("atmorep-quickstart/runs/tiny"))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--site-steps", type=int, default=1000)
    parser.add_argument("--sites", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--missing", type=float, nargs="+", default=[0.2, 0.4])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    console, root = Console(), args.root
    root.mkdir(parents=True, exist_ok=True)
    paths = data(root, args.sites, args.missing)
    runs, predictions, evaluation = root / "runs", root / "predictions", root / "evaluation"
    predictions.mkdir(exist_ok=True)
    evaluation.mkdir(exist_ok=True)

    grid = tail_checkpoint("grid", paths["fine"], GRID_FIELDS, runs / "grid", args.backbone, paths["coarse"],
                           args.steps)
    downscaled = run_tail(grid, paths["coarse"], paths["fine"], predictions / "grid.zarr")
    shot = zero_shot(args.backbone, paths["fine"], predictions / "zero-shot.zarr")
    table, spectra = score_downscaling(str(downscaled), str(paths["fine"]), str(paths["coarse"]), str(shot))
    atomic_write_text(evaluation / "downscaling.csv", table.to_csv(index=False, float_format="%.5g"))
    atomic_write_text(evaluation / "spectra.csv", spectra.to_csv(index=False, float_format="%.6g"))
    plot_tail_spectra(spectra, evaluation / "spectra.png")
    console.print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))

    tables = []
    for key in (k for k in paths if k.startswith("obs-")):
        checkpoint = tail_checkpoint("sites", paths[key], SITE_FIELDS, runs / f"sites-{key[4:]}",
                                     args.backbone, paths["coarse"], args.site_steps)
        out = run_tail(checkpoint, paths["coarse"], paths[key], predictions / f"sites-{key[4:]}.zarr")
        scored = score_sites(str(out), str(paths[key]), str(paths["coarse"]))
        count, fraction = key[4:].split("-")
        tables.append(scored.assign(stations=int(count), missing=float(fraction)))
    sites = pd.concat(tables, ignore_index=True)
    atomic_write_text(evaluation / "sites.csv", sites.to_csv(index=False, float_format="%.5g"))
    console.print(sites.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
