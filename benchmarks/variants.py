"""Variants of the quickstart's training, everything else equal: what a change of the recipe does to skill.

Each variant trains with extra config overrides for the quickstart's budget in its own working
directory (``<root>-<name>``, stores linked to the quickstart's, see ``learning_curve.py``), and is
scored with the same inference and evaluation. Run it after ``atmorep quickstart``:

    python benchmarks/variants.py NAME KEY=VALUE... [--root atmorep-quickstart] [--minutes 15]

e.g. ``python benchmarks/variants.py interpolation-heavy "train.tasks={forecast: 0.2, interpolate: 0.6,
infill: 0.1, downscale: 0.05, bert: 0.05}"``. Prints, per task and field, the variant's RMSE and ratio
to the task's reference beside the quickstart's.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd
from learning_curve import ratio, shared_store_plan
from rich.console import Console
from rich.table import Table

from atmorep.quickstart import QuickstartPlan, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("overrides", nargs="+")
    parser.add_argument("--root", default="atmorep-quickstart")
    parser.add_argument("--minutes", type=float, default=QuickstartPlan().train_minutes)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = Path(args.root)
    plan = shared_store_plan(root, args.name, args.minutes, tuple(args.overrides))
    run(plan)
    base = pd.read_csv(QuickstartPlan(root=root).evaluation_dir / "summary.csv")
    variant = pd.read_csv(plan.evaluation_dir / "summary.csv")
    table = Table(title=f"{args.name}: model RMSE (ratio to the reference), quickstart against variant")
    for column in ("task", "field", "quickstart", args.name, "spread/skill (variant)"):
        table.add_column(column)
    for key, row in base.iterrows():
        other = variant.loc[key]
        table.add_row(row["task"], row["field"], f"{row['rmse_model']:.4g} ({ratio(row):.3g})",
                      f"{other['rmse_model']:.4g} ({ratio(other):.3g})", f"{other['spread_skill']:.3g}")
    Console().print(table)


if __name__ == "__main__":
    main()
