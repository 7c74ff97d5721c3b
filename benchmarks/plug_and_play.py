"""Plug-and-play fields on the default corpus: per-field pre-training, assembly and a short synchronising
fine-tune against joint training in the same wall time, and a field dropped from the joint model.

Arms, each in its own working directory next to the quickstart's (``<root>-pp-<arm>``, stores linked to
the quickstart's as in ``learning_curve.py``) and scored with the quickstart's calibration, inference and
evaluation on the test period:

* ``joint``: the quickstart's joint training of all its fields for ``--minutes`` (its own run for the
  quickstart's budget), and the same for each of ``--joint-minutes``;
* ``<field>``: one model per field (a config of that field alone), each trained for 90 % of the budget
  divided by the number of fields, with the same step bound (learning-rate schedule) as the joint run;
* ``assembled``: ``atmorep assemble`` of the per-field checkpoints, scored as it is (zero-shot);
* ``synced``: the assembled model fine-tuned with the joint config for the remaining 10 % of the budget
  (``train.init``), so that per-field training, assembly and synchronising take the joint run's time;
* ``dropped``: ``atmorep assemble --drop`` of the last field from the joint model, as it is and after
  a fine-tune of the remaining fields for the same 10 %.

Run it after ``atmorep quickstart``:

    python benchmarks/plug_and_play.py [--root atmorep-quickstart] [--minutes 15] [--joint-minutes 5]

Prints, per task and field, each arm's RMSE and its ratio to the task's reference, and writes the
table as ``<root>-plug-and-play/summary.csv``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pandas as pd
from learning_curve import STEPS_PER_MINUTE, budget_plan, ratio, shared_store_plan
from rich.console import Console
from rich.table import Table

from atmorep.assemble import assemble
from atmorep.io import atomic_write_text
from atmorep.quickstart import DONE, QuickstartPlan, run, run_config

SYNC_SHARE = 0.1  # of the budget, for the synchronising fine-tune


def single_field_plan(root: Path, name: str, minutes: float, steps: int) -> QuickstartPlan:
    """The quickstart's recipe for the field ``name`` alone."""
    field = run_config(QuickstartPlan(root=root)).field(name).model_dump(mode="json")
    field["coupled_with"] = []
    return shared_store_plan(root, f"pp-{name}", minutes, (f"fields=[{json.dumps(field)}]",
                                                          f"train.max_steps={steps}"))


def assembled_plan(root: Path, arm: str, checkpoints: list[Path],
                   drop: tuple[str, ...] = ()) -> QuickstartPlan:
    """A plan whose run is the assembly of ``checkpoints`` (less ``drop``), marked as trained."""
    plan = shared_store_plan(root, f"pp-{arm}", 1.0, ())  # its run is marked trained: minutes unused
    target = plan.run_dir / "checkpoint"
    if not target.exists():
        assemble(checkpoints, target, drop=drop, cross_heads=run_config(plan).model.cross_heads)
        atomic_write_text(plan.run_dir / DONE, json.dumps({"step": 0, "stop_reason": "assembled"}))
    return plan


def scores(plan: QuickstartPlan) -> pd.DataFrame:
    """The plan's evaluation summary; run (or finish) the plan unless it was scored after its checkpoint
    was last written."""
    summary, meta = plan.evaluation_dir / "summary.csv", plan.run_dir / "checkpoint" / "meta.json"
    if not (summary.exists() and meta.exists() and summary.stat().st_mtime > meta.stat().st_mtime):
        run(plan)
    return pd.read_csv(plan.evaluation_dir / "summary.csv").set_index(["task", "lead", "field"])


