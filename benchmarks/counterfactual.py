"""Counterfactuals against a known forcing: does another year or season move the prediction as the truth?

On the default corpus every year has the same forcing, so alpha's year has nothing to encode. Here the
"years" differ by a known forcing: the prescribed sea-surface temperature of year ``Y`` is raised by
``(Y - 2000) * --kelvin-per-year`` (``atmorep data simulate --sst-offset``). Steps, each skipped when its
output exists (working directory ``--root``, default ``atmorep-counterfactual``):

1. simulate a January and a July period of every year (seed = year, 30 days of spin-up from rest);
   training years 2000-2002 and 2004-2006, validation January 2007, test year 2003 (held out, between
   training years);
2. prepare each period; train the tiny model on the twelve training periods, with infill regions up to
   the whole box (``train.task_options``), for ``--steps`` steps;
3. infill a band of latitudes (``REGION``, all longitudes) of the test periods, one case a day, factual
   and with the overrides ``year=2003-k``, ``year=2003+k`` and ``day_of_year+=181`` (January state, July
   conditions); compare each counterfactual with the factual store (``atmorep evaluate --factual``);
4. the truth's response over the same points: per year of forcing, the least-squares slope of the band's
   mean over the January periods of all years (so ``k`` years of forcing move it by ``k * slope``), and
   for the season the July 2003 mean minus the January 2003 mean.

    python benchmarks/counterfactual.py [--root atmorep-counterfactual] [--steps 2500] [--years-back 3]

Prints, per field and level, the model's shift, the truth's shift and their ratio (1 is the full known
response, 0 none), and writes it as ``<root>/evaluation/response.csv``.
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

from atmorep.config import load_config
from atmorep.data.prepare import prepare
from atmorep.data.simulate import SimulationSpec, simulate
from atmorep.evaluate.counterfactual import compare_counterfactual
from atmorep.infer.engine import infer
from atmorep.infer.request import InferenceRequest
from atmorep.io import atomic_write_text
from atmorep.quickstart import CONFIG, DONE
from atmorep.tasks.infill import region_points
from atmorep.train.loop import train

TRAIN_YEARS = (2000, 2001, 2002, 2004, 2005, 2006)
TEST_YEAR, VALIDATION_YEAR = 2003, 2007
MONTHS = ("01", "07")
DAYS, VALIDATION_DAYS, SPINUP_DAYS = 21.0, 7.0, 30.0
LEVELS = (0.835, 0.51, 0.2)
REGION = (-45.0, 45.0, 0.0, 360.0)  # lat_min, lat_max, lon_min, lon_max: wider than a box, all longitudes
TASKS = "{forecast: 0.3, interpolate: 0.2, infill: 0.3, downscale: 0.1, bert: 0.1}"
SEASON_SHIFT = "day_of_year+=181"  # 1 January + 181 days = 1 July (2003 is no leap year)


def period_name(year: int, month: str) -> str:
    return f"{year}-{month}"


def corpus(root: Path, kelvin_per_year: float, box: tuple[int, int, int]) -> dict[str, Path]:
    """The prepared store of every period, simulated first where missing."""
    periods = [(y, m, DAYS) for y in (TEST_YEAR, *TRAIN_YEARS) for m in MONTHS]
    periods.append((VALIDATION_YEAR, "01", VALIDATION_DAYS))
    stores = {}
    for year, month, days in periods:
        name = period_name(year, month)
        raw, store = root / "raw" / f"{name}.zarr", root / "data" / f"{name}.zarr"
        spec = SimulationSpec(start=f"{year}-{month}-01", days=days, spinup_days=SPINUP_DAYS, seed=year,
                              levels=LEVELS, chunk_days=7.0, sst_offset=(year - 2000) * kelvin_per_year)
        simulate(spec, raw, progress=False)
        if not store.exists():
            prepare([str(raw)], store, fields=["t", "u", "v"], box=box)
        stores[name] = store
    return stores


def trained(root: Path, stores: dict[str, Path], steps: int) -> Path:
    run_dir = root / "runs" / "tiny"
    if not (run_dir / DONE).is_file():
        train_stores = ",".join(str(stores[period_name(y, m)]) for y in TRAIN_YEARS for m in MONTHS)
        config = load_config(CONFIG, [f"data.train=[{train_stores}]",
                                      f"data.validation=[{stores[period_name(VALIDATION_YEAR, '01')]}]",
                                      f"train.run_dir={run_dir}", "train.max_minutes=600",
                                      f"train.max_steps={steps}", f"train.tasks={TASKS}",
                                      "train.task_options={infill: {max_fraction: 1.0}}"])
        result = train(config, resume=(run_dir / "checkpoint").exists())
        done = {"step": result.step, "stop_reason": result.stop_reason}
        atomic_write_text(run_dir / DONE, json.dumps(done))
    return run_dir / "checkpoint"


def infill(checkpoint: Path, store: Path, output: Path, window: int, alpha: tuple[str, ...] = ()) -> Path:
    if not output.exists():
        times = xr.open_zarr(store)["time"].values
        cases = tuple(t for t in times[::24] if t + np.timedelta64(window - 1, "h") <= times[-1])
        infer(InferenceRequest(checkpoint, store, output, task="infill", infill_region=REGION, times=cases,
                               rollout="mean", batch_size=16, alpha=alpha))
    return output


def band_means(store: Path) -> xr.Dataset:
    """Area-weighted mean of each field and level over ``REGION`` and the whole period."""
    data = xr.open_zarr(store)[["t", "u", "v"]]
    inside = region_points(data["latitude"].values, data["longitude"].values, REGION)  # [H, W]
    weights = xr.DataArray(np.cos(np.deg2rad(data["latitude"].values))[:, None] * inside,
                           dims=("latitude", "longitude"))
    return data.weighted(weights).mean(("time", "latitude", "longitude")).compute()


def truth_response(stores: dict[str, Path]) -> tuple[xr.Dataset, xr.Dataset]:
    """Per year of forcing: the slope of the January band means over all years; and July minus January."""
    years = np.array(sorted((*TRAIN_YEARS, TEST_YEAR)), dtype=np.float64)
    januaries = xr.concat([band_means(stores[period_name(int(y), "01")]) for y in years], dim="year")
    januaries = januaries.assign_coords(year=years)
    slope = januaries.polyfit("year", 1).sel(degree=1, drop=True)
    slope = slope.rename({f"{name}_polyfit_coefficients": name for name in ("t", "u", "v")})
    july, january = (band_means(stores[period_name(TEST_YEAR, month)]) for month in ("07", "01"))
    season = july - january
    return slope, season


def predicted_band_means(prediction: Path) -> xr.Dataset:
    """Area-weighted mean of the ensemble mean over the hidden points of every case and lead."""
    data = xr.open_zarr(prediction)
    weights = np.cos(np.deg2rad(data["latitude"])) * data["target_mask"].astype(np.float64)
    mean = data[["t", "u", "v"]].mean("member")
    return mean.weighted(weights).mean(("time", "prediction_timedelta", "latitude", "longitude")).compute()


def model_shift(counter: Path, factual: Path, output: Path) -> pd.DataFrame:
    """Mean shift per field and level over the hidden band, all leads and cases."""
    table = compare_counterfactual(counter, factual, output).table
    return table.groupby(["field", "level"])["shift"].mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="atmorep-counterfactual")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--kelvin-per-year", type=float, default=1.0)
    parser.add_argument("--years-back", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = Path(args.root)
    box = load_config(CONFIG).data.box.shape
    stores = corpus(root, args.kelvin_per_year, box)
    checkpoint = trained(root, stores, args.steps)
    january, july = stores[period_name(TEST_YEAR, "01")], stores[period_name(TEST_YEAR, "07")]
    predictions = root / "predictions"
    factual = infill(checkpoint, january, predictions / "january.zarr", box[0])
    infill(checkpoint, july, predictions / "july.zarr", box[0])  # the season's factual reference
    k = args.years_back
    slope, season = truth_response(stores)
    experiments = [(f"year={TEST_YEAR - k}", -k * slope), (f"year={TEST_YEAR + k}", k * slope),
                   (SEASON_SHIFT, season)]
    rows = []
    for override, truth in experiments:
        name = override.replace("=", "").replace("+", "plus")
        counter = infill(checkpoint, january, predictions / f"january-{name}.zarr", box[0], (override,))
        shifts = model_shift(counter, factual, root / "evaluation" / name)
        for (field, level), shift in shifts.items():
            known = float(truth[field].sel(level=level, method="nearest"))
            rows.append({"override": override, "field": field, "level": level, "model_shift": shift,
                         "truth_shift": known, "ratio": shift / known if known else np.nan})
    # the model's own season difference given the July states (not a counterfactual: other cases)
    factual_season = predicted_band_means(predictions / "july.zarr") - predicted_band_means(factual)
    frame = pd.DataFrame(rows)
    frame["factual_july_minus_january"] = [
        float(factual_season[r.field].sel(level=r.level)) if r.override == SEASON_SHIFT else np.nan
        for r in frame.itertuples()]
    frame.to_csv(root / "evaluation" / "response.csv", index=False)
    table = Table(title=f"counterfactual response over the hidden band {REGION}, test year {TEST_YEAR}")
    for column in ("override", "field", "level", "model shift", "truth shift", "ratio"):
        table.add_column(column)
    for r in frame.itertuples():
        table.add_row(r.override, r.field, f"{r.level:g}", f"{r.model_shift:+.3f}", f"{r.truth_shift:+.3f}",
                      f"{r.ratio:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
