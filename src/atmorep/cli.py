"""The ``atmorep`` command line: the only place that parses arguments.

Bad input (any :class:`atmorep.errors.AtmorepError`, missing files) is reported on one line on
stderr with exit status 2 and no traceback; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
import time as time_module
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.logging import RichHandler

from atmorep.errors import AtmorepError
from atmorep.progress import command_console
from atmorep.quickstart import QuickstartPlan

app = typer.Typer(
    help="AtmoRep: a stochastic transformer model of atmospheric dynamics.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Make, prepare, inspect and sample data.", no_args_is_help=True)
model_app = typer.Typer(help="Inspect models.", no_args_is_help=True)
hybrid_app = typer.Typer(help="Hybrid physics-ML models: a differentiable core plus a learned correction.",
                         no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(model_app, name="model")
app.add_typer(hybrid_app, name="hybrid")
distance_app = typer.Typer(help="A learned distance between atmospheric states (AtmoDist).",
                           no_args_is_help=True)
app.add_typer(distance_app, name="distance")

err_console = command_console(stderr=True)
console = command_console()
_state = {"debug": False}


@app.callback()
def main(
    debug: Annotated[bool, typer.Option(help="Show tracebacks of errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
    )
    for noisy in ("jax", "jcm", "absl", "numcodecs", "fsspec", "asyncio", "matplotlib", "cfgrib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # stores are written with consolidated metadata on purpose (one read to open them)
    warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part",
                            category=UserWarning)


def friendly_errors(command):
    """Turn user-facing errors into one line on stderr and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (AtmorepError, FileNotFoundError, FileExistsError, PermissionError) as error:
            if _state["debug"]:
                raise
            err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