def steps(plan: QuickstartPlan) -> int:
    return int(json.loads((plan.run_dir / DONE).read_text())["step"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="atmorep-quickstart")
    parser.add_argument("--minutes", type=float, default=QuickstartPlan().train_minutes)
    parser.add_argument("--joint-minutes", type=float, nargs="*", default=[5.0])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = Path(args.root)
    budget = args.minutes
    names = [f.name for f in run_config(QuickstartPlan(root=root)).fields]
    step_bound = int(STEPS_PER_MINUTE * budget)

    arms: dict[str, tuple[str, pd.DataFrame]] = {}  # column -> (what it took, scores)
    for minutes in sorted({*args.joint_minutes, budget}):
        plan = budget_plan(root, minutes)
        frame = scores(plan)
        arms[f"joint {minutes:g} min"] = (f"{steps(plan)} steps", frame)
    joint_plan = budget_plan(root, budget)

    per_field, singles, counts = [], [], []
    field_minutes = budget * (1 - SYNC_SHARE) / len(names)
    for name in names:
        plan = single_field_plan(root, name, field_minutes, step_bound)
        per_field.append(scores(plan))
        singles.append(plan.run_dir / "checkpoint")
        counts.append(f"{name} {steps(plan)}")
    arms[f"per field, {field_minutes:g} min each"] = (f"{', '.join(counts)} steps", pd.concat(per_field))

    assembled = assembled_plan(root, "assembled", singles)
    arms["assembled, before sync"] = ("0 steps", scores(assembled))
    sync_minutes = budget * SYNC_SHARE
    synced = shared_store_plan(root, "pp-synced", sync_minutes,
                               (f"train.init={(assembled.run_dir / 'checkpoint').resolve()}",
                                f"train.max_steps={int(STEPS_PER_MINUTE * sync_minutes)}"))
    frame = scores(synced)
    arms[f"assembled + {sync_minutes:g} min sync"] = (f"{steps(synced)} steps", frame)

    dropped = assembled_plan(root, "dropped", [joint_plan.run_dir / "checkpoint"], drop=(names[-1],))
    arms[f"joint {budget:g} min, {names[-1]} dropped"] = ("0 steps", scores(dropped))
    kept = [f for f in run_config(dropped).model_dump(mode="json")["fields"] if f["name"] != names[-1]]
    kept = [{**f, "coupled_with": [g["name"] for g in kept if g["name"] != f["name"]]} for f in kept]
    resynced = shared_store_plan(root, "pp-dropped-synced", sync_minutes,
                                 (f"fields={json.dumps(kept)}",
                                  f"train.init={(dropped.run_dir / 'checkpoint').resolve()}",
                                  f"train.max_steps={int(STEPS_PER_MINUTE * sync_minutes)}"))
    frame = scores(resynced)
    arms[f"{names[-1]} dropped + {sync_minutes:g} min sync"] = (f"{steps(resynced)} steps", frame)

    report(root, arms)


def report(root: Path, arms: dict[str, tuple[str, pd.DataFrame]]) -> None:
    first = next(iter(arms.values()))[1]
    table = Table(title="plug-and-play: model RMSE (ratio to the task's reference) on the test period")
    table.add_column("task")
    table.add_column("field")
    for column, (took, _) in arms.items():
        table.add_column(f"{column}\n({took})", justify="right")
    rows = []
    for key in first.index:
        cells, row = [], {"task": key[0], "lead": key[1], "field": key[2]}
        for column, (_, frame) in arms.items():
            if key in frame.index:
                scored = frame.loc[key].copy()
                scored["task"] = key[0]
                cells.append(f"{scored['rmse_model']:.4g} ({ratio(scored):.3g})")
                row[f"{column} rmse"], row[f"{column} ratio"] = scored["rmse_model"], ratio(scored)
                row[f"{column} spread/skill"] = scored["spread_skill"]
            else:
                cells.append("-")
        table.add_row(key[0], key[2], *cells)
        rows.append(row)
    Console().print(table)
    out = root.parent / f"{root.name}-plug-and-play" / "summary.csv"
    out.parent.mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(out, index=False)
    Console().print(f"written to {out}")


if __name__ == "__main__":
    main()
