"""Does a learned-distance (AtmoDist) content loss make the downscaling tail's members more realistic?

Four fine-tunes of the grid tail at the same steps and seed, on the T63 nature run with vorticity and
divergence (``--nature``, made as in docs/tails.md with ``--fields u,v,t,vo,d,sp``), T31 -> T63:

    a  today's loss (fair CRPS + 0.1 member MSE)
    b  member MSE only
    c  a + the AtmoDist content loss (``train.content_loss``, the distance model trained on the fine
       store's vo/d at sigma 0.835, 32 x 32 patches of the training period)
    d  a + the same loss with the distance model's weights drawn at random (``random:PATH``, the control)

The content loss's weight is set per distance model so that ``weight * D(first guess, truth)`` on the
training period is ``--relative-weight`` (c and d then push equally hard where they start).

Steps, each skipped when its output exists (working directory ``--root``):

1. the coarse store (``data prepare --grid T31 --box 12,16,32``) and the fine store (``--box 12,32,64``);
2. the distance model (:func:`atmorep.distance.train.train_distance`) on the fine store's training period;
3. the four fine-tunes (``--jobs`` at a time, one thread each), on the frozen backbone ``--backbone``;
4. each tail over the test period (2000-02-10 .. 02-29) and its scores: RMSE, CRPS, spread/skill and
   small-scale power (:func:`atmorep.evaluate.tails.score_downscaling`), the site statistics at 150
   Fibonacci sites (:mod:`atmorep.evaluate.site_statistics`) and each variant against a site by site.

    python benchmarks/atmodist_downscaling.py --nature nature.zarr [--root DIR] [--steps 600]

Prints the table of docs/tails.md and writes ``<root>/evaluation/{scores,sites,comparison}.csv``.
"""

from __future__ import annotations

import argparse
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console

from atmorep.data.prepare import prepare
from atmorep.distance.config import resolve_distance_config
from atmorep.distance.saved import MODEL_DIR
from atmorep.distance.train import train_distance
from atmorep.evaluate.site_statistics import compare_methods, score_site_statistics
from atmorep.evaluate.tails import score_downscaling
from atmorep.io import atomic_write_text
from atmorep.tails.apply import TailRequest, apply_tail
from atmorep.tails.backbone import Backbone
from atmorep.tails.coarse import CoarsePeriod
from atmorep.tails.config import ContentLoss, resolve_finetune_config
from atmorep.tails.content import ContentTerm
from atmorep.tails.finetune import TAIL_DIR, finetune
from atmorep.tails.registry import get_tail

PERIODS = {"train": ["2000-01-01", "2000-02-01"], "validation": ["2000-02-01", "2000-02-10"]}
TEST = ("2000-02-10T00", "2000-03-01T00")  # [start, end): held out, after the validation period
FIELDS = ["vo@0.835", "d@0.835", "t@0.835"]
TODAY = {"crps_fair": 1.0, "mse_member": 0.1}
VARIANTS = {"a": "today's loss", "b": "MSE only", "c": "+ AtmoDist content", "d": "+ random-encoder content"}


def data(root: Path, nature: Path) -> tuple[Path, Path]:
    """The coarse (T31) and fine (T63) stores of the nature run (made when missing)."""
    coarse, fine = root / "coarse.zarr", root / "fine.zarr"
    if not fine.exists():
        prepare([nature], fine, box=(12, 32, 64))
    if not coarse.exists():
        prepare([nature], coarse, grid="T31", box=(12, 16, 32))
    return coarse, fine


def distance_model(root: Path, fine: Path, minutes: float) -> Path:
    """The AtmoDist model of the fine store's vo/d at 0.835 on 32 x 32 patches of the training period,
    validated on the validation period (trained when missing; ``ROOT/atmodist/model``)."""
    run_dir = root / "atmodist"
    if not (run_dir / MODEL_DIR / "meta.json").is_file():
        config = {"data": {"train": {"path": str(fine), "periods": [PERIODS["train"]]},
                           "validation": {"path": str(fine), "periods": [PERIODS["validation"]]}},
                  "pairs": {"channels": ["vo@0.835", "d@0.835"], "patch": [32, 32]},
                  "train": {"run_dir": str(run_dir), "max_minutes": minutes, "threads": 1, "device": "cpu"}}
        train_distance(resolve_distance_config(config))
    return run_dir / MODEL_DIR


