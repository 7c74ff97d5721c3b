"""Forecast skill to 5 days: offline (one box) against online (rollout) fine-tuning of the quickstart model.

Both fine-tunes start from the quickstart's checkpoint (``train.init``) and run for the same wall time
(``--minutes``), side by side on one thread each so that both see the same machine:

* ``offline``: the quickstart's own task mixture, every forecast trained on one box (3 h);
* ``online``: forecast draws roll out ``--passes`` passes (``train.rollout.steps``), each fed the
  previous passes' predictions of one member, with gradients through the rollout.

Then the online model's spread is calibrated per lead on the validation period
(``atmorep calibrate --task forecast --lead-hours 120``), both forecast the test period to 120 h with a
member rollout, and jcm (SPEEDY with other physics, ``atmorep data simulate --forecast-of``, started
from the truth's state every 120 h) gives the physical model's forecasts of the same period. Scores:
latitude-weighted RMSE (mean over levels), fair CRPS and spread/skill against lead for each model,
persistence and climatology (``atmorep.evaluate.scoring.score``), and jcm's RMSE at its own starts.
Every step is skipped when its output exists (working directory ``--work``).

    python benchmarks/rollout_skill.py [--root atmorep-quickstart] [--work atmorep-rollout] [--minutes 15]

Prints the table against lead and writes it as ``rollout_skill.csv`` into ``--work``, with a plot.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from rich.console import Console
from rich.table import Table

from atmorep.evaluate.metrics import rmse
from atmorep.evaluate.scoring import score

LEADS = (3, 6, 12, 24, 36, 48, 72, 96, 120)
TEST_TIMES = ("2002-01-02T00", "2002-01-06T00", "2002-01-10T00")
ONLINE_TASKS = "{forecast: 0.8, interpolate: 0.1, infill: 0.05, downscale: 0.05}"
JCM_EVERY = 120


def atmorep(*args: str, log: Path) -> subprocess.Popen:
    """An ``atmorep`` command on one thread, its output into ``log``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "atmorep", *args], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env=env)


def fine_tune(root: Path, work: Path, minutes: float, passes: int) -> dict[str, Path]:
    """The offline and online fine-tunes, run side by side for the same wall time."""
    config = root / "runs" / "tiny" / "config.yaml"
    common = [f"train.init={root / 'runs' / 'tiny'}", f"train.max_minutes={minutes}", "train.optim.lr=3e-4",
              "train.optim.warmup_steps=20", "train.validate_every=250", "train.checkpoint_every=250"]
    runs = {"offline": (work / "offline", ["train.max_steps=1800"]),
            "online": (work / f"online{passes}", ["train.max_steps=700", f"train.rollout.steps={passes}",
                                                  f"train.tasks={ONLINE_TASKS}"])}
    started = [atmorep("train", "--config", str(config), f"train.run_dir={run}", *common, *extra,
                       log=work / f"{run.name}.log")
               for run, extra in runs.values() if not (run / "checkpoint").exists()]
    if any(process.wait() for process in started):
        raise SystemExit(f"a fine-tune failed; see the logs in {work}")
    return {name: run for name, (run, _) in runs.items()}


def forecast(run: Path, store: Path, output: Path, log: Path) -> Path:
    if not output.exists():
        times = [value for time in TEST_TIMES for value in ("--time", time)]
        if atmorep("infer", "--checkpoint", str(run), "--data", str(store), "-o", str(output), "--task",
                   "forecast", *times, "--lead-hours", "120", "--batch-size", "32", log=log).wait():
            raise SystemExit(f"inference failed; see {log}")
    return output


def model_scores(prediction: Path, truth: Path, train: Path, name: str) -> pd.DataFrame:
    """Level-mean scores per field, method, metric and lead of one prediction store."""
    table = score(prediction, truth, train, climatology_cache=prediction.parent / "climatology").table
    table = table[table["method"].isin(["model", "persistence", "climatology"])]
    means = table.groupby(["field", "method", "metric", "lead"])["value"].mean().reset_index()
    means["method"] = means["method"].replace({"model": name})
    return means