def _triple(text: str, name: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise AtmorepError(
            f"--{name} must be three positive integers 'time,latitude,longitude', got '{text}'"
        )
    return values  # type: ignore[return-value]


def _names(text: str | None) -> list[str] | None:
    return [v.strip() for v in text.split(",") if v.strip()] if text else None


def _floats(text: str | None, name: str) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise AtmorepError(f"--{name} must be comma-separated numbers, got '{text}'") from None


def _pairs(items: list[str] | None, name: str) -> dict[str, str]:
    """``["a=b", ...]`` of a repeatable option -> ``{"a": "b", ...}``."""
    pairs = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise AtmorepError(f"--{name} must be KEY=VALUE, got '{item}'")
        pairs[key.strip()] = value.strip()
    return pairs


def _grib_value(text: str) -> str | int | float:
    """A GRIB key's value as cfgrib compares it: numbers as numbers."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


# ------------------------------------------------------------------------------------------- data


@data_app.command("simulate")
@friendly_errors
def data_simulate(
    out: Annotated[Path, typer.Argument(help="Output zarr store of the raw simulation.")],
    start: Annotated[str, typer.Option(help="First output date (ISO).")] = "2000-01-01",
    days: Annotated[float, typer.Option(help="Length of the output period in days.")] = 30.0,
    interval: Annotated[int, typer.Option(help="Output interval in hours.")] = 1,
    levels: Annotated[
        str | None, typer.Option(help="Sigma levels, comma-separated (default: all 8).")
    ] = None,
    spinup_days: Annotated[float, typer.Option(help="Spin-up before the first output.")] = 30.0,
    resolution: Annotated[str, typer.Option(
        help="Spectral truncation: T31 (96 x 48 grid), T63 (192 x 96), T21 or T42.")] = "T31",
    fields: Annotated[str | None, typer.Option(
        help="Fields to write, comma-separated (default: u,v,t,q,z,sp,vo,d; t2m on request).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the initial-state perturbation.")] = 0,
    perturbation: Annotated[float, typer.Option(help="Amplitude of the perturbation.")] = 1e-3,
    chunk_days: Annotated[float, typer.Option(help="Days per written chunk (resume granularity).")] = 10.0,
    sst_offset: Annotated[float, typer.Option(
        help="Kelvin added to the prescribed sea-surface temperature (a known forcing).")] = 0.0,
    forecast_of: Annotated[Path | None, typer.Option(
        help="A simulation store: write another model's forecasts of it instead (its spec is the truth's).")
    ] = None,
    forecast_every: Annotated[int, typer.Option(
        help="With --forecast-of: hours between forecast starts, and the longest lead.")] = 12,
    physics: Annotated[list[str] | None, typer.Option(
        help="With --forecast-of: GROUP.PARAMETER=VALUE of the forecasting model's SPEEDY physics "
             "(repeatable; default: stronger surface drag and faster convection).")] = None,
    overwrite: Annotated[bool, typer.Option(help="With --forecast-of: replace an existing output.")] = False,
) -> None:
    """Make the embedded default corpus with the jcm general circulation model (offline), or another
    model's forecasts of it (--forecast-of), the input of model correction."""
    from atmorep.data.simulate import SimulationSpec, simulate

    if forecast_of is not None:
        _forecast(forecast_of, out, forecast_every, physics, overwrite,
                  changed=[name for name, value, default in (
                      ("start", start, "2000-01-01"), ("days", days, 30.0), ("interval", interval, 1),
                      ("levels", levels, None), ("spinup-days", spinup_days, 30.0), ("seed", seed, 0),
                      ("perturbation", perturbation, 1e-3), ("sst-offset", sst_offset, 0.0),
                      ("resolution", resolution, "T31"), ("fields", fields, None))
                      if value != default])
        return

    spec_args = dict(
        start=start,
        days=days,
        output_interval_hours=interval,
        spinup_days=spinup_days,
        seed=seed,
        perturbation=perturbation,
        chunk_days=chunk_days,
        sst_offset=sst_offset,
        resolution=resolution,
    )
    parsed = _floats(levels, "levels")
    if parsed:
        spec_args["levels"] = tuple(parsed)
    if fields:
        spec_args["fields"] = tuple(_names(fields) or ())
    path = simulate(SimulationSpec(**spec_args), out)
    console.print(f"simulation written to [bold]{path}[/]")


def _forecast(truth: Path, out: Path, every: int, physics: list[str] | None, overwrite: bool,
              changed: list[str]) -> None:
    from atmorep.data.model_forecasts import DEFAULT_PHYSICS, ForecastSpec, simulate_forecasts

    if changed:
        raise AtmorepError(f"--{', --'.join(changed)}: a forecast takes the simulation spec of '{truth}'; "
                           "leave these options out with --forecast-of")
    spec = ForecastSpec(every_hours=every, physics=_physics(physics) or DEFAULT_PHYSICS)
    path = simulate_forecasts(truth, out, spec, overwrite=overwrite)
    console.print(f"forecasts of '{truth}' every {every} h written to [bold]{path}[/]")


def _physics(items: list[str] | None) -> tuple[tuple[str, float], ...]:
    """``--physics GROUP.PARAMETER=VALUE`` items as (name, value) pairs."""
    values = []
    for name, text in _pairs(items, "physics").items():
        try:
            values.append((name, float(text)))
        except ValueError:
            raise AtmorepError(f"--physics {name}={text}: the value must be a number") from None
    return tuple(values)


@data_app.command("forecast")
@friendly_errors
def data_forecast(
    truth: Annotated[Path, typer.Argument(
        help="The raw simulation store (atmorep data simulate) to forecast; not a prepared store.")],
    out: Annotated[Path, typer.Argument(help="Prediction store to write (zarr, as atmorep infer writes).")],
    time: Annotated[list[str] | None, typer.Option(
        help="A reference time (repeatable), e.g. 2002-01-05T00.")] = None,
    start: Annotated[str | None, typer.Option(help="First reference time of a range.")] = None,
    end: Annotated[str | None, typer.Option(help="Last reference time of a range (inclusive).")] = None,
    every: Annotated[str, typer.Option(help="Spacing of the range, e.g. 48h.")] = "24h",
    lead_hours: Annotated[int, typer.Option(help="Longest lead in hours.")] = 120,
    step_hours: Annotated[int | None, typer.Option(
        help="Hours between the written leads (default: the truth's output interval).")] = None,
    physics: Annotated[list[str] | None, typer.Option(
        help="GROUP.PARAMETER=VALUE of the forecasting model's SPEEDY physics (repeatable; default: "
             "those of --forecast-of, stronger surface drag and faster convection).")] = None,
    like: Annotated[Path | None, typer.Option(
        help="A prepared store of the simulation (e.g. the test store): write its fields and levels.")
    ] = None,
    fields: Annotated[str | None, typer.Option(
        help="Fields to write, comma-separated (default: those of --like, or all of the truth's).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """jcm forecasts of a simulation from its states at reference times, to --lead-hours, as a prediction
    store: a physics-model baseline for atmorep evaluate --reference jcm=OUT."""
    from atmorep.data.model_forecasts import DEFAULT_PHYSICS
    from atmorep.data.physics_forecasts import CaseSpec
    from atmorep.evaluate.physics_baseline import write_physics_forecasts
    from atmorep.infer.request import reference_times

    times = reference_times(time or (), start, end, every)
    if not times:
        raise AtmorepError("give reference times: --time (repeatable) or --start and --end")
    cases = CaseSpec(times=times, lead_hours=lead_hours, step_hours=step_hours,
                     physics=_physics(physics) or DEFAULT_PHYSICS, fields=tuple(_names(fields) or ()) or None)
    began = time_module.perf_counter()
    path = write_physics_forecasts(truth, out, cases, like=like, overwrite=overwrite)
    console.print(f"{len(times)} jcm forecasts of '{truth}' to {lead_hours} h written to [bold]{path}[/] "
                  f"in {time_module.perf_counter() - began:.0f} s")


@data_app.command("prepare")
@friendly_errors
def data_prepare(
    sources: Annotated[
        list[str], typer.Argument(help="Input files/URLs (zarr, netCDF, GRIB), then the output store.")
    ],
    fields: Annotated[
        str | None, typer.Option(help="Fields to keep, e.g. t,u,v (default: all known).")
    ] = None,
    levels: Annotated[str | None, typer.Option(help="Levels to keep (default: all).")] = None,
    member: Annotated[str | None, typer.Option(help="Ensemble member index, or 'all' to keep them.")] = None,
    box: Annotated[
        str, typer.Option(help="Box size time,lat,lon in grid points (sets chunking).")
    ] = "36,54,108",
    chunk_fraction: Annotated[int, typer.Option(help="Chunks are box / fraction along each axis.")] = 2,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output store.")] = False,
    filter_keys: Annotated[list[str] | None, typer.Option(
        "--filter", help="GRIB only: keep messages with KEY=VALUE, e.g. typeOfLevel=isobaricInhPa "
        "(repeatable).")] = None,
    rename: Annotated[list[str] | None, typer.Option(
        help="Rename a variable or dimension of the sources first, OLD=NEW (repeatable).")] = None,
    time_dim: Annotated[str | None, typer.Option(
        help="The time dimension, when it is not named time or valid_time.")] = None,
    time_units: Annotated[str | None, typer.Option(
        help="Units of a time axis holding plain numbers, e.g. 'hours since 1940-01-01'.")] = None,
    transform: Annotated[list[str] | None, typer.Option(
        help="Store a field transformed, FIELD=log1p[:SCALE], e.g. tp=log1p (repeatable).")] = None,
    grid: Annotated[str | None, typer.Option(
        help="Coarse-grain onto this grid first (conservative average): T21, T31, T42, T63 or a store "
             "whose grid to take.")] = None,
) -> None:
    """Prepare a store chunked for box sampling, with normalisation statistics: SRC... OUT."""
    from atmorep.data.prepare import prepare

    if len(sources) < 2:
        raise AtmorepError("give at least one source and the output store: atmorep data prepare SRC... OUT")
    *inputs, out = sources
    chosen_member: int | str | None = member
    if member is not None and member != "all":
        if not member.isdigit():
            raise AtmorepError(f"--member must be an index or 'all', got '{member}'")
        chosen_member = int(member)
    path = prepare(
        inputs,
        out,
        fields=_names(fields),
        levels=_floats(levels, "levels"),
        member=chosen_member,
        box=_triple(box, "box"),
        chunk_fraction=chunk_fraction,
        overwrite=overwrite,
        filters={key: _grib_value(value) for key, value in _pairs(filter_keys, "filter").items()},
        rename=_pairs(rename, "rename"),
        time_dim=time_dim,
        time_units=time_units,
        transforms=_pairs(transform, "transform"),
        grid=grid,
    )
    console.print(f"prepared store written to [bold]{path}[/]")
    from atmorep.data.describe import describe_store

    console.print(describe_store(path))


@data_app.command("observe")
@friendly_errors
def data_observe(
    source: Annotated[Path, typer.Argument(help="A gridded store to observe (e.g. a fine nature run).")],
    out: Annotated[Path, typer.Argument(help="Output observation store (time, station).")],
    sites: Annotated[int, typer.Option(help="Number of sites, drawn uniformly over the sphere.")] = 300,
    fields: Annotated[str, typer.Option(help="Fields observed, comma-separated.")] = "t",
    level: Annotated[float | None, typer.Option(
        help="Level of level fields (default: the one nearest the surface).")] = None,
    noise: Annotated[list[str] | None, typer.Option(
        help="FIELD=STD of the measurement noise, in the field's units (repeatable; default t=0.5, "
             "u=1, v=1, q=5e-4, sp=50).")] = None,
    missing: Annotated[float, typer.Option(help="Probability that a value is missing.")] = 0.3,
    seed: Annotated[int, typer.Option(help="Seed of the sites, noise and gaps.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output store.")] = False,
) -> None:
    """Sample observations at fixed sites from a gridded store, with noise and missing values."""
    from atmorep.data.observations import ObservationSpec, observe

    stds = {}
    for name, text in _pairs(noise, "noise").items():
        try:
            stds[name] = float(text)
        except ValueError:
            raise AtmorepError(f"--noise {name}={text}: the standard deviation must be a number") from None
    spec = ObservationSpec(sites=sites, fields=tuple(_names(fields) or ()), level=level, noise=stds,
                           missing=missing, seed=seed)
    path = observe(source, out, spec, overwrite=overwrite)
    console.print(f"observations of {sites} sites written to [bold]{path}[/]")


@data_app.command("stats")
@friendly_errors
def data_stats(
    store: Annotated[Path, typer.Argument(help="A prepared store.")],
) -> None:
    """Recompute the normalisation statistics of a prepared store."""
    from atmorep.data.describe import describe_store
    from atmorep.data.prepare import update_statistics

    update_statistics(store)
    console.print(describe_store(store))


@data_app.command("info")
@friendly_errors
def data_info(store: Annotated[str, typer.Argument(help="A prepared store, or a source file.")]) -> None:
    """Describe a prepared store (fields, levels, period, grid, chunking, statistics) or a source file."""
    from atmorep.data.describe import describe

    console.print(describe(store), highlight=False)


@data_app.command("sample")
@friendly_errors
def data_sample(
    stores: Annotated[list[str], typer.Argument(help="Prepared stores.")],
    fields: Annotated[str | None, typer.Option(help="Fields (default: all of the store).")] = None,
    box: Annotated[str, typer.Option(help="Box size time,lat,lon in grid points.")] = "12,16,32",
    boxes_per_window: Annotated[int, typer.Option(help="Boxes drawn per time window.")] = 4,
    batches: Annotated[int, typer.Option(help="Number of batches to draw.")] = 3,
    workers: Annotated[int, typer.Option(help="Data-loader worker processes.")] = 0,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Draw batches of boxes and print what they hold (a sampling demonstration)."""
    from atmorep.data.demo import sample_demo

    console.print(
        sample_demo(stores, _names(fields), _triple(box, "box"), boxes_per_window, batches, workers, seed)
    )


# ------------------------------------------------------------------------------------------ model


@model_app.command("info")
@friendly_errors
def model_info(
    preset: Annotated[str, typer.Argument(help="A preset (tiny, small, base, paper) or a config YAML.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
) -> None:
    """Print parameter counts and shapes of a model without allocating it (meta device)."""
    from atmorep.config import preset_config
    from atmorep.model.info import describe_model

    console.print(describe_model(preset_config(preset, overrides or [])))


# ------------------------------------------------------------------------------------- quickstart


_QUICKSTART = QuickstartPlan()  # the defaults of the quickstart's options


@app.command("quickstart")
@friendly_errors
def quickstart(
    root: Annotated[Path, typer.Option(help="Working directory for data and runs.")] = _QUICKSTART.root,
    train_minutes: Annotated[
        float, typer.Option(help="Wall-clock bound of training.")
    ] = _QUICKSTART.train_minutes,
    train_days: Annotated[
        float, typer.Option(help="Simulated days of the training period.")
    ] = _QUICKSTART.period("train").days,
    eval_days: Annotated[
        float, typer.Option(help="Simulated days of validation and test periods.")
    ] = _QUICKSTART.period("test").days,
    spinup_days: Annotated[float, typer.Option(
        help="Simulator spin-up of the training period (each later period: --spinup-stagger-days more).")
    ] = _QUICKSTART.spinup_days,
    spinup_stagger_days: Annotated[
        float, typer.Option(help="Extra spin-up of each later period.")
    ] = _QUICKSTART.spinup_stagger_days,
    lead_hours: Annotated[
        float, typer.Option(help="Longest forecast lead on the test period.")
    ] = _QUICKSTART.forecast_lead_hours,
    case_every_hours: Annotated[
        float, typer.Option(help="Spacing of the test cases.")
    ] = _QUICKSTART.case_every_hours,
    forecast_every_hours: Annotated[
        float, typer.Option(help="Spacing of the forecast test cases (each rolls out to --lead-hours).")
    ] = _QUICKSTART.forecast_every_hours,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="key=value overrides of the tiny config.")
    ] = None,
) -> None:
    """Simulate, prepare, train, infer on a held-out period and evaluate: the whole pipeline on the embedded
    default corpus (re-runs reuse finished steps)."""
    from atmorep.quickstart import run

    plan = dataclasses.replace(
        _QUICKSTART.with_days(train_days, eval_days),
        root=root,
        train_minutes=train_minutes,
        spinup_days=spinup_days,
        spinup_stagger_days=spinup_stagger_days,
        overrides=tuple(overrides or ()),
        forecast_lead_hours=lead_hours,
        case_every_hours=case_every_hours,
        forecast_every_hours=forecast_every_hours,
    )
    run(plan, console)


# ------------------------------------------------------------------------------------------ infer

Region4 = tuple[float, float, float, float]


@app.command("infer")
@friendly_errors
def infer(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint directory, or a run directory holding one.")],
    data: Annotated[Path, typer.Option(help="Prepared store of the inputs.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Prediction store to write (zarr).")],
    task: Annotated[
        str, typer.Option(help="forecast, interpolate, infill, reconstruct, downscale or correct.")
    ] = "forecast",
    time: Annotated[
        list[str] | None, typer.Option(help="A reference time (repeatable), e.g. 2002-01-05T00.")
    ] = None,
    start: Annotated[str | None, typer.Option(help="First reference time of a range.")] = None,
    end: Annotated[str | None, typer.Option(help="Last reference time of a range (inclusive).")] = None,
    every: Annotated[str, typer.Option(help="Spacing of the range, e.g. 12h.")] = "24h",
    lead_hours: Annotated[
        float | None, typer.Option(help="Forecast: longest lead; past the box: rollout.")
    ] = None,
    region: Annotated[
        Region4 | None, typer.Option(help="lat_min lat_max lon_min lon_max (default: the whole grid).")
    ] = None,
    infill_region: Annotated[
        Region4 | None, typer.Option(help="Infill: lat_min lat_max lon_min lon_max to fill.")
    ] = None,
    ratio: Annotated[
        float | None, typer.Option(help="Reconstruct: hidden fraction of token blocks (0.5).")
    ] = None,
    coarsen_factor: Annotated[
        int | None, typer.Option(help="Downscale: block size of the coarse input.")
    ] = None,
    input_store: Annotated[
        Path | None, typer.Option("--input", help="Correct: prepared store of another model's forecast "
                                                  "to correct (on the grid of --data).")
    ] = None,
    target: Annotated[
        Path | None, typer.Option(help="Tail: the fine store or observation store whose grid or sites "
                                       "the tail predicts on.")
    ] = None,
    backbone: Annotated[
        Path | None, typer.Option(help="Tail: its backbone, when not where it was fine-tuned.")
    ] = None,
    overlap: Annotated[float, typer.Option(help="Tile overlap: fraction of the box (<1) or points.")] = 0.5,
    batch_size: Annotated[int, typer.Option(help="Tiles per model call.")] = 8,
    rollout: Annotated[
        str, typer.Option(help="Rollout of 'members' (each on its own) or of the 'mean'.")
    ] = "members",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto, float32 or bfloat16.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the reconstruct masks.")] = 0,
    alpha: Annotated[
        list[str] | None, typer.Option(help="Override an auxiliary value (repeatable): year=1950 sets, "
                                            "day_of_year+=182 shifts; hour, level, latitude, ...")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Zero-shot inference with a trained model over a region or the globe (WeatherBench-2 zarr output);
    with a tail checkpoint, the tail over --start..--end on the grid or sites of --target."""
    from atmorep.checkpoint import resolve_checkpoint
    from atmorep.infer.engine import infer as run_inference
    from atmorep.infer.request import InferenceRequest, reference_times
    from atmorep.progress import progress_bar
    from atmorep.tails.saved import is_tail_checkpoint

    if is_tail_checkpoint(checkpoint):
        _infer_tail(checkpoint, data, output, target, start, end, backbone, device, overwrite)
        return

    if rollout not in ("members", "mean"):
        raise AtmorepError(f"--rollout must be 'members' or 'mean', got '{rollout}'")
    request = InferenceRequest(
        checkpoint=resolve_checkpoint(checkpoint), data=data, output=output, task=task,
        times=reference_times(time or (), start, end, every), lead_hours=lead_hours, region=region,
        infill_region=infill_region, ratio=ratio, coarsen_factor=coarsen_factor, input=input_store,
        overlap=int(overlap) if overlap >= 1 else overlap, batch_size=batch_size, rollout=rollout,
        device=device, precision=precision, seed=seed, alpha=tuple(alpha or ()), overwrite=overwrite)
    with progress_bar(f"{task}", console) as advance:
        result = run_inference(request, progress=advance)
    console.print(f"wrote {result.output}: {result.cases} cases, {result.tiles} tiles in "
                  f"{result.seconds:.1f} s "
                  f"({result.tiles_per_second:.1f} tiles/s, {result.fields_per_second:.2f} domain passes/s)")


def _infer_tail(checkpoint: Path, data: Path, output: Path, target: Path | None, start: str | None,
                end: str | None, backbone: Path | None, device: str, overwrite: bool) -> None:
    import numpy as np

    from atmorep.progress import progress_bar
    from atmorep.runtime import detect_device
    from atmorep.tails.apply import TailRequest, apply_tail

    if target is None or start is None or end is None:
        raise AtmorepError(f"'{checkpoint}' is a tail: give --target (the fine store or observation store "
                           "to predict on), --start and --end (the period, end included)")
    try:
        last = str(np.datetime64(end, "s") + np.timedelta64(1, "s"))
    except ValueError:
        raise AtmorepError(f"--end: '{end}' is not a date or time") from None
    request = TailRequest(checkpoint=checkpoint, coarse=data, target=target, output=output, start=start,
                          end=last, backbone=backbone, device=str(detect_device(device)), overwrite=overwrite)
    with progress_bar("tail", console) as advance:
        written = apply_tail(request, progress=advance)
    console.print(f"wrote {written}")


@app.command("calibrate")
@friendly_errors
def calibrate(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint directory, or a run directory holding one.")],
    data: Annotated[Path, typer.Option(help="A held-out prepared store (the validation period).")],
    task: Annotated[list[str] | None, typer.Option(
        help="A task to calibrate (repeatable): forecast, interpolate, infill, downscale, correct "
             "(default: all but correct; with --input: all).")
    ] = None,
    every_hours: Annotated[float, typer.Option(help="Spacing of the cases' reference times.")] = 24.0,
    lead_hours: Annotated[float | None, typer.Option(
        help="Forecast: also fit spread factors per lead of a member rollout up to this lead.")] = None,
    rollout_every_hours: Annotated[float | None, typer.Option(
        help="Spacing of that rollout's cases (default: --every-hours).")] = None,
    infill_region: Annotated[
        Region4 | None, typer.Option(help="Infill: lat_min lat_max lon_min lon_max to fill.")
    ] = None,
    input_store: Annotated[
        Path | None, typer.Option("--input", help="Correct: another model's values paired with --data.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Tiles per model call.")] = 16,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto, float32 or bfloat16.")] = "auto",
) -> None:
    """Calibrate the ensemble's spread on tiled predictions of held-out data (rewrites the checkpoint)."""
    from atmorep.calibrate import CalibrationRequest, default_tasks
    from atmorep.calibrate import calibrate as run_calibration

    tasks = tuple(task or default_tasks(with_input=input_store is not None))
    request = CalibrationRequest(checkpoint, data, tasks, every_hours=every_hours,
                                 lead_hours=lead_hours, rollout_every_hours=rollout_every_hours,
                                 infill_region=infill_region, input=input_store,
                                 batch_size=batch_size, device=device, precision=precision)
    result = run_calibration(request)
    for name, ratios in result.before.items():
        described = ", ".join(f"{field} {ratio:.3g}" for field, ratio in ratios.items())
        console.print(f"{name}: spread/skill before calibration: {described}")
    if result.lead_spread is not None:
        factors = {name: values.mean(axis=0) for name, values in result.lead_spread.factors.items()}
        leads = result.lead_spread.lead_hours
        shown = sorted({0, len(leads) // 4, len(leads) // 2, len(leads) - 1})
        for name, values in factors.items():
            described = ", ".join(f"{leads[i]:g} h {values[i]:.3g}" for i in shown)
            console.print(f"forecast {name}: spread factors of the member rollout per lead: {described}")
    console.print(f"wrote the spread factors that make it one on '{data}' to {result.checkpoint}")


@app.command("assemble")
@friendly_errors
def assemble_command(
    checkpoints: Annotated[list[Path], typer.Argument(
        help="Checkpoints (or run directories) of disjoint fields.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The assembled checkpoint to write.")],
    drop: Annotated[str | None, typer.Option(
        help="Fields to leave out, comma-separated, with the other fields' heads towards them.")] = None,
    cross_heads: Annotated[int, typer.Option(help="Heads per coupled field of the new coupling.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the new coupling's weights.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Assemble fields trained on their own into one multiformer that starts as the separate models, or
    add fields to one, or drop fields from one."""
    from atmorep.assemble import assemble

    dropped = [name.strip() for name in drop.split(",") if name.strip()] if drop else []
    written = assemble(checkpoints, output, drop=dropped, cross_heads=cross_heads, seed=seed,
                       overwrite=overwrite)
    console.print(f"wrote {written}; fine-tune the coupling with atmorep train ... train.init={written}")


@app.command("attention")
@friendly_errors
def attention(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint directory, or a run directory holding one.")],
    data: Annotated[Path, typer.Option(help="Prepared store of the box's inputs.")],
    time: Annotated[str, typer.Option(help="Reference time of the box, e.g. 2002-01-05T00.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write (zarr and figures).")],
    region: Annotated[
        Region4 | None, typer.Option(help="lat_min lat_max lon_min lon_max: the box is centred on it.")
    ] = None,
    task: Annotated[str, typer.Option(help="The task whose inputs the box gets.")] = "forecast",
    infill_region: Annotated[
        Region4 | None, typer.Option(help="Infill: lat_min lat_max lon_min lon_max to hide.")
    ] = None,
    field: Annotated[
        str | None, typer.Option(help="The field whose heads are drawn (default: the first).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Attention maps of one box: every layer's self- and cross-attention, and how fields couple."""
    from atmorep.attention_maps import AttentionRequest, attention_maps
    from atmorep.infer.request import reference_times

    times = reference_times([time])
    result = attention_maps(AttentionRequest(checkpoint, data, output, times[0], region=region, task=task,
                                             infill_region=infill_region, query_field=field,
                                             overwrite=overwrite))
    coupling = result.coupling
    sources = [str(source) for source in coupling["source"].values]
    for layer in coupling["layer"].values:
        rows = []
        for name in coupling["field"].values:
            shares = coupling.sel(layer=layer, field=name).values
            described = ", ".join(f"{s} {v:.2f}" for s, v in zip(sources, shares) if v == v)  # NaN: uncoupled
            rows.append(f"{name}: {described}")
        console.print(f"encoder layer {layer}: " + "; ".join(rows))
    console.print(f"wrote {result.output} (attention.zarr, {len(result.figures)} figures)")


@app.command("embed")
@friendly_errors
def embed_command(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint directory, or a run directory holding one.")],
    data: Annotated[Path, typer.Option(help="Prepared store of the boxes' inputs.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Zarr store to write, a group per field.")],
    time: Annotated[
        list[str] | None, typer.Option(help="First time of the boxes (repeatable), e.g. 2002-01-05T00.")
    ] = None,
    start: Annotated[str | None, typer.Option(help="First time of a range of first times.")] = None,
    end: Annotated[str | None, typer.Option(help="Last time of the range (inclusive).")] = None,
    every: Annotated[str, typer.Option(help="Spacing of the range, e.g. 12h.")] = "24h",
    latitude: Annotated[
        list[float] | None, typer.Option(help="Latitude a box is centred on (repeatable, with --longitude).")
    ] = None,
    longitude: Annotated[list[float] | None, typer.Option(help="Its longitude, degrees east.")] = None,
    all_tiles: Annotated[
        bool, typer.Option("--all-tiles", help="Instead of places: the boxes that tile the whole grid.")
    ] = False,
    layer: Annotated[int, typer.Option(help="Encoder layer, 0-based (-1: the last).")] = -1,
    batch_size: Annotated[int, typer.Option(help="Boxes per model call.")] = 16,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto, float32 or bfloat16.")] = "auto",
    alpha: Annotated[
        list[str] | None, typer.Option(help="Override an auxiliary value (repeatable): hour=0 sets, "
                                            "day_of_year+=182 shifts; year, level, latitude, ...")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Encoder states of boxes, every token visible: per field [box, level, token_time, token_latitude,
    token_longitude, dim], for probes of the model's representation."""
    from atmorep.checkpoint import resolve_checkpoint
    from atmorep.infer.embed import EmbedRequest, embed
    from atmorep.infer.request import reference_times

    latitude, longitude = latitude or [], longitude or []
    if len(latitude) != len(longitude):
        raise AtmorepError(f"give one --longitude per --latitude (got {len(latitude)} latitudes and "
                           f"{len(longitude)} longitudes)")
    times = reference_times(time or (), start, end, every)
    request = EmbedRequest(resolve_checkpoint(checkpoint), data, output, times,
                           places=tuple(zip(latitude, longitude)), all_tiles=all_tiles, layer=layer,
                           batch_size=batch_size, device=device, precision=precision,
                           alpha=tuple(alpha or ()), overwrite=overwrite)
    started = time_module.perf_counter()
    states = embed(request)
    first = next(iter(states.states.values()))
    console.print(f"wrote {output}: {len(states.origins)} box(es), encoder layer {states.layer}, "
                  f"{len(states.states)} fields of {tuple(first.shape[1:])} states each, in "
                  f"{time_module.perf_counter() - started:.1f} s")


# --------------------------------------------------------------------------------------- evaluate


@app.command("evaluate")
@friendly_errors
def evaluate(
    predictions: Annotated[list[Path] | None, typer.Argument(
        help="Prediction stores written by atmorep infer (none: score the first --reference alone).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory of the tables and report.")] = ...,
    truth: Annotated[Path | None, typer.Option(
        help="Prepared store holding the truth of the predicted period.")] = None,
    climatology: Annotated[Path | None, typer.Option(
        help="Prepared store of the training period (climatology baseline, anomaly correlation).")] = None,
    factual: Annotated[Path | None, typer.Option(
        help="The factual twin of a counterfactual prediction (made with --alpha): compare the two.")] = None,
    maps: Annotated[bool, typer.Option(help="Draw maps of truth, prediction, error and spread.")] = True,
    coarse: Annotated[Path | None, typer.Option(
        help="Tail output: the coarse store the tail read (its interpolants are the baselines).")] = None,
    zero_shot: Annotated[Path | None, typer.Option(
        help="Downscaling tail: the backbone's own downscaling of --truth (infer --task downscale).")] = None,
    observations: Annotated[Path | None, typer.Option(
        help="Observation tail: the observation store to score against.")] = None,
    reference: Annotated[list[str] | None, typer.Option(
        help="NAME=PATH (repeatable): another prediction store of the same cases, e.g. jcm's forecasts "
             "(atmorep data forecast), scored beside the model as the method NAME.")] = None,
) -> None:
    """Score predictions and baselines (--truth), and other prediction stores of the same cases as named
    baselines (--reference); compare a counterfactual with its twin (--factual); score a tail's output
    (--coarse with --truth or --observations)."""
    from atmorep.evaluate.counterfactual import compare_counterfactual
    from atmorep.evaluate.run import evaluate as run_evaluation
    from atmorep.evaluate.run import summary_tables

    predictions = predictions or []
    references = _references(reference)
    if references and (truth is None or coarse is not None):
        raise AtmorepError("--reference is scored with --truth (not with --coarse or --factual alone)")
    if not predictions and not references:
        raise AtmorepError("give a prediction store to evaluate (or --reference NAME=PATH with --truth)")
    if coarse is not None:
        _evaluate_tail(predictions, output, truth, coarse, zero_shot, observations)
        return
    if truth is None and factual is None:
        raise AtmorepError("give --truth (to score the predictions) or --factual (to compare a "
                           "counterfactual)")
    if factual is not None and len(predictions) != 1:
        raise AtmorepError(f"--factual compares one counterfactual prediction, got {len(predictions)}")
    if truth is not None:
        result = run_evaluation(predictions, truth, climatology, output, maps=maps, references=references)
        console.print(summary_tables(result.summary))
        console.print(f"report: {result.report}")
    if factual is not None:
        target = output / "counterfactual" if truth is not None else output
        compared = compare_counterfactual(predictions[0], factual, target)
        means = compared.table.groupby("field")[["shift", "rms_difference", "factual_spread"]].mean()
        for name, row in means.iterrows():
            console.print(f"{name}: mean shift {row['shift']:.4g}, RMS difference "
                          f"{row['rms_difference']:.4g} (factual spread {row['factual_spread']:.4g})")
        console.print(f"{', '.join(compared.alpha)} against {factual}: {compared.output}")


def _references(items: list[str] | None) -> dict[str, Path]:
    """``--reference NAME=PATH`` items by name; a name given twice is refused."""
    names = [item.partition("=")[0].strip() for item in items or []]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise AtmorepError(f"--reference {twice[0]}: the name is given twice; each reference needs its own")
    return {name: Path(path) for name, path in _pairs(items, "reference").items()}


def _evaluate_tail(predictions: list[Path], output: Path, truth: Path | None, coarse: Path,
                   zero_shot: Path | None, observations: Path | None) -> None:
    from atmorep.evaluate.plots import plot_tail_spectra
    from atmorep.evaluate.site_statistics import score_site_statistics
    from atmorep.evaluate.tails import score_downscaling, score_sites
    from atmorep.io import atomic_write_text

    if len(predictions) != 1 or (truth is None) == (observations is None):
        raise AtmorepError("a tail's output is scored one at a time, with --coarse and either --truth "
                           "(downscaling) or --observations (observation tail)")
    output.mkdir(parents=True, exist_ok=True)
    if observations is not None:
        table = score_sites(str(predictions[0]), str(observations), str(coarse))
    else:
        table, spectra = score_downscaling(str(predictions[0]), str(truth), str(coarse),
                                           str(zero_shot) if zero_shot else None)
        atomic_write_text(output / "tail_spectra.csv", spectra.to_csv(index=False, float_format="%.6g"))
        plot_tail_spectra(spectra, output / "tail_spectra.png")
        console.print(f"spectra: {output / 'tail_spectra.csv'}, {output / 'tail_spectra.png'}")
        sites, summary = score_site_statistics(str(predictions[0]), str(truth))
        atomic_write_text(output / "tail_sites.csv", sites.to_csv(index=False, float_format="%.5g"))
        atomic_write_text(output / "tail_site_summary.csv", summary.to_csv(index=False, float_format="%.5g"))
        console.print(summary.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        console.print(f"site statistics: {output / 'tail_sites.csv'}, {output / 'tail_site_summary.csv'}")
    atomic_write_text(output / "tail_scores.csv", table.to_csv(index=False, float_format="%.5g"))
    console.print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    console.print(f"table: {output / 'tail_scores.csv'}")


# ------------------------------------------------------------------------------------------ train


@app.command("train")
@friendly_errors
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="Run configuration (YAML).")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue exactly from run_dir/checkpoint.")] = False,
) -> None:
    """Train a model on one CPU or GPU, or on many under torchrun (see docs/training.md)."""
    from atmorep.runtime import distributed_env
    from atmorep.train.command import summarise_result, train_command

    result = train_command(config, overrides or [], resume=resume)
    if distributed_env().is_main:
        console.print(summarise_result(result))


@app.command("finetune")
@friendly_errors
def finetune(
    config: Annotated[Path, typer.Option("--config", "-c", help="Fine-tuning configuration (YAML).")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
) -> None:
    """Fine-tune a tail (downscaling, observation sites) on a pre-trained model (see docs/tails.md)."""
    from atmorep.tails.config import load_finetune_config
    from atmorep.tails.finetune import finetune as run_finetune

    settings = load_finetune_config(config, overrides or [])
    result = run_finetune(settings, progress=lambda step, record: console.print(
        f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "step")))
    console.print(f"{result.steps} steps in {result.seconds:.0f} s; tail checkpoint: {result.checkpoint}")
    for name, value in result.validation.items():
        console.print(f"  validation {name}: {value:.4g}")


# ----------------------------------------------------------------------------------------- hybrid


def _need_hybrid_extra() -> None:
    import importlib.util

    if importlib.util.find_spec("dinosaur_torch") is None:
        raise AtmorepError("atmorep hybrid needs the optional extra 'hybrid' (the dinosaur-torch core): "
                           "pip install 'atmorep[hybrid]'")


@hybrid_app.command("train")
@friendly_errors
def hybrid_train(
    config: Annotated[Path, typer.Option("--config", "-c", help="Hybrid configuration (YAML).")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
    every: Annotated[int, typer.Option(help="Print the loss every that many steps.")] = 20,
) -> None:
    """Train the correction of a hybrid model offline or online (see docs/hybrid.md)."""
    _need_hybrid_extra()
    from atmorep.hybrid.config import load_hybrid_config
    from atmorep.hybrid.run import train_hybrid

    settings = load_hybrid_config(config, overrides or [])

    def progress(step: int, loss: float) -> None:
        if step % max(every, 1) == 0:
            console.print(f"step {step}: loss {loss:.4g}")

    result = train_hybrid(settings, progress)
    console.print(f"{settings.train.mode}: {result['steps']} steps in {result['seconds']:.0f} s, "
                  f"final loss {result['final_loss']:.4g}; checkpoint: {result['checkpoint']}")


@hybrid_app.command("evaluate")
@friendly_errors
def hybrid_evaluate(
    runs: Annotated[list[Path], typer.Argument(help="Hybrid checkpoints (run folders) of one core.")],
    truth: Annotated[Path, typer.Option(help="The test period: a sigma-level run (u, v, t, z, sp).")],
    climatology: Annotated[Path, typer.Option(help="The period whose time mean is the climatology "
                                                   "(the training period).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the scores and report.")],
    days: Annotated[float, typer.Option(help="Longest lead, days.")] = 5.0,
    every_days: Annotated[float, typer.Option(help="Days between forecast starts.")] = 2.0,
    free_run_days: Annotated[float | None, typer.Option(
        help="Length of the free runs, days (default: the whole test period).")] = None,
) -> None:
    """Score the raw core, hybrids, persistence and climatology; free runs for stability and bias."""
    _need_hybrid_extra()
    from atmorep.hybrid.run import evaluate_hybrids

    if days <= 0 or every_days <= 0 or (free_run_days is not None and free_run_days <= 0):
        raise AtmorepError("--days, --every-days and --free-run-days must be positive")
    result = evaluate_hybrids(runs, truth, climatology, output, days=days, every_days=every_days,
                              free_run_days=free_run_days)
    console.print((result["output"] / "report.md").read_text(), markup=False, highlight=False)


@distance_app.command("train")
@friendly_errors
def distance_train(
    config: Annotated[Path, typer.Option("--config", "-c", help="Distance configuration (YAML).")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
) -> None:
    """Train the lag classifier whose encoder defines the distance (see docs/distance.md)."""
    from atmorep.distance.config import load_distance_config
    from atmorep.distance.train import train_distance

    settings = load_distance_config(config, overrides or [])

    def progress(step: int, record: dict) -> None:
        scores = ", ".join(f"{key} {value:.4g}" for key, value in record.items()
                           if key in ("loss", "accuracy", "val_accuracy", "val_top3"))
        console.print(f"step {step}: {scores}")

    result = train_distance(settings, progress)
    console.print(f"{result.steps} steps in {result.seconds:.0f} s, validation accuracy "
                  f"{result.validation['accuracy']:.3f}; distance model: {result.model}")


@distance_app.command("score")
@friendly_errors
def distance_score(
    checkpoint: Annotated[Path, typer.Option(help="A distance model, or the run directory holding one.")],
    data: Annotated[Path, typer.Option(help="The held-out store scored.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the tables.")],
    control: Annotated[Path | None, typer.Option(
        help="Another run over the same times and grid: the second patch of control pairs.")] = None,
    train: Annotated[Path | None, typer.Option(
        help="The store the baselines are fitted on (default: the model's training store).")] = None,
) -> None:
    """Score lag classification, baselines, control pairs and the distance against lag."""
    from atmorep.distance.score import score_distance

    score_distance(checkpoint, data, output, control=control, train=train)
    console.print((output / "summary.md").read_text(), markup=False, highlight=False)


def run() -> None:  # pragma: no cover - console script entry point for python -m
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
