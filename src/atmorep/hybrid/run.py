"""Training a hybrid model into a checkpoint, loading it, and scoring models on a test period.

A checkpoint is a folder: ``hybrid.safetensors`` (the correction's weights, the normaliser, the
orography) and ``hybrid.json`` (the resolved configuration, the sigma levels and channels, what
training did). It is written to a temporary folder and renamed, so a killed run leaves nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from atmorep.checkpoint import CheckpointError, load_weights
from atmorep.errors import DataError
from atmorep.evaluate.report import markdown_table
from atmorep.hybrid.config import HybridConfig
from atmorep.hybrid.core import DynamicalCore, grid_spec
from atmorep.hybrid.correction import Correction, HybridModel, Normaliser
from atmorep.hybrid.scores import forecast_scores, free_run
from atmorep.hybrid.state import Truth, channel_names, read_truth
from atmorep.hybrid.training import core_steps, measure_normaliser, train
from atmorep.io import atomic_directory, atomic_write_text

WEIGHTS, META = "hybrid.safetensors", "hybrid.json"


def build_model(config: HybridConfig, truth: Truth) -> tuple[HybridModel, torch.Tensor]:
    """An untrained hybrid (zero correction) whose normaliser is measured on ``truth``, and the raw
    core's step from every state of ``truth`` ``[T, C, H, W]`` (what offline training fits)."""
    core = DynamicalCore(truth.sigma, truth.orography, config.core)
    raw = HybridModel(core, None, truth.latitudes, truth.longitudes, truth.orography, None)
    cores = core_steps(raw, truth.fields)
    correction = Correction(truth.fields.shape[1], config.correction.width, config.correction.depth)
    return HybridModel(core, measure_normaliser(truth, cores), truth.latitudes, truth.longitudes,
                       truth.orography, correction), cores


