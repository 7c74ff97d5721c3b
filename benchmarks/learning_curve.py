"""Skill against training time: the quickstart run with several training budgets, everything else equal.

Each budget gets its own working directory next to the quickstart's (``<root>-<minutes>min``) whose
simulated and prepared stores are links to the quickstart's, so every run trains on the same data and
is scored on the same held-out cases. Runs differ only in ``train.max_minutes`` and in the step
bound that shapes the learning-rate schedule, ``train.max_steps``, scaled with the budget as the
quickstart's (3000 steps for 15 minutes); the quickstart's budget reuses the quickstart's own run.
Run it after ``atmorep quickstart``:

    python benchmarks/learning_curve.py [--root atmorep-quickstart] [--minutes 5 15 60]

Prints, per task and field, the model's RMSE and its ratio to the task's reference after each budget.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from atmorep.quickstart import QuickstartPlan, run

REFERENCE = {"forecast": "persistence", "interpolate": "linear", "infill": "best", "downscale": "best"}
STEPS_PER_MINUTE = 200  # the quickstart's train.max_steps per minute of train.max_minutes


def shared_store_plan(root: Path, name: str, minutes: float, overrides: tuple[str, ...]) -> QuickstartPlan:
    """A plan in ``<root>-<name>`` whose stores are links to the quickstart's and whose run, predictions
    and scores are its own."""
    directory = root.parent / f"{root.name}-{name}"
    directory.mkdir(exist_ok=True)
    for shared in ("raw", "data"):
        link = directory / shared
        if not link.exists():
            link.symlink_to((root / shared).resolve(), target_is_directory=True)
    return QuickstartPlan(root=directory, train_minutes=minutes, overrides=overrides)


def budget_plan(root: Path, minutes: float) -> QuickstartPlan:
    """The quickstart with another training budget (the quickstart's own run for its budget)."""
    if minutes == QuickstartPlan().train_minutes:
        return QuickstartPlan(root=root)
    steps = int(STEPS_PER_MINUTE * minutes)
    return shared_store_plan(root, f"{minutes:g}min", minutes, (f"train.max_steps={steps}",))


def ratio(row: pd.Series) -> float:
    reference = REFERENCE[row["task"]]
    name = row["best_baseline"] if reference == "best" else reference
    return row["rmse_model"] / row[f"rmse_{name}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="atmorep-quickstart")
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0, 15.0, 60.0])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = Path(args.root)
    summaries = {}
    for minutes in args.minutes:
        plan = budget_plan(root, minutes)
        run(plan)
        summaries[minutes] = pd.read_csv(plan.evaluation_dir / "summary.csv")
    table = Table(title="model RMSE (ratio to the reference) against training minutes")
    table.add_column("task (reference)")
    table.add_column("field")
    for minutes in args.minutes:
        table.add_column(f"{minutes:g} min", justify="right")
    first = summaries[args.minutes[0]]
    for key, row in first.iterrows():
        cells = []
        for minutes in args.minutes:
            other = summaries[minutes].loc[key]
            cells.append(f"{other['rmse_model']:.4g} ({ratio(other):.3g})")
        table.add_row(f"{row['task']} ({REFERENCE[row['task']]})", row["field"], *cells)
    Console().print(table)


if __name__ == "__main__":
    main()
