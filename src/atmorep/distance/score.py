"""Scores of a distance model on a held-out store (``atmorep distance score``).

On the enumerated pairs of the test store (:func:`atmorep.distance.pairs.evaluation_pairs`, balanced
over the K lag classes) it measures for the network and every baseline of
:mod:`atmorep.distance.baselines` (fitted on random pairs of the training store): top-1 and top-3
accuracy, accuracy per lag and the mean absolute lag error in hours; for control pairs (the second patch
from another run over the same times) the network's accuracy; and for the distance the mean per lag,
whether it rises with the lag, and the pair-level Spearman correlation with the lag, next to the same
for the pixel L2 (mean squared difference of the normalised patches) and for a random-weight encoder.
Every interval is a 95 % bootstrap interval over days: the days of the pairs' first times are resampled
with replacement (the same resamples for every method), and a statistic is recomputed from the pairs of
the drawn days.

Written atomically into the output directory: ``scores.csv`` (one row per method), ``per_lag.csv``
(one row per lag), ``scores.json`` (everything) and ``summary.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

from atmorep.distance.baselines import (
    DiurnalOracle,
    LogisticRegression,
    chance_outcomes,
    patch_statistics,
    pixel_measures,
    ranked_outcomes,
)
from atmorep.distance.bootstrap import Bootstrap
from atmorep.distance.config import DistanceConfig, ScoreSpec, Source, resolve_distance_config
from atmorep.distance.pairs import Pairs, PairSampler, PatchSource, evaluation_pairs
from atmorep.distance.report import write_tables
from atmorep.distance.saved import CONFIG, DistanceModel, load_distance, random_distance
from atmorep.runtime import derive_seed

METRICS = ("top1", "top3", "abs_error_hours")


def score_distance(checkpoint: str | Path, data: str | Path, output: str | Path,
                   control: str | Path | None = None, train: str | Path | None = None,
                   settings: ScoreSpec | None = None) -> dict:
    """Score the distance model ``checkpoint`` on the store ``data`` and write the tables to ``output``.

    Args:
        checkpoint: the distance model (or its run directory).
        data: the held-out store.
        output: the directory of the tables.
        control: another run over ``data``'s times and grid, for control pairs (none: not scored).
        train: the store the baselines are fitted on (default: the model's training store).
        settings: pairs, baseline pairs and bootstrap (default: the model configuration's ``score``).

    Returns:
        Everything ``scores.json`` holds.
    """
    model = load_distance(checkpoint)
    config = _config(model)
    settings = settings or config.score
    test = PatchSource(Source(path=str(data)), config.pairs)
    pairs = evaluation_pairs(test, settings.pairs)
    labels, step = pairs.lag - 1, config.pairs.step_hours
    boot = Bootstrap.over(test.days(pairs.time), settings.bootstrap, settings.seed)
    first, second = test.patches(pairs)
    outcomes = {"network": ranked_outcomes(_logits(model, first, second), labels, step)}
    train_source = PatchSource(Source(path=str(train or config.data.train.path)), config.pairs)
    outcomes.update(_baselines(model, train_source, test, pairs, first, second, settings))
    if control is not None:
        control_source = PatchSource(Source(path=str(control)), config.pairs)
        _, swapped = test.patches(pairs, control_source)
        outcomes["network, control pairs"] = ranked_outcomes(_logits(model, first, swapped), labels, step)
    distances = _distances(model, first, second, settings.seed)
    classes = range(config.pairs.lags)
    result = {
        "checkpoint": model.meta["path"], "data": str(data), "control": control and str(control),
        "train": train_source.path, "pairs": len(pairs), "days": int(boot.weights.shape[1]),
        "lags_hours": (np.arange(1, config.pairs.lags + 1) * step).tolist(),
        "methods": {name: {metric: boot.mean(values[metric]) for metric in METRICS}
                    for name, values in outcomes.items()},
        "per_lag": {name: [boot.mean(values["top1"], labels == k)["value"] for k in classes]
                    for name, values in outcomes.items()},
        "network_per_lag": [boot.mean(outcomes["network"]["top1"], labels == k) for k in classes],
        "distance": {name: _rises(boot, values, labels, config.pairs.lags)
                     for name, values in distances.items()},
        "settings": settings.model_dump(mode="json"),
    }
    write_tables(Path(output), result)
    return result


def _config(model: DistanceModel) -> DistanceConfig:
    path = Path(model.meta["path"]) / CONFIG
    return resolve_distance_config(yaml.safe_load(path.read_text()), source=str(path))


def _logits(model: DistanceModel, first: np.ndarray, second: np.ndarray, batch: int = 1024) -> np.ndarray:
    """The network's logits ``[N, K]`` for physical patches ``[N, C, H, W]``."""
    chunks = []
    with torch.no_grad():
        for start in range(0, first.shape[0], batch):
            a, b = (torch.from_numpy(x[start:start + batch]) for x in (first, second))
            chunks.append(model.logits(a, b).numpy())
    return np.concatenate(chunks)


def _normalised(model: DistanceModel, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.normalise(torch.from_numpy(x)).numpy()


def _baselines(model: DistanceModel, train: PatchSource, test: PatchSource, pairs: Pairs, first: np.ndarray,
               second: np.ndarray, settings: ScoreSpec) -> dict[str, dict[str, np.ndarray]]:
    """Outcomes of each baseline on the test pairs, fitted on random pairs of the training store."""
    spec = test.spec
    fitted = PairSampler(train, derive_seed(settings.seed, 3)).draw(settings.baseline_pairs)
    fit_first, fit_second = (_normalised(model, x) for x in train.patches(fitted))
    first, second = _normalised(model, first), _normalised(model, second)
    labels, fit_labels = pairs.lag - 1, fitted.lag - 1
    outcomes = {"chance": chance_outcomes(labels, spec.lags, spec.step_hours)}
    for name, features in (("patch means and stds", patch_statistics), ("pixel L2, L1, correlation",
                                                                        pixel_measures)):
        regression = LogisticRegression(spec.lags).fit(features(fit_first, fit_second), fit_labels)
        outcomes[name] = ranked_outcomes(regression.scores(features(first, second)), labels, spec.step_hours)
    oracle = DiurnalOracle(spec.lags).fit(train.hours(fitted.time), train.hours(train.second_time(fitted)),
                                          fit_labels)
    scores = oracle.scores(test.hours(pairs.time), test.hours(test.second_time(pairs)))
    outcomes["diurnal oracle"] = ranked_outcomes(scores, labels, spec.step_hours)
    return outcomes


def _distances(model: DistanceModel, first: np.ndarray, second: np.ndarray, seed: int,
               batch: int = 1024) -> dict[str, np.ndarray]:
    """Per pair ``[N]``: the learned distance, a random encoder's distance and the pixel L2."""
    control = random_distance(model, seed)
    values: dict[str, list[np.ndarray]] = {"learned distance": [], "random encoder": [], "pixel L2": []}
    with torch.no_grad():
        for start in range(0, first.shape[0], batch):
            a, b = (torch.from_numpy(x[start:start + batch]) for x in (first, second))
            values["learned distance"].append(model.distance(a, b).numpy())
            values["random encoder"].append(control.distance(a, b).numpy())
            pixel = (model.normalise(a) - model.normalise(b)).pow(2).mean((1, 2, 3))
            values["pixel L2"].append(pixel.numpy())
    return {name: np.concatenate(chunks).astype(np.float64) for name, chunks in values.items()}


def _rises(boot: Bootstrap, values: np.ndarray, labels: np.ndarray, lags: int) -> dict:
    """Mean per lag (with intervals), whether it rises strictly, and Spearman's rho with the lag."""
    means = [boot.mean(values, labels == k) for k in range(lags)]
    centre = np.array([m["value"] for m in means])
    return {"mean_per_lag": means, "strictly_rising": bool(np.all(np.diff(centre) > 0)),
            "rises_first_to_last": bool(centre[-1] > centre[0]),
            "spearman": boot.spearman(values, labels.astype(np.float64))}
