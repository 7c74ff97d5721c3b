"""A lag probe of frozen representations: how well a linear classifier tells the time lag between two
boxes at one place from frozen features of each.

For a pair of boxes ``a`` (at t) and ``b`` (at t + k * step_hours, lag class k in 1..K) and a
representation ``f`` (:mod:`atmorep.evaluate.representation_features`), the probe sees

    x = [f(a), f(b), |f(a) - f(b)|]                                  ([N, 3F])

standardised with the training pairs' mean and standard deviation, and fits a multinomial logistic
regression (a linear layer ``3F -> K``, softmax cross-entropy plus ``penalty * |W|^2``, full-batch
L-BFGS in float64 from zero weights: a convex problem, so the fit is unique and deterministic) on random
pairs of the training store, for each penalty of a grid; the penalty with the best accuracy on random
pairs of the validation store is kept. It is scored on the enumerated pairs of the test store (every
class at every first time and place: balanced, chance is 1/K) by the top-1 accuracy and the mean
absolute lag error in hours, each with a percentile bootstrap interval over the days of the pairs'
first times (pairs of one day share weather, so days are the independent units).

:func:`probe_representations` runs the probe on AtmoRep (a backbone checkpoint) and AtmoDist (a
distance model), each trained and randomly initialised, and on the box statistics and a constant
guess of the median lag as references. AtmoRep's tokens carry the time of their box in their auxiliary
values (year, day of year, hour), from which the lag could be read without looking at the weather; its
rows hide that clock (:func:`hidden_clock`: every token gets the training store's first time), and
one more row, ``AtmoRep (trained, clock visible)``, shows what the clock alone is worth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from atmorep.batch import EPOCH, AlphaOverride
from atmorep.checkpoint import read_meta, resolve_checkpoint
from atmorep.config import ConfigError
from atmorep.data.store import Store
from atmorep.distance import DistanceModel, load_distance, random_distance
from atmorep.distance.baselines import LogisticRegression
from atmorep.distance.bootstrap import Bootstrap
from atmorep.distance.config import Channel, EvaluationSpec, PairSpec
from atmorep.distance.pairs import PairSampler, evaluation_pairs
from atmorep.errors import DataError
from atmorep.evaluate.representation_features import (
    INPUTS,
    PairSet,
    box_features,
    distance_features,
    pair_source,
    unique_boxes,
)
from atmorep.infer.embed import BoxEmbedder
from atmorep.infer.predictor import BoxPredictor
from atmorep.numerics.tokens import calendar

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
CONSTANT = "constant (median lag)"
CLOCK = "AtmoRep (trained, clock visible)"


@dataclass(frozen=True)
class ProbeSpec:
    """The pairs and the fit of the lag probe.

    Attributes:
        lags: K, the lag classes 1..K; class k is ``k * step_hours`` apart.
        step_hours: the lag of class 1.
        max_latitude: every box row lies within ``|latitude| <= max_latitude`` degrees.
        train_pairs, validation_pairs: random pairs drawn from the training and validation stores.
        test: the enumerated pairs of the test store.
        penalties: the L2 penalties tried (on the standardised features' weights).
        bootstrap: resamples of the test days.
        seed: seed of the pairs, the random encoders and the bootstrap.
        batch_size: boxes per backbone call.
    """

    lags: int = 16
    step_hours: float = 3.0
    max_latitude: float = 60.0
    train_pairs: int = 2000
    validation_pairs: int = 800
    test: EvaluationSpec = EvaluationSpec(time_stride_hours=12, latitude_places=2, longitude_stride=32)
    penalties: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
    bootstrap: int = 1000
    seed: int = 0
    batch_size: int = 32

    def __post_init__(self) -> None:
        minimum = {"lags": 2, "train_pairs": self.lags, "validation_pairs": 1, "bootstrap": 10, "seed": 0,
                   "batch_size": 1}
        for key, least in minimum.items():
            if getattr(self, key) < least:
                raise ConfigError(f"lag probe: {key} must be at least {least}, got {getattr(self, key)}")
        if not self.step_hours > 0 or not 0 < self.max_latitude <= 90:
            raise ConfigError(f"lag probe: step_hours must be positive and max_latitude in (0, 90], got "
                              f"{self.step_hours} and {self.max_latitude}")
        if not self.penalties or min(self.penalties) < 0:
            raise ConfigError(f"lag probe: penalties must be one or more non-negative values, got "
                              f"{list(self.penalties)}")


@dataclass(frozen=True)
class LinearProbe:
    """A fitted probe: a multinomial logistic regression of the lag class on pair features."""

    regression: LogisticRegression
    penalty: float

    def predict(self, x: torch.Tensor) -> np.ndarray:
        """``[N]`` lag classes 1..K of pair features ``[N, P]``."""
        return self.regression.predict(x) + 1


def pair_features(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``[N, 3F]``: ``[f(a), f(b), |f(a) - f(b)|]`` of features ``[N, F]`` of both boxes."""
    return torch.cat([first, second, (first - second).abs()], dim=1)


def fit_probe(train: tuple[torch.Tensor, np.ndarray], validation: tuple[torch.Tensor, np.ndarray],
              classes: int, penalties: tuple[float, ...]) -> tuple[LinearProbe, float]:
    """The probe of the penalty with the best validation accuracy (the smaller penalty on a tie) and that
    accuracy; inputs are pair features ``[N, P]`` and lag classes ``[N]`` (1..K)."""
    x, lags = train
    best, best_accuracy = None, -1.0
    for penalty in sorted(penalties):
        probe = LinearProbe(LogisticRegression(classes, penalty).fit(x, lags - 1), penalty)
        accuracy = float(np.mean(probe.predict(validation[0]) == validation[1]))
        if accuracy > best_accuracy:
            best, best_accuracy = probe, accuracy
    return best, best_accuracy


def lag_scores(predicted: np.ndarray, lags: np.ndarray, days: np.ndarray, step_hours: float,
               bootstrap: int = 1000, seed: int = 0) -> dict[str, float]:
    """Top-1 accuracy and mean absolute lag error (hours), with 95 % bootstrap intervals over days.

    Args:
        predicted, lags: ``[N]`` predicted and true lag classes.
        days: ``[N]`` day of each pair (:class:`atmorep.distance.bootstrap.Bootstrap`).
        step_hours: hours per lag class.
        bootstrap: number of resamples.
        seed: their seed.

    Returns:
        ``accuracy``, ``accuracy_low``, ``accuracy_high``, ``mae_hours``, ``mae_low``, ``mae_high``.
    """
    boot = Bootstrap.over(days, bootstrap, seed)
    accuracy = boot.mean((predicted == lags).astype(np.float64))
    error = boot.mean(np.abs(predicted - lags).astype(np.float64) * step_hours)
    return {"accuracy": accuracy["value"], "accuracy_low": accuracy["low"], "accuracy_high": accuracy["high"],
            "mae_hours": error["value"], "mae_low": error["low"], "mae_high": error["high"]}


@dataclass
class ProbeResult:
    """The scores (one row per representation) and the test accuracy per lag class."""

    table: pd.DataFrame
    per_lag: pd.DataFrame
    pairs: dict[str, int] = field(default_factory=dict)


Features = dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]  # representation -> split -> (f(a), f(b))


