"""The one-command quickstart: the whole pipeline on the embedded default corpus.

Steps, each skipped when its output is already complete (so a re-run reuses finished work):

1. simulate independent training, validation and test periods with the jcm general circulation
   model (different seeds, and spin-ups of different length: periods on the same calendar days
   after the same spin-up from rest would share their weather, see ``docs/data.md``);
2. prepare each period into a store chunked for box sampling, with normalisation statistics;
3. draw a few batches (a sampling check that prints what the model will see);
4. train the ``tiny`` preset for a bounded wall-clock time (a finished run is marked ``done.json``
   and not trained again; an interrupted one resumes from its checkpoint);
5. calibrate the ensemble's spread on tiled predictions of the validation period, the forecast's also
   per lead of a member rollout to ``forecast_lead_hours`` (:mod:`atmorep.calibrate`; skipped when the
   checkpoint already is);
6. infer on the held-out test period, every ``case_every_hours``, all four zero-shot tasks over the
   globe: forecasts (every ``forecast_every_hours``, each member rolled out to 48 h), temporal
   interpolations, infill of a region (``infill_region``) and downscaling;
7. evaluate them against the test truth and each task's baselines (persistence, trend, the model's
   first guess, climatology of the training period; linear and cubic interpolation; a spatial fill;
   bilinear and bicubic upsampling), write the tables and a report with figures;
8. print the summary table (per task and field the model against the baselines), one
   science-check line per task and field (:func:`science_checks`) and per field the lead up to which
   the forecast beats persistence (:func:`horizon_lines`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console, Group

from atmorep.progress import command_console

if TYPE_CHECKING:  # the command line imports this module for its defaults: keep that import light
    from atmorep.config import RunConfig

log = logging.getLogger(__name__)

CONFIG = Path(__file__).resolve().parent / "configs" / "tiny.yaml"
DONE = "done.json"  # marks a finished training run


@dataclass(frozen=True)
class Period:
    """One simulated period of the default corpus."""

    name: str
    start: str
    days: float
    seed: int


@dataclass(frozen=True)
class QuickstartPlan:
    """What the quickstart makes and where.

    Attributes:
        root: working directory for data and runs.
        periods: the simulated periods (train, validation, test).
        train_minutes: wall-clock bound of the training step.
        spinup_days: simulator spin-up before the first period; each later period spins up
            ``spinup_stagger_days`` longer, so that the periods' weather is independent.
        spinup_stagger_days: the extra spin-up of each later period.
        levels: sigma levels to simulate.
        overrides: extra ``key=value`` config overrides for training.
    """

    root: Path = Path("atmorep-quickstart")
    periods: tuple[Period, ...] = (Period("train", "2000-01-01", 90.0, 1),
                                   Period("validation", "2001-01-01", 15.0, 2),
                                   Period("test", "2002-01-01", 15.0, 3))
    train_minutes: float = 15.0
    spinup_days: float = 60.0
    spinup_stagger_days: float = 30.0
    levels: tuple[float, ...] = (0.835, 0.51, 0.2)
    overrides: tuple[str, ...] = field(default_factory=tuple)
    tasks: tuple[str, ...] = ("forecast", "interpolate", "infill", "downscale")
    infill_region: tuple[float, float, float, float] = (30.0, 60.0, 0.0, 60.0)  # lat and lon range, degrees
    forecast_lead_hours: float = 48.0  # scored at every lead; past the box's 3 h by a member rollout
    rollout: str = "members"
    case_every_hours: float = 12.0
    forecast_every_hours: float = 48.0  # forecast cases: fewer, as each rolls out 16 passes of 8 members
    calibration_every_hours: float = 24.0
    rollout_calibration_every_hours: float = 96.0  # the fit of the spread per lead, on the validation period
    batch_size: int = 16

    def with_days(self, train_days: float, eval_days: float) -> QuickstartPlan:
        """This plan with a training period of ``train_days`` and every other period of ``eval_days``."""
        periods = tuple(replace(p, days=train_days if p.name == "train" else eval_days) for p in self.periods)
        return replace(self, periods=periods)

    def raw(self, period: Period) -> Path:
        return self.root / "raw" / f"{period.name}.zarr"

    def store(self, period: Period) -> Path:
        return self.root / "data" / f"{period.name}.zarr"

    @property
    def run_dir(self) -> Path:
        return self.root / "runs" / "tiny"

    def prediction(self, task: str) -> Path:
        return self.root / "predictions" / f"{task}.zarr"

    @property
    def evaluation_dir(self) -> Path:
        return self.root / "evaluation"

    def period(self, name: str) -> Period:
        return next(p for p in self.periods if p.name == name)


def run_config(plan: QuickstartPlan, extra: Sequence[str] = ()) -> RunConfig:
    """The tiny config pointed at the quickstart's stores, bounded in time."""
    from atmorep.config import load_config

    stores = {p.name: plan.store(p) for p in plan.periods}
    overrides = [f"data.train=[{stores['train']}]", f"data.validation=[{stores['validation']}]",
                 f"train.run_dir={plan.run_dir}", f"train.max_minutes={plan.train_minutes}",
                 *plan.overrides, *extra]
    return load_config(CONFIG, overrides)


