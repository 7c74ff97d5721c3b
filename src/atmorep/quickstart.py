"""The one-command quickstart: the whole pipeline on the embedded default corpus.

Steps, each skipped when its output is already complete (so a re-run reuses finished work):

1. simulate independent training, validation and test periods with the jcm general circulation
   model (different start dates and seeds: independent trajectories);
2. prepare each period into a store chunked for box sampling, with normalisation statistics;
3. draw a few batches (a sampling check that prints what the model will see);
4. train the ``tiny`` preset for a bounded wall-clock time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from atmorep.config import RunConfig, load_config

log = logging.getLogger(__name__)

CONFIG = Path(__file__).resolve().parent / "configs" / "tiny.yaml"


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
        spinup_days: simulator spin-up before each period.
        levels: sigma levels to simulate.
        overrides: extra ``key=value`` config overrides for training.
    """

    root: Path = Path("atmorep-quickstart")
    periods: tuple[Period, ...] = (Period("train", "2000-01-01", 90.0, 1),
                                   Period("validation", "2001-01-01", 15.0, 2),
                                   Period("test", "2002-01-01", 15.0, 3))
    train_minutes: float = 15.0
    spinup_days: float = 20.0
    levels: tuple[float, ...] = (0.835, 0.51, 0.2)
    overrides: tuple[str, ...] = field(default_factory=tuple)

    def raw(self, period: Period) -> Path:
        return self.root / "raw" / f"{period.name}.zarr"

    def store(self, period: Period) -> Path:
        return self.root / "data" / f"{period.name}.zarr"

    @property
    def run_dir(self) -> Path:
        return self.root / "runs" / "tiny"


def run_config(plan: QuickstartPlan, extra: Sequence[str] = ()) -> RunConfig:
    """The tiny config pointed at the quickstart's stores, bounded in time."""
    stores = {p.name: plan.store(p) for p in plan.periods}
    overrides = [f"data.train=[{stores['train']}]", f"data.validation=[{stores['validation']}]",
                 f"train.run_dir={plan.run_dir}", f"train.max_minutes={plan.train_minutes}",
                 *plan.overrides, *extra]
    return load_config(CONFIG, overrides)


def simulate_periods(plan: QuickstartPlan) -> None:
    from atmorep.data.simulate import SimulationSpec, simulate

    for period in plan.periods:
        spec = SimulationSpec(start=period.start, days=period.days, seed=period.seed, levels=plan.levels,
                              spinup_days=plan.spinup_days)
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


def run(plan: QuickstartPlan, console: Console | None = None) -> None:
    """Run every step of the quickstart, reusing finished ones."""
    from atmorep.data.demo import sample_demo
    from atmorep.train.loop import train

    console = console or Console()
    console.rule("1/4 simulate the default corpus")
    simulate_periods(plan)
    console.rule("2/4 prepare stores")
    config = run_config(plan)
    prepare_periods(plan, config)
    console.rule("3/4 sample boxes")
    box = config.data.box.shape
    console.print(sample_demo([str(plan.store(plan.periods[0]))], [f.name for f in config.fields], box,
                              config.data.boxes_per_window, 2, 0, 0))
    console.rule("4/4 train the tiny model")
    result = train(config, resume=(plan.run_dir / "checkpoint").exists())
    console.print(result)