def hidden_clock(time: np.datetime64) -> tuple[AlphaOverride, ...]:
    """Overrides that give every token the year, day of year and hour of ``time``: the model then learns
    nothing about when a box lies from its auxiliary values, only from its fields."""
    seconds = torch.tensor([(np.datetime64(time, "s") - EPOCH).astype(np.int64)])
    year, day, hour = (float(v[0]) for v in calendar(seconds))
    return (AlphaOverride("year", year), AlphaOverride("day_of_year", day), AlphaOverride("hour", hour))


def _backbone_features(checkpoint: Path, sets: dict[str, PairSet], spec: ProbeSpec, paths: dict[str, str]
                       ) -> Features:
    directory = resolve_checkpoint(checkpoint)
    predictor, meta = BoxPredictor.from_checkpoint(directory, "cpu", "float32"), read_meta(directory)
    clock = hidden_clock(Store(paths["train"]).time[0])
    features: Features = {}
    for split, pairs in sets.items():
        visible = BoxEmbedder(predictor, Store(paths[split]), directory, meta).preload()
        trained = visible.with_alpha(clock)
        embedders = {"AtmoRep (trained)": trained, "AtmoRep (random init)": trained.randomised(spec.seed),
                     CLOCK: visible}
        origins, first, second = unique_boxes(pairs)
        logger.info("%s: %d pairs, %d distinct boxes", split, len(pairs.pairs), len(origins))
        for name, values in box_features(embedders, origins, spec.batch_size).items():
            features.setdefault(name, {})[split] = (values[first], values[second])
    return features


def _distance_features(trained: DistanceModel, sets: dict[str, PairSet], spec: ProbeSpec) -> Features:
    models = {"AtmoDist (trained)": trained, "AtmoDist (random init)": random_distance(trained, spec.seed)}
    return {name: {split: distance_features(model, pairs) for split, pairs in sets.items()}
            for name, model in models.items()}