def simulate_periods(plan: QuickstartPlan) -> None:
    from atmorep.data.simulate import SimulationSpec, simulate

    for number, period in enumerate(plan.periods):
        spinup = plan.spinup_days + number * plan.spinup_stagger_days
        spec = SimulationSpec(start=period.start, days=period.days, seed=period.seed, levels=plan.levels,
                              spinup_days=spinup)
        simulate(spec, plan.raw(period))


def prepare_periods(plan: QuickstartPlan, config: RunConfig) -> None:
    from atmorep.data.prepare import prepare
    from atmorep.data.store import Store

    for period in plan.periods:
        out = plan.store(period)
        if out.exists():
            Store(out)  # raises if it is not a complete store
            log.info("store %s exists, reusing it", out)
            continue
        prepare([str(plan.raw(period))], out, box=config.data.box.shape)


def train_once(plan: QuickstartPlan, config: RunConfig, console: Console) -> None:
    """Train unless a finished run is marked; resume an interrupted one."""
    from atmorep.io import atomic_write_text
    from atmorep.train.command import summarise_result
    from atmorep.train.loop import train

    marker = plan.run_dir / DONE
    if marker.is_file():
        console.print(f"training finished before ({marker}): {marker.read_text().strip()}")
        return
    result = train(config, resume=(plan.run_dir / "checkpoint").exists())
    console.print(summarise_result(result))
    atomic_write_text(marker, json.dumps({"step": result.step, "stop_reason": result.stop_reason}))


def run(plan: QuickstartPlan, console: Console | None = None) -> None:
    """Run every step of the quickstart, reusing finished ones."""
    from atmorep.data.demo import sample_demo

    console = console or command_console()
    console.rule("1/8 simulate the default corpus")
    simulate_periods(plan)
    console.rule("2/8 prepare stores")
    config = run_config(plan)
    prepare_periods(plan, config)
    console.rule("3/8 sample boxes")
    box = config.data.box.shape
    console.print(sample_demo([str(plan.store(plan.periods[0]))], [f.name for f in config.fields], box,
                              config.data.boxes_per_window, 2, 0, 0))
    console.rule("4/8 train the tiny model")
    train_once(plan, config, console)
    console.rule("5/8 calibrate the ensemble's spread on the validation period")
    calibrate_once(plan, console)
    console.rule("6/8 infer on the test period")
    predictions = infer_test_period(plan, console)
    console.rule("7/8 evaluate against the baselines")
    result = evaluate_predictions(plan, predictions, console)
    console.rule("8/8 summary")
    console.print(summary(result))