def train_hybrid(config: HybridConfig, progress: Callable[[int, float], None] | None = None) -> dict:
    """Read the training period, train the correction, write the checkpoint to ``config.run_dir``."""
    start, end = config.data.period
    truth = read_truth(config.data.train, start, end, config.core.truncation, config.core.interval_hours)
    model, cores = build_model(config, truth)
    summary = train(model, truth, config.train, progress, cores=cores)
    summary["period"] = [str(truth.times[0]), str(truth.times[-1])]
    meta = {"config": config.model_dump(mode="json"), "sigma": truth.sigma.tolist(),
            "channels": channel_names(truth.sigma), "training": summary}
    tensors = {**{f"correction.{k}": v.contiguous() for k, v in model.correction.state_dict().items()},
               **model.normaliser.tensors(), "orography": torch.as_tensor(truth.orography).contiguous()}
    run_dir = Path(config.run_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not (run_dir / META).is_file():
        raise DataError(f"run_dir '{run_dir}' exists and is not a hybrid checkpoint; choose another run_dir "
                        "(an existing checkpoint is replaced, anything else is kept)")
    with atomic_directory(run_dir, overwrite=True) as tmp:
        tmp.mkdir()
        save_file(tensors, str(tmp / WEIGHTS))
        atomic_write_text(tmp / META, json.dumps(meta, indent=2))
    return {**summary, "checkpoint": config.run_dir}


def load_hybrid(run_dir: str | Path) -> tuple[HybridModel, dict]:
    """The trained hybrid of a checkpoint folder and its metadata."""
    run_dir = Path(run_dir)
    if not (run_dir / META).is_file() or not (run_dir / WEIGHTS).is_file():
        raise CheckpointError(f"'{run_dir}' is not a hybrid checkpoint (expected {META} and {WEIGHTS}); "
                              "write one with atmorep hybrid train")
    meta = json.loads((run_dir / META).read_text())
    config = HybridConfig.model_validate(meta["config"])
    tensors = load_file(str(run_dir / WEIGHTS))
    orography = tensors["orography"].numpy()
    spec = grid_spec(config.core.truncation)
    core = DynamicalCore(np.asarray(meta["sigma"]), orography, config.core)
    correction = Correction(len(meta["channels"]), config.correction.width, config.correction.depth)
    load_weights(correction, {k.removeprefix("correction."): v for k, v in tensors.items()
                              if k.startswith("correction.")}, f"hybrid checkpoint '{run_dir}'")
    model = HybridModel(core, Normaliser.from_tensors(tensors), np.rad2deg(spec.latitudes),
                        np.rad2deg(spec.longitudes), orography, correction)
    return model.eval(), meta


def evaluate_hybrids(run_dirs: Sequence[str | Path], truth_path: str | Path, climatology_path: str | Path,
                     output: str | Path, *, days: float = 5.0, every_days: float = 2.0,
                     free_run_days: float | None = None) -> dict:
    """Score the raw core, each checkpoint, persistence and climatology on a test period.

    Writes ``scores.csv`` (model, field, lead, rmse, acc), ``free_run.csv`` (one row per model),
    ``climate_bias.csv``, ``spectra.csv``, ``scores.png`` and ``report.md`` to ``output``.

    Raises:
        DataError: checkpoints whose cores differ, or a test period shorter than the leads.
    """
    loaded = [load_hybrid(path) for path in run_dirs]
    cores = {json.dumps(meta["config"]["core"], sort_keys=True) for _, meta in loaded}
    if len(cores) != 1:
        raise DataError("hybrid evaluate: the checkpoints have different cores; compare models of one core")
    names = [Path(path).name for path in run_dirs]
    if len(set(names)) != len(names) or set(names) & {"core", "persistence", "climatology"}:
        raise DataError(f"hybrid evaluate: checkpoints are named by their folders ({', '.join(names)}); "
                        "give them distinct names other than core, persistence and climatology")
    levels = {tuple(meta["sigma"]) for _, meta in loaded}
    if len(levels) != 1:
        raise DataError("hybrid evaluate: the checkpoints have different sigma levels; compare models of "
                        "one core")
    spec = loaded[0][0].core.spec
    truth = read_truth(truth_path, None, None, spec.truncation, spec.interval_hours)
    climate = read_truth(climatology_path, None, None, spec.truncation, spec.interval_hours)
    for path, period in ((truth_path, truth), (climatology_path, climate)):
        if tuple(period.sigma.tolist()) != next(iter(levels)):
            raise DataError(f"{path}: sigma levels {period.sigma.tolist()}; the checkpoints have "
                            f"{list(next(iter(levels)))}")
    steps = round(days * 24 / spec.interval_hours)
    if steps < 1 or (free_run_days is not None and round(free_run_days * 24 / spec.interval_hours) < 1):
        raise DataError(f"hybrid evaluate: --days and --free-run-days must be at least one hybrid step "
                        f"({spec.interval_hours:g} h)")
    last = truth.fields.shape[0] - 1 - steps
    if last < 0:
        raise DataError(f"{truth_path}: {truth.fields.shape[0]} states; leads to {days:g} days need "
                        f"{steps + 1}")
    starts = np.arange(0, last + 1, max(1, round(every_days * 24 / spec.interval_hours)))
    models = {"core": loaded[0][0].without_correction(),
              **{Path(path).name: model for path, (model, _) in zip(run_dirs, loaded)}}
    climatology = climate.fields.double().mean(dim=0).float()
    scores = forecast_scores(models, truth, climatology, starts, steps)
    if free_run_days is not None:
        truth = _first_days(truth, free_run_days, spec.interval_hours)
    runs = {name: free_run(model, truth) for name, model in models.items()}
    return _write(Path(output), scores, runs, len(starts))


def _first_days(truth: Truth, days: float, interval_hours: float) -> Truth:
    count = min(truth.fields.shape[0], round(days * 24 / interval_hours) + 1)
    return Truth(truth.times[:count], truth.fields[:count], truth.sigma, truth.orography, truth.latitudes,
                 truth.longitudes)


def _write(output: Path, scores: pd.DataFrame, runs: dict, cases: int) -> dict:
    from atmorep.hybrid.plots import plot_scores

    output.mkdir(parents=True, exist_ok=True)
    scores.to_csv(output / "scores.csv", index=False)
    summary = pd.DataFrame([{"model": name, "bounded": run["bounded"], "blew_up_day": run["blew_up_day"],
                             "days": run["days"], "seconds_per_day": run["seconds_per_day"],
                             "small_scale_power": run.get("small_scale_power", float("nan"))}
                            for name, run in runs.items()])
    summary.to_csv(output / "free_run.csv", index=False)
    bias = [run["bias"].assign(model=name) for name, run in runs.items() if "bias" in run]
    spectra = [run["spectra"].assign(model_name=name) for name, run in runs.items() if "spectra" in run]
    if bias:
        pd.concat(bias).to_csv(output / "climate_bias.csv", index=False)
        pd.concat(spectra).to_csv(output / "spectra.csv", index=False)
    plot_scores(scores, output / "scores.png")
    (output / "report.md").write_text(_report(scores, summary, pd.concat(bias) if bias else None, cases))
    return {"scores": scores, "free_run": summary, "bias": pd.concat(bias) if bias else None,
            "output": output}


def _report(scores: pd.DataFrame, summary: pd.DataFrame, bias: pd.DataFrame | None, cases: int) -> str:
    leads = sorted({lead for lead in scores["lead"] if lead % 24 == 0})
    table = scores[scores["lead"].isin(leads)].pivot_table(index=["field", "model"], columns="lead",
                                                           values="rmse")
    lines = [f"# Hybrid models on the test period ({cases} starts)", "", "## RMSE against lead (hours)", "",
             *_table(table.reset_index()), "", "## Free runs", "", *_table(summary)]
    if bias is not None:
        mean_bias = bias.groupby(["model", "field"])["bias_rms"].mean().unstack().reset_index()
        lines += ["", "## Climate bias (RMS of the time-mean error, mean over levels)", "",
                  *_table(mean_bias)]
    return "\n".join(lines) + "\n"


def _table(frame: pd.DataFrame) -> list[str]:
    """A data frame as Markdown lines, numbers to 4 significant digits."""
    def cell(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    numeric = [str(c) for c in frame.columns if pd.api.types.is_float_dtype(frame[c])]
    return markdown_table([str(c) for c in frame.columns],
                          ([cell(v) for v in row] for row in frame.itertuples(index=False)), numeric)
