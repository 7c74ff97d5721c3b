"""Counterfactuals against a known forcing: does another year or season move the prediction as the truth?

On the default corpus every year has the same forcing, so alpha's year has nothing to encode. Here the
"years" differ by a known forcing: forcing step ``i`` (0..7) is the calendar year ``2000 + i *
--years-apart``, and its prescribed sea-surface temperature is raised by ``i * --kelvin-per-step``
(``atmorep data simulate --sst-offset``). Steps, each skipped when its output exists (working
directory ``--root``, default ``atmorep-counterfactual``):

1. simulate a January and a July period of every year (seed = year, 30 days of spin-up from rest);
   training steps 0-2 and 4-6, validation January of step 7, test step 3 (held out, between training
   years);
2. prepare each period; train the tiny model on the twelve training periods, with infill regions up to
   the whole box (``train.task_options``), for ``--steps`` steps;
3. infill a band of latitudes (``REGIONS``, all longitudes; then the whole globe, where nothing is
   visible and the prediction depends on alpha alone) of the test periods, one case a day, factual
   and with the overrides ``year=`` the test year minus and plus ``--steps-back`` forcing steps, and
   ``day_of_year+=181`` (January state, July conditions); compare each counterfactual with the factual
   store (``atmorep evaluate --factual``);
4. the truth's response over the same points: per forcing step, the least-squares slope of the band's
   mean over the January periods of all years (so ``k`` steps move it by ``k * slope``), and for the
   season the test year's July mean minus its January mean.

    python benchmarks/counterfactual.py [--root atmorep-counterfactual] [--steps 2500] [--years-apart 1]

Prints, per region, override, field and level, the model's mean shift, the truth's and their ratio (1 is
the full known response, 0 none); and, for the pattern, the regression slope of the model's zonal-mean
shift on the truth's across latitudes and their correlation (a season moves the hemispheres in
opposite directions, which a mean hides). Writes it as ``<root>/evaluation/response.csv``.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
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

TRAIN_STEPS, TEST_STEP, VALIDATION_STEP = (0, 1, 2, 4, 5, 6), 3, 7  # "years" counted in forcing steps
MONTHS = ("01", "07")
DAYS, VALIDATION_DAYS, SPINUP_DAYS = 21.0, 7.0, 30.0
LEVELS = (0.835, 0.51, 0.2)
# hidden regions (lat_min, lat_max, lon_min, lon_max): a band wider than a box with context at its edges,
# and the whole globe (nothing visible: the prediction depends on alpha alone)
REGIONS = {"band": (-45.0, 45.0, 0.0, 360.0), "globe": (-90.0, 90.0, 0.0, 360.0)}
TASKS = "{forecast: 0.3, interpolate: 0.2, infill: 0.3, downscale: 0.1, bert: 0.1}"
SEASON_SHIFT = "day_of_year+=181"  # 1 January + 181 days = 1 July (in a year that is no leap year)


@dataclass(frozen=True)
class Years:
    """Forcing step ``i`` is the year ``2000 + apart * i``, its SST raised by ``i * kelvin`` K."""

    apart: int = 1
    kelvin: float = 1.0

    def year(self, step: int) -> int:
        return 2000 + self.apart * step

    @property
    def train(self) -> tuple[int, ...]:
        return tuple(self.year(step) for step in TRAIN_STEPS)

    @property
    def test(self) -> int:
        return self.year(TEST_STEP)

    @property
    def validation(self) -> int:
        return self.year(VALIDATION_STEP)

    def offset(self, year: int) -> float:
        return (year - 2000) / self.apart * self.kelvin


def period_name(year: int, month: str) -> str:
    return f"{year}-{month}"


def corpus(root: Path, years: Years, box: tuple[int, int, int]) -> dict[str, Path]:
    """The prepared store of every period, simulated first where missing."""
    periods = [(y, m, DAYS) for y in (years.test, *years.train) for m in MONTHS]
    periods.append((years.validation, "01", VALIDATION_DAYS))
    stores = {}
    for year, month, days in periods:
        name = period_name(year, month)
        raw, store = root / "raw" / f"{name}.zarr", root / "data" / f"{name}.zarr"
        spec = SimulationSpec(start=f"{year}-{month}-01", days=days, spinup_days=SPINUP_DAYS, seed=year,
                              levels=LEVELS, chunk_days=7.0, sst_offset=years.offset(year))
        simulate(spec, raw, progress=False)
        if not store.exists():
            prepare([str(raw)], store, fields=["t", "u", "v"], box=box)
        stores[name] = store
    return stores


def trained(root: Path, stores: dict[str, Path], years: Years, steps: int) -> Path:
    run_dir = root / "runs" / "tiny"
    if not (run_dir / DONE).is_file():
        train_stores = ",".join(str(stores[period_name(y, m)]) for y in years.train for m in MONTHS)
        config = load_config(CONFIG, [f"data.train=[{train_stores}]",
                                      f"data.validation=[{stores[period_name(years.validation, '01')]}]",
                                      f"train.run_dir={run_dir}", "train.max_minutes=600",
                                      f"train.max_steps={steps}", f"train.tasks={TASKS}",
                                      "train.task_options={infill: {max_fraction: 1.0}}"])
        result = train(config, resume=(run_dir / "checkpoint").exists())
        done = {"step": result.step, "stop_reason": result.stop_reason}
        atomic_write_text(run_dir / DONE, json.dumps(done))
    return run_dir / "checkpoint"


def infill(checkpoint: Path, store: Path, output: Path, window: int, region: tuple[float, ...],
           alpha: tuple[str, ...] = ()) -> Path:
    if not output.exists():
        times = xr.open_zarr(store)["time"].values
        cases = tuple(t for t in times[::24] if t + np.timedelta64(window - 1, "h") <= times[-1])
        infer(InferenceRequest(checkpoint, store, output, task="infill", infill_region=region, times=cases,
                               rollout="mean", batch_size=16, alpha=alpha))
    return output


def zonal_means(store: Path, region: tuple[float, ...]) -> tuple[xr.Dataset, xr.DataArray]:
    """Mean of each field and level over the period and the region's points of each latitude, and the
    area weight of each latitude (``cos(latitude)`` times its number of points in the region)."""
    data = xr.open_zarr(store)[["t", "u", "v"]]
    inside = region_points(data["latitude"].values, data["longitude"].values, region)  # [H, W]
    mask = xr.DataArray(inside, dims=("latitude", "longitude"))
    weights = np.cos(np.deg2rad(data["latitude"])) * mask.sum("longitude")
    return data.where(mask).mean(("time", "longitude")).compute(), weights


def area_mean(zonal: xr.Dataset | xr.DataArray, weights: xr.DataArray):
    return zonal.fillna(0.0).weighted(weights).mean("latitude")


def truth_response(stores: dict[str, Path], years: Years,
                   region: tuple[float, ...]) -> tuple[xr.Dataset, xr.Dataset, xr.DataArray]:
    """Zonal means of the region per forcing step (the slope over the January periods of all years)
    and of the season (July minus January of the test year), with the latitudes' area weights."""
    steps = np.array(sorted((*TRAIN_STEPS, TEST_STEP)), dtype=np.float64)
    januaries = [zonal_means(stores[period_name(years.year(int(i)), "01")], region) for i in steps]
    weights = januaries[0][1]
    stacked = xr.concat([zonal for zonal, _ in januaries], dim="step").assign_coords(step=steps)
    slope = stacked.polyfit("step", 1).sel(degree=1, drop=True)
    slope = slope.rename({f"{name}_polyfit_coefficients": name for name in ("t", "u", "v")})
    july, january = (zonal_means(stores[period_name(years.test, month)], region)[0] for month in ("07", "01"))
    return slope, july - january, weights