def _pair_sets(paths: dict[str, str], channels: tuple[Channel, ...], box: tuple[int, int, int],
               spec: ProbeSpec) -> dict[str, PairSet]:
    sets = {}
    for split in SPLITS:
        source = pair_source(paths[split], channels, box[0], box[1:], spec.lags, spec.step_hours,
                             spec.max_latitude)
        if split == "test":
            pairs = evaluation_pairs(source, spec.test)
        else:
            count = spec.train_pairs if split == "train" else spec.validation_pairs
            pairs = PairSampler(source, spec.seed + SPLITS.index(split)).draw(count)
        sets[split] = PairSet(source, pairs)
    return sets


def probe_representations(train: str | Path, validation: str | Path, test: str | Path,
                          checkpoint: str | Path | None = None, distance: str | Path | None = None,
                          spec: ProbeSpec = ProbeSpec(),
                          log: Callable[[str], None] | None = None) -> ProbeResult:
    """The lag probe on each representation (see the module docstring).

    Args:
        train, validation, test: prepared stores: the probe's fit, its penalty, its scores.
        checkpoint: an AtmoRep checkpoint or run directory (rows ``AtmoRep (...)`` and box statistics);
            its box sets the boxes of every representation.
        distance: an AtmoDist model or run directory (rows ``AtmoDist (...)``); its channels are the
            patches' (default: vorticity and divergence at sigma 0.835); without a checkpoint its
            training patch is the box.
        spec: pairs and fit.
        log: called with a line per representation scored.

    Raises:
        DataError: neither a checkpoint nor a distance model, or stores the pairs do not fit.
    """
    if checkpoint is None and distance is None:
        raise DataError("the lag probe needs an AtmoRep checkpoint, an AtmoDist model, or both")
    paths = {"train": str(train), "validation": str(validation), "test": str(test)}
    model = load_distance(distance) if distance is not None else None
    channels = (tuple(Channel(field=f, level=lv) for f, lv in model.channels) if model is not None
                else PairSpec().channels)
    if checkpoint is not None:
        box = tuple(read_meta(resolve_checkpoint(checkpoint))["box"])
    else:
        box = (1, *model.meta["patch"])
    sets = _pair_sets(paths, channels, box, spec)
    features: Features = {}
    models: dict[str, str] = {}  # representation -> the model it comes from
    if checkpoint is not None:
        features.update(_backbone_features(Path(checkpoint), sets, spec, paths))
        backbone = str(resolve_checkpoint(checkpoint))
        models.update(dict.fromkeys((name for name in features if name != INPUTS), backbone))
    if model is not None:
        found = _distance_features(model, sets, spec)
        features.update(found)
        models.update(dict.fromkeys(found, model.meta["path"]))
    result = _score(features, sets, spec, log or logger.info)
    result.table.insert(1, "model", [models.get(name, "") for name in result.table["representation"]])
    return result


def _score(features: Features, sets: dict[str, PairSet], spec: ProbeSpec, log: Callable[[str], None]
           ) -> ProbeResult:
    test = sets["test"]
    rows, per_lag = [], {}
    median = int(np.median(sets["train"].lags))
    predictions = {CONSTANT: (np.full(len(test.pairs), median), None, float("nan"), 0)}
    for name, splits in features.items():
        data = {split: (pair_features(*splits[split]), sets[split].lags) for split in SPLITS}
        probe, validation_accuracy = fit_probe(data["train"], data["validation"], spec.lags, spec.penalties)
        predictions[name] = (probe.predict(data["test"][0]), probe.penalty, validation_accuracy,
                             splits["train"][0].shape[1])
    for name, (predicted, penalty, validation_accuracy, width) in predictions.items():
        scores = lag_scores(predicted, test.lags, test.days, spec.step_hours, spec.bootstrap, spec.seed)
        rows.append({"representation": name, "features": width, "penalty": penalty,
                     "validation_accuracy": validation_accuracy, **scores,
                     "train_pairs": len(sets["train"].pairs), "test_pairs": len(test.pairs),
                     "test_days": int(np.unique(test.days).size)})
        per_lag[name] = [float(np.mean(predicted[test.lags == k] == k)) for k in range(1, spec.lags + 1)]
        log(f"{name}: accuracy {scores['accuracy']:.3f} [{scores['accuracy_low']:.3f}, "
            f"{scores['accuracy_high']:.3f}], mean absolute lag error {scores['mae_hours']:.2f} h")
    lag_table = pd.DataFrame(per_lag, index=pd.Index(np.arange(1, spec.lags + 1) * spec.step_hours,
                                                     name="lag_hours"))
    return ProbeResult(pd.DataFrame(rows), lag_table, {split: len(s.pairs) for split, s in sets.items()})


__all__ = ["CONSTANT", "INPUTS", "LinearProbe", "ProbeResult", "ProbeSpec", "fit_probe",
           "lag_scores", "pair_features", "probe_representations"]
