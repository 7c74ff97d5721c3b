"""Model correction on the default corpus: another model's 1-12 h forecasts corrected towards the truth.

The "other model" is SPEEDY with other physics (``atmorep data simulate --forecast-of``: stronger surface
drag, faster convection and shallow convection), started every 12 h from the truth's state. Steps, each
skipped when its output exists (working directory ``<root>-correct``):

1. its forecasts of the quickstart's training, validation and test periods, prepared like the truth;
2. a fine-tune of the quickstart's checkpoint (``train.init``) with the task ``correct`` in the mix
   (``data.guide``: the forecasts paired with the truth), for ``--steps`` (a step bound, so that a
   busy machine delays the result but does not change it);
3. the spread of corrections calibrated on the validation period (``atmorep calibrate --task correct
   --input``);
4. the test period corrected (``atmorep infer --task correct --input``), in windows that start one hour
   after each initialisation (leads 1-12 h), and evaluated against the truth with the raw forecast as
   the baseline (``atmorep evaluate``);
5. the RMSE per lead of the raw and corrected forecasts (area-weighted, all levels), from the stores.

    python benchmarks/model_correction.py [--root atmorep-quickstart] [--steps 1500]

Prints the evaluation's summary (per field: corrected and raw RMSE, spread/skill) and the RMSE per lead,
and writes both as CSV into ``<root>-correct/evaluation``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from rich.console import Console
from rich.table import Table

from atmorep.calibrate import CalibrationRequest, calibrate, is_calibrated
from atmorep.data.model_forecasts import LEAD, ForecastSpec, simulate_forecasts
from atmorep.data.prepare import prepare
from atmorep.evaluate.run import evaluate
from atmorep.infer.engine import infer
from atmorep.infer.request import InferenceRequest
from atmorep.io import atomic_write_text
from atmorep.quickstart import DONE, QuickstartPlan, run_config
from atmorep.train.loop import train

TASKS = "{correct: 0.5, forecast: 0.2, interpolate: 0.1, infill: 0.05, downscale: 0.05, bert: 0.1}"
EVERY_HOURS = 12  # between the other model's initialisations, and its longest lead


def forecasts(plan: QuickstartPlan, work: Path, box: tuple[int, int, int]) -> dict[str, Path]:
    """The other model's prepared forecasts of each period."""
    prepared = {}
    for period in plan.periods:
        raw, store = work / "raw" / f"{period.name}.zarr", work / "data" / f"{period.name}.zarr"
        if not raw.exists():
            simulate_forecasts(plan.raw(period), raw, ForecastSpec(every_hours=EVERY_HOURS))
        if not store.exists():
            prepare([str(raw)], store, box=box)
        prepared[period.name] = store
    return prepared


def fine_tune(plan: QuickstartPlan, work: Path, guide: dict[str, Path], steps: int) -> Path:
    run_dir = work / "runs" / "correct"
    if not (run_dir / DONE).is_file():
        init = (plan.run_dir / "checkpoint").resolve()
        config = run_config(plan, (f"train.run_dir={run_dir}", "train.max_minutes=600",
                                   f"train.max_steps={steps}", "train.optim.lr=5.0e-4",
                                   f"train.init={init}", f"train.tasks={TASKS}",
                                   f"data.guide.train=[{guide['train']}]",
                                   f"data.guide.validation=[{guide['validation']}]"))
        result = train(config, resume=(run_dir / "checkpoint").exists())
        done = {"step": result.step, "stop_reason": result.stop_reason}
        atomic_write_text(run_dir / DONE, json.dumps(done))
    return run_dir / "checkpoint"


def case_times(store: Path, window: int) -> tuple[np.datetime64, ...]:
    """One hour after every initialisation (leads 1 .. 12 h), where the window fits in the store."""
    times = xr.open_zarr(store)["time"].values
    starts = times[1::EVERY_HOURS]
    return tuple(t for t in starts if t + np.timedelta64(window - 1, "h") <= times[-1])


def rmse_by_lead(prediction: Path, truth: Path, raw: Path) -> pd.DataFrame:
    """Area-weighted RMSE over all levels of the corrected ensemble mean and of the raw forecast, per lead."""
    predicted = xr.open_zarr(prediction)
    truth_ds, raw_ds = xr.open_zarr(truth), xr.open_zarr(raw)
    valid = predicted["time"].values[:, None] + predicted["prediction_timedelta"].values[None, :]  # [I, P]
    leads = raw_ds[LEAD].sel(time=valid.ravel()).values.reshape(valid.shape)
    weights = np.cos(np.deg2rad(predicted["latitude"].values))[:, None]
    rows = []
    for name in predicted.data_vars:
        if "member" not in predicted[name].dims:
            continue
        mean = predicted[name].mean("member").values  # [I, P, L, H, W]
        levels = predicted["level"].values
        truth_values, raw_values = (
            ds[name].sel(level=levels, method="nearest").sel(time=valid.ravel()).values.reshape(mean.shape)
            for ds in (truth_ds, raw_ds))
        for lead in np.unique(leads):
            hit = leads == lead
            for label, values in (("corrected", mean), ("raw", raw_values)):
                error = (values[hit] - truth_values[hit]) ** 2 * weights  # [n, L, H, W]
                rmse = float(np.sqrt(error.sum() / (weights.sum() * error.size / weights.size)))
                rows.append({"field": name, "lead_hours": int(lead), "forecast": label, "rmse": rmse})
    return pd.DataFrame(rows).pivot_table(index=["field", "lead_hours"], columns="forecast", values="rmse")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="atmorep-quickstart")
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    plan = QuickstartPlan(root=Path(args.root))
    work = plan.root.parent / f"{plan.root.name}-correct"
    box = run_config(plan).data.box.shape
    guide = forecasts(plan, work, box)
    checkpoint = fine_tune(plan, work, guide, args.steps)
    validation, test = plan.store(plan.period("validation")), plan.store(plan.period("test"))
    request = CalibrationRequest(checkpoint, validation, ("correct",), every_hours=EVERY_HOURS,
                                 input=guide["validation"])
    if not is_calibrated(request):
        calibrate(request)
    output = work / "predictions" / "correct.zarr"
    infer(InferenceRequest(checkpoint, test, output, task="correct", input=guide["test"],
                           times=case_times(test, box[0]), rollout="mean", batch_size=16, overwrite=True))
    result = evaluate([output], test, plan.store(plan.period("train")), work / "evaluation",
                      settings={"checkpoint": str(checkpoint), "input": str(guide["test"])})
    console = Console()
    table = Table(title="model correction on the test period: RMSE against the truth")
    for column in ("field", "raw forecast", "corrected", "ratio", "spread/skill"):
        table.add_column(column)
    for row in result.summary.to_dict("records"):
        table.add_row(row["field"], f"{row['rmse_raw']:.4g}", f"{row['rmse_model']:.4g}",
                      f"{row['rmse_model'] / row['rmse_raw']:.3f}", f"{row['spread_skill']:.3g}")
    console.print(table)
    by_lead = rmse_by_lead(output, test, work / "raw" / "test.zarr")
    by_lead["ratio"] = by_lead["corrected"] / by_lead["raw"]
    console.print(by_lead.round(4).to_string())
    by_lead.to_csv(work / "evaluation" / "rmse_by_lead.csv")


if __name__ == "__main__":
    main()