def _config(root: Path, variant: str, args, coarse: Path, fine: Path, content: dict | None) -> dict:
    train = {"run_dir": str(root / "runs" / variant), "max_steps": args.steps, "seed": args.seed,
             "validate_every": max(args.steps // 2, 1), "validation_boxes": 32, "device": "cpu",
             "losses": {"mse_member": 1.0} if variant == "b" else TODAY}
    if content is not None:
        train["content_loss"] = content
    return {"tail": {"name": "grid", "backbone": str(args.backbone), "coarse": str(coarse),
                     "target": str(fine), "fields": FIELDS},
            "periods": PERIODS, "train": train}


def guess_distance(spec: dict, content: ContentLoss, boxes: int = 32, seed: int = 0) -> float:
    """The mean distance of the first guess (bicubic) to the truth over ``boxes`` training boxes."""
    config = resolve_finetune_config({**spec, "train": {**spec["train"], "content_loss": None}})
    backbone = Backbone(config.tail.backbone, "cpu")
    coarse = CoarsePeriod(config.tail.coarse, backbone, config.tail.fields, *config.periods.bounds("train"))
    pairs, _ = get_tail("grid").fit(config.tail, coarse)
    term = ContentTerm(content, pairs, config.tail.fields)
    chosen = coarse.random_boxes(np.random.default_rng(seed), boxes)
    values = []
    with torch.no_grad():
        for start in range(0, boxes, 4):
            batch = pairs.batch(chosen[start:start + 4])
            zero = torch.zeros(batch.guess.shape[0], 1, batch.guess.shape[1])  # members = the guess
            values.append(float(term(zero, batch, len(chosen[start:start + 4]))))
    return float(np.mean(values))


def _run(config: dict) -> str:
    """Fine-tune one variant on one thread (a worker process) and return its checkpoint."""
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    checkpoint = Path(config["train"]["run_dir"]) / TAIL_DIR
    if not (checkpoint / "tail.json").is_file():
        started = time.monotonic()
        finetune(resolve_finetune_config(config))
        minutes = (time.monotonic() - started) / 60
        atomic_write_text(checkpoint.parent / "minutes.txt", f"{minutes:.2f}\n")
    return str(checkpoint)


def _infer_and_score(checkpoint: str, coarse: str, fine: str, out: str) -> tuple:
    torch.set_num_threads(1)
    if not Path(out).exists():
        apply_tail(TailRequest(Path(checkpoint), Path(coarse), Path(fine), Path(out), *TEST))
    table, _ = score_downscaling(out, fine, coarse)
    sites, summary = score_site_statistics(out, fine)
    return table, sites, summary


def _pool(jobs: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("runs/atmodist-downscaling"))
    parser.add_argument("--nature", type=Path, required=True, help="the T63 nature run with vo and d")
    parser.add_argument("--backbone", type=Path, default=Path("atmorep-quickstart/runs/tiny"))
    parser.add_argument("--distance", type=Path, default=None, help="a trained distance model (default: "
                        "train one into ROOT/atmodist)")
    parser.add_argument("--distance-minutes", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--relative-weight", type=float, default=0.15)
    parser.add_argument("--images", type=int, default=16, help="content-loss images per batch")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    console, root = Console(), args.root
    root.mkdir(parents=True, exist_ok=True)
    coarse, fine = data(root, args.nature)
    distance = args.distance or distance_model(root, fine, args.distance_minutes)

    configs = {v: _config(root, v, args, coarse, fine, None) for v in "ab"}
    weights = {}
    for variant, name in (("c", str(distance)), ("d", f"random:{distance}")):
        probe = ContentLoss(distance=name, weight=1.0, images=args.images, seed=args.seed)
        weights[variant] = args.relative_weight / guess_distance(configs["a"], probe, seed=args.seed)
        content = {**probe.model_dump(), "weight": weights[variant]}
        configs[variant] = _config(root, variant, args, coarse, fine, content)
    console.print(f"content-loss weights: {weights}")
    with _pool(args.jobs) as pool:
        checkpoints = dict(zip(configs, pool.map(_run, configs.values()), strict=True))
    predictions = root / "predictions"
    predictions.mkdir(exist_ok=True)
    with _pool(args.jobs) as pool:
        futures = {v: pool.submit(_infer_and_score, c, str(coarse), str(fine), str(predictions / f"{v}.zarr"))
                   for v, c in checkpoints.items()}
        results = {v: f.result() for v, f in futures.items()}
    report(root, results, weights, console)


def report(root: Path, results: dict, weights: dict, console: Console) -> None:
    """The table of scores and of each variant against ``a``, printed and written as CSVs."""
    evaluation = root / "evaluation"
    evaluation.mkdir(exist_ok=True)
    rows, sites, comparisons = [], [], []
    reference = results["a"][1]
    for variant, (table, per_site, summary) in results.items():
        tail = table[table.method == "tail"].drop(columns="method").merge(summary, on="target")
        minutes = (root / "runs" / variant / "minutes.txt")
        tail = tail.assign(variant=variant, loss=VARIANTS[variant], content_weight=weights.get(variant),
                           minutes=float(minutes.read_text()) if minutes.is_file() else np.nan)
        if variant != "a":
            against = compare_methods(reference, per_site)
            comparisons.append(against.assign(variant=variant))
            tail = tail.merge(against, on="target", how="left")
        rows.append(tail)
        sites.append(per_site.assign(variant=variant))
    bicubic = results["a"][0]
    scores = pd.concat([*rows, bicubic[bicubic.method == "bicubic"].assign(variant="bicubic")],
                       ignore_index=True)
    atomic_write_text(evaluation / "scores.csv", scores.to_csv(index=False, float_format="%.5g"))
    atomic_write_text(evaluation / "sites.csv", pd.concat(sites).to_csv(index=False, float_format="%.5g"))
    atomic_write_text(evaluation / "comparison.csv",
                      pd.concat(comparisons).to_csv(index=False, float_format="%.5g"))
    shown = ["target", "variant", "rmse", "crps", "spread_skill", "small_scale_power", "top_band_power",
             "wasserstein", "better", "equal", "worse", "p"]
    console.print(scores[[c for c in shown if c in scores]].to_string(
        index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