def calibrate_once(plan: QuickstartPlan, console: Console) -> None:
    """Calibrate the run's checkpoint on the validation period with the plan's tasks, unless it is."""
    from atmorep.calibrate import CalibrationRequest, calibrate, is_calibrated
    from atmorep.train.calibration import task_kinds

    tasks = tuple(task for task in plan.tasks if task in task_kinds())
    if not tasks:
        console.print("no zero-shot task to calibrate the spread for")
        return
    request = CalibrationRequest(plan.run_dir, plan.store(plan.period("validation")), tasks,
                                 every_hours=plan.calibration_every_hours, infill_region=plan.infill_region,
                                 lead_hours=plan.forecast_lead_hours if "forecast" in tasks else None,
                                 rollout_every_hours=plan.rollout_calibration_every_hours,
                                 batch_size=plan.batch_size)
    if is_calibrated(request):
        console.print("the checkpoint's spread is calibrated already")
        return
    result = calibrate(request)
    for task, ratios in result.before.items():
        described = ", ".join(f"{name} {ratio:.3g}" for name, ratio in ratios.items())
        console.print(f"{task}: spread/skill on the validation period before calibration: {described}")


def case_times(plan: QuickstartPlan, task: str, config: RunConfig) -> tuple:
    """Reference times of the test period whose windows and verifying truth lie inside its store."""
    from atmorep.infer.request import case_times as times_in_store
    from atmorep.tasks import get_task

    every = plan.forecast_every_hours if get_task(task).rolls_out else plan.case_every_hours
    return times_in_store(plan.store(plan.period("test")), task, config, every, plan.forecast_lead_hours)


def infer_test_period(plan: QuickstartPlan, console: Console) -> dict[str, Path]:
    """Predict the test period with every task of the plan; reuse predictions of the same checkpoint."""
    from atmorep.checkpoint import resolve_checkpoint
    from atmorep.infer.engine import infer
    from atmorep.infer.predictor import BoxPredictor
    from atmorep.infer.request import InferenceRequest
    from atmorep.prediction_store import open_prediction
    from atmorep.progress import progress_bar
    from atmorep.tasks import get_task

    checkpoint = resolve_checkpoint(plan.run_dir)
    predictor = BoxPredictor.from_checkpoint(checkpoint)
    outputs = {}
    for task in plan.tasks:
        output = plan.prediction(task)
        outputs[task] = output
        if output.exists() and _same_checkpoint(open_prediction(output).attrs, checkpoint):
            console.print(f"{task}: reusing {output}")
            continue
        request = InferenceRequest(checkpoint, plan.store(plan.period("test")), output, task=task,
                                   times=case_times(plan, task, predictor.config),
                                   **get_task(task).pick({"lead_hours": plan.forecast_lead_hours,
                                                          "infill_region": plan.infill_region}),
                                   rollout=plan.rollout, batch_size=plan.batch_size, overwrite=True)
        with progress_bar(task, console) as advance:
            result = infer(request, progress=advance, predictor=predictor)
        console.print(f"{task}: {result.cases} cases, {result.tiles} tiles in {result.seconds:.1f} s "
                      f"({result.tiles_per_second:.1f} tiles/s)")
    return outputs


def _same_checkpoint(attrs: dict, checkpoint: Path) -> bool:
    from atmorep.checkpoint import calibration_label, read_meta

    meta = read_meta(checkpoint)
    return (attrs.get("checkpoint_step") == meta.get("step")
            and attrs.get("checkpoint_calibration", "") == calibration_label(meta))


def evaluate_predictions(plan: QuickstartPlan, predictions: dict[str, Path], console: Console):
    """Score every prediction, write the tables and the report (an ``EvaluationResult``)."""
    from atmorep.evaluate.run import evaluate

    result = evaluate(list(predictions.values()), plan.store(plan.period("test")),
                      plan.store(plan.period("train")), plan.evaluation_dir,
                      settings={"checkpoint": str(plan.run_dir), "train minutes": plan.train_minutes,
                                "test period": plan.period("test").start})
    console.print(f"report: {result.report}")
    return result