def jcm_rmse(forecasts: Path, truth: Path, fields: list[str]) -> pd.DataFrame:
    """jcm's latitude-weighted RMSE (mean over levels) against lead, over its starts (the truth's first time
    and every 120 h after it)."""
    other, true = xr.open_zarr(forecasts), xr.open_zarr(truth)
    lead = other["lead_hours"].values
    starts = np.concatenate([[0], np.flatnonzero(lead == JCM_EVERY)])[: len(other.time)]
    rows = []
    for field in fields:
        for hours in range(1, JCM_EVERY + 1):
            index = [s + hours for s in starts
                     if s + hours < other.sizes["time"] and lead[s + hours] == hours]
            if not index:
                continue
            error = rmse(other[field].isel(time=index), true[field].isel(time=index))  # per level
            rows.append({"field": field, "method": "jcm", "metric": "rmse", "lead": float(hours),
                         "value": float(error.mean())})
    return pd.DataFrame(rows)


def against_lead(frame: pd.DataFrame, console: Console) -> pd.DataFrame:
    """The table of RMSE (and the models' spread/skill) at :data:`LEADS`, printed per field."""
    wide = frame[frame["lead"].isin(LEADS)].pivot_table(index=["field", "lead"], columns=["metric", "method"],
                                                        values="value")
    for field in frame["field"].unique():
        part = wide.loc[field]
        table = Table(title=f"{field}: RMSE (mean over levels) and spread/skill against lead")
        spread = part["spread_skill"].columns if "spread_skill" in part else []
        columns = [("rmse", m) for m in part["rmse"].columns] + [("spread_skill", m) for m in spread]
        table.add_column("lead h")
        for metric, method in columns:
            table.add_column(f"{method} {'s/s' if metric == 'spread_skill' else 'rmse'}")
        for lead, row in part.iterrows():
            table.add_row(f"{lead:g}", *(f"{row[column]:.4g}" for column in columns))
        console.print(table)
    return wide


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("atmorep-quickstart"))
    parser.add_argument("--work", type=Path, default=Path("atmorep-rollout"))
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--passes", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root, work = args.root, args.work
    work.mkdir(parents=True, exist_ok=True)
    test, validation, train = (root / "data" / f"{name}.zarr" for name in ("test", "validation", "train"))
    runs = fine_tune(root, work, args.minutes, args.passes)
    calibrated = runs["online"] / "lead-calibrated"
    if not calibrated.exists():
        if atmorep("calibrate", "--checkpoint", str(runs["online"]), "--data", str(validation), "--task",
                   "forecast", "--lead-hours", "120", "--rollout-every-hours", "96", "--batch-size", "32",
                   log=work / "calibrate-online.log").wait():
            raise SystemExit(f"calibration failed; see {work / 'calibrate-online.log'}")
        calibrated.touch()
    jcm = work / "jcm-raw120.zarr"
    if not jcm.exists():
        if atmorep("data", "simulate", str(jcm), "--forecast-of", str(root / "raw" / "test.zarr"),
                   "--forecast-every", str(JCM_EVERY), log=work / "jcm.log").wait():
            raise SystemExit(f"the jcm forecasts failed; see {work / 'jcm.log'}")
    frames = []
    for name, run in runs.items():
        output = forecast(run, test, work / f"{run.name}-test120.zarr", work / f"{run.name}-test120.log")
        frames.append(model_scores(output, test, train, name))
    scores = pd.concat(frames)
    baselines = scores[scores["method"].isin(["persistence", "climatology"])]
    scores = pd.concat([scores[~scores["method"].isin(["persistence", "climatology"])],
                        baselines.drop_duplicates(["field", "method", "metric", "lead"]),
                        jcm_rmse(jcm, test, sorted(scores["field"].unique()))])
    scores.to_csv(work / "rollout_skill_all.csv", index=False)
    console = Console(width=160)
    against_lead(scores, console).to_csv(work / "rollout_skill.csv")
    plot(scores, work / "rollout_skill.png")
    console.print(f"wrote {work / 'rollout_skill.csv'} and {work / 'rollout_skill.png'}")


def plot(scores: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fields = sorted(scores["field"].unique())
    figure, axes = plt.subplots(2, len(fields), figsize=(5 * len(fields), 7), squeeze=False)
    for column, field in enumerate(fields):
        for row, metric in enumerate(("rmse", "spread_skill")):
            part = scores[(scores["field"] == field) & (scores["metric"] == metric)]
            for method, rows in part.groupby("method"):
                rows = rows.sort_values("lead")
                axes[row, column].plot(rows["lead"], rows["value"], label=method)
            axes[row, column].set(title=f"{field} {metric}", xlabel="lead (h)")
            if metric == "spread_skill":
                axes[row, column].axhspan(0.8, 1.2, color="grey", alpha=0.2)
    axes[0, 0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