def predicted_zonal_shift(counter: Path, factual: Path) -> xr.Dataset:
    """Counterfactual minus factual ensemble mean over the hidden points, per level and latitude."""
    ours, theirs = xr.open_zarr(counter), xr.open_zarr(factual)
    difference = ours[["t", "u", "v"]].mean("member") - theirs[["t", "u", "v"]].mean("member")
    hidden = theirs["target_mask"].astype(bool)
    return difference.where(hidden).mean(("time", "prediction_timedelta", "longitude")).compute()


def pattern_fit(model: xr.DataArray, truth: xr.DataArray, weights: xr.DataArray) -> tuple[float, float]:
    """Area-weighted regression slope (through zero) of the model's zonal shift on the truth's, and
    their correlation across latitudes."""
    valid = np.isfinite(model.values) & np.isfinite(truth.values) & (weights.values > 0)
    m, t, w = model.values[valid], truth.values[valid], weights.values[valid]
    slope = float((w * m * t).sum() / (w * t * t).sum())
    mc, tc = m - np.average(m, weights=w), t - np.average(t, weights=w)
    correlation = float((w * mc * tc).sum() / np.sqrt((w * mc * mc).sum() * (w * tc * tc).sum()))
    return slope, correlation


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


def responses(root: Path, name: str, region: tuple[float, ...], stores: dict[str, Path], years: Years,
              checkpoint: Path, steps_back: int, window: int) -> pd.DataFrame:
    """The model's and the truth's shift per override, field and level over the region's hidden points."""
    january, july = stores[period_name(years.test, "01")], stores[period_name(years.test, "07")]
    predictions = root / "predictions" / name
    factual = infill(checkpoint, january, predictions / "january.zarr", window, region)
    infill(checkpoint, july, predictions / "july.zarr", window, region)  # the season's factual reference
    slope, season, weights = truth_response(stores, years, region)
    experiments = [(f"year={years.year(TEST_STEP - steps_back)}", -steps_back * slope),
                   (f"year={years.year(TEST_STEP + steps_back)}", steps_back * slope), (SEASON_SHIFT, season)]
    rows = []
    for override, truth in experiments:
        label = override.replace("=", "").replace("+", "plus")
        output = predictions / f"january-{label}.zarr"
        counter = infill(checkpoint, january, output, window, region, (override,))
        shifts = model_shift(counter, factual, root / "evaluation" / name / label)
        zonal = predicted_zonal_shift(counter, factual)
        for (field, level), shift in shifts.items():
            known_zonal = truth[field].sel(level=level, method="nearest")
            known = float(area_mean(known_zonal, weights))
            fit, correlation = pattern_fit(zonal[field].sel(level=level), known_zonal, weights)
            rows.append({"region": name, "override": override, "field": field, "level": level,
                         "model_shift": shift, "truth_shift": known,
                         "ratio": shift / known if known else np.nan,
                         "zonal_slope": fit, "zonal_correlation": correlation})
    # the model's own season difference given the July states (not a counterfactual: other cases)
    factual_season = predicted_band_means(predictions / "july.zarr") - predicted_band_means(factual)
    frame = pd.DataFrame(rows)
    frame["factual_july_minus_january"] = [
        float(factual_season[r.field].sel(level=r.level)) if r.override == SEASON_SHIFT else np.nan
        for r in frame.itertuples()]
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="atmorep-counterfactual")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--kelvin-per-step", type=float, default=1.0)
    parser.add_argument("--years-apart", type=int, default=1, help="calendar years between forcing steps")
    parser.add_argument("--steps-back", type=int, default=3, help="forcing steps of the year overrides")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root, years = Path(args.root), Years(args.years_apart, args.kelvin_per_step)
    box = load_config(CONFIG).data.box.shape
    stores = corpus(root, years, box)
    checkpoint = trained(root, stores, years, args.steps)
    frame = pd.concat([responses(root, name, region, stores, years, checkpoint, args.steps_back, box[0])
                       for name, region in REGIONS.items()])
    frame.to_csv(root / "evaluation" / "response.csv", index=False)
    table = Table(title=f"counterfactual response over the hidden points, test year {years.test}")
    for column in ("region", "override", "field", "level", "model shift", "truth shift", "ratio",
                   "zonal slope", "zonal corr."):
        table.add_column(column)
    for r in frame.itertuples():
        table.add_row(r.region, r.override, r.field, f"{r.level:g}", f"{r.model_shift:+.3f}",
                      f"{r.truth_shift:+.3f}", f"{r.ratio:.2f}", f"{r.zonal_slope:.2f}",
                      f"{r.zonal_correlation:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