def summary(result) -> Group:
    """The summary tables (each field: the model against the baselines), the science checks and, for a
    rolled-out forecast, the lead up to which it beats persistence."""
    from atmorep.evaluate.run import summary_tables

    horizon = horizon_lines(result.scores["forecast"].table) if "forecast" in result.scores else []
    return Group(summary_tables(result.summary), *science_checks(result.summary), *horizon)


def horizon_lines(table, reference: str = "persistence") -> list[str]:
    """Per field of a forecast's scores: the first lead at which the model's RMSE (mean over levels) is no
    longer below ``reference``'s, or that it stays below at every lead scored."""
    rmse = table[table["metric"] == "rmse"].groupby(["field", "method", "lead"])["value"].mean().sort_index()
    lines = []
    for name in table["field"].unique():
        if (name, reference) not in rmse.index.droplevel("lead"):
            continue
        model, base = rmse[(name, "model")], rmse[(name, reference)]
        leads = model.index.intersection(base.index).sort_values()
        behind = [lead for lead in leads if not model[lead] < base[lead]]
        worst = max(model[lead] / base[lead] for lead in leads)
        if behind:
            first = list(leads).index(behind[0])
            ahead = f"up to {leads[first - 1]:g} h" if first else "at no lead"
            lines.append(f"forecast {name}: beats {reference} {ahead}, not at {behind[0]:g} h "
                         f"(of {leads[-1]:g} h scored; worst {worst:.3g}x)")
        else:
            lines.append(f"forecast {name}: beats {reference} at every lead to {leads[-1]:g} h "
                         f"(worst {worst:.3g}x)")
    return lines


# The bars of the quickstart: per task, (reference method, largest ratio of the model's RMSE to the
# reference's); "best" is the task's best baseline.
BARS: dict[str, tuple[tuple[str, float], ...]] = {
    "forecast": (("persistence", 0.5), ("trend", 1.0)),
    "interpolate": (("linear", 0.5), ("cubic", 1.0)),
    "infill": (("best", 1.0),),
    "downscale": (("best", 1.0),),
}
SPREAD_SKILL = (0.8, 1.2)
BLOCKINESS = 1.1


def _check(passed: bool) -> str:
    return "ok" if passed else "MISSED"


def science_checks(frame) -> list[str]:
    """One line per task and field: the model's RMSE against each bar, its spread/skill and blockiness."""
    import numpy as np

    lines = []
    for row in frame.to_dict("records"):
        task = str(row["task"]).split("-")[0]
        if task not in BARS:
            continue
        parts = []
        for reference, bar in BARS[task]:
            name = row.get("best_baseline") if reference == "best" else reference
            base = row.get(f"rmse_{name}", np.nan) if isinstance(name, str) else np.nan
            ratio = row["rmse_model"] / base if base > 0 else np.nan
            met = ratio < bar if bar == 1.0 else ratio <= bar  # "below" the reference, or "at most"
            parts.append(f"{ratio:.3g}x {name} (bar {bar:g}x) {_check(met)}")
        low, high = SPREAD_SKILL
        spread = row.get("spread_skill", np.nan)
        parts.append(f"spread/skill {spread:.3g} in [{low}, {high}] {_check(low <= spread <= high)}")
        blocks = row.get("blockiness", np.nan)
        if np.isfinite(blocks):
            parts.append(f"blockiness {blocks:.3g} (bar {BLOCKINESS}) {_check(blocks <= BLOCKINESS)}")
        lines.append(f"{row['task']} {row['field']} (lead {row['lead']}): RMSE {row['rmse_model']:.4g} = "
                     + "; ".join(parts))
    return lines
