"""Scoring: baselines on cases with known answers, the bootstrap, the tables of a scored model."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from atmorep.distance.baselines import (
    DiurnalOracle,
    LogisticRegression,
    chance_outcomes,
    pixel_measures,
    ranked_outcomes,
)
from atmorep.distance.bootstrap import Bootstrap
from atmorep.distance.config import EvaluationSpec, Source
from atmorep.distance.pairs import PairSampler, PatchSource, evaluation_pairs
from atmorep.distance.score import score_distance
from tests.distance.conftest import SPEC


def test_the_diurnal_oracle_is_exact_when_the_hours_determine_the_lag(stores):
    source = PatchSource(Source(path=stores["train"]), SPEC)  # lags 3..12 h: lag mod 24 is the lag
    every = EvaluationSpec(time_stride_hours=1, latitude_places=1, longitude_stride=36)
    fitted = evaluation_pairs(source, every)  # every first time: every pair of hours is seen
    oracle = DiurnalOracle(SPEC.lags).fit(source.hours(fitted.time), source.hours(source.second_time(fitted)),
                                          fitted.lag - 1)
    test = PatchSource(Source(path=stores["validation"]), SPEC)
    pairs = PairSampler(test, 0).draw(500)
    scores = oracle.scores(test.hours(pairs.time), test.hours(test.second_time(pairs)))
    outcome = ranked_outcomes(scores, pairs.lag - 1, SPEC.step_hours)
    assert outcome["top1"].mean() == 1.0 and outcome["abs_error_hours"].max() == 0.0


def test_the_diurnal_oracle_splits_lags_a_day_apart():
    hours = np.arange(48) % 24
    labels = np.r_[np.zeros(24, int), np.full(24, 8)]  # 3 h and 27 h: the same hours
    oracle = DiurnalOracle(16).fit(hours, (hours + 3) % 24, labels)
    outcome = ranked_outcomes(oracle.scores(hours, (hours + 3) % 24), labels, 3.0)
    assert outcome["top1"].mean() == 0.5 and outcome["top3"].mean() == 1.0
    assert outcome["abs_error_hours"].mean() == 12.0


def test_chance_is_scored_by_its_expectation():
    outcome = chance_outcomes(np.array([0, 3]), classes=4, step_hours=3.0)
    assert np.allclose(outcome["top1"], 0.25) and np.allclose(outcome["top3"], 0.75)
    assert np.allclose(outcome["abs_error_hours"], [4.5, 4.5])  # (0 + 1 + 2 + 3) / 4 steps of 3 h


def test_logistic_regression_separates_classes_that_a_feature_orders():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 1000)
    features = np.c_[labels + rng.normal(0, 0.2, labels.size), rng.normal(size=labels.size)]
    regression = LogisticRegression(5, iterations=50).fit(features, labels)
    assert (regression.scores(features).argmax(1) == labels).mean() > 0.95  # 98.8 % of N(0, 0.2) < 0.5
    assert np.allclose(np.exp(regression.scores(features)).sum(1), 1.0)


def test_the_logistic_fit_is_a_stationary_point_of_its_penalised_loss():
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(300, 5)), rng.integers(0, 4, 300)
    regression = LogisticRegression(4, penalty=0.01).fit(features, labels)
    regression.weight.requires_grad_(True)
    regression.bias.requires_grad_(True)
    x = (torch.as_tensor(features) - regression.centre) / regression.spread
    regression.loss(x, torch.as_tensor(labels)).backward()
    assert regression.weight.grad.abs().max() < 1e-6 and regression.bias.grad.abs().max() < 1e-6
    assert np.all(regression.predict(features) == regression.scores(features).argmax(1))


def test_pixel_measures_of_identical_and_opposite_patches():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 2, 4, 8))
    same, opposite = pixel_measures(a, a), pixel_measures(a, -a)
    assert np.allclose(same[:, :4], 0) and np.allclose(same[:, 8:], 1)  # L2, L1 zero; correlation 1
    assert np.allclose(opposite[:, 8:], -1)
    assert np.allclose(opposite[:, :2], 2 * np.sqrt((a**2).mean(axis=(2, 3))))


def test_the_bootstrap_resamples_days():
    days = np.repeat([10, 11, 12], 4)
    boot = Bootstrap.over(days, resamples=200, seed=0)
    assert boot.weights.shape == (200, 3) and np.all(boot.weights.sum(1) == 3)
    constant = boot.mean(np.full(12, 0.7))
    assert [constant[key] for key in ("value", "low", "high")] == pytest.approx([0.7] * 3)
    by_day = boot.mean(np.repeat([0.0, 0.5, 1.0], 4))
    assert by_day["value"] == 0.5 and 0 <= by_day["low"] < 0.5 < by_day["high"] <= 1
    assert boot.mean(np.repeat([0.0, 0.5, 1.0], 4), days == 12)["value"] == 1.0
    rho = boot.spearman(np.arange(12.0), np.arange(12.0))
    assert [rho[key] for key in ("value", "low", "high")] == pytest.approx([1.0] * 3)


def test_a_scored_model_writes_its_tables(trained, stores, tmp_path):
    result = score_distance(trained, stores["validation"], tmp_path / "scores", control=stores["control"])
    methods = result["methods"]
    assert set(methods) == {"network", "chance", "patch means and stds", "pixel L2, L1, correlation",
                            "diurnal oracle", "network, control pairs"}
    assert methods["chance"]["top1"]["value"] == pytest.approx(0.25)
    assert methods["diurnal oracle"]["top1"]["value"] == 1.0  # lags shorter than a day
    assert result["pairs"] == 6 * 4 * 2 * 3 and result["lags_hours"] == [3.0, 6.0, 9.0, 12.0]
    for name in ("learned distance", "random encoder", "pixel L2"):
        assert len(result["distance"][name]["mean_per_lag"]) == 4
    # the synthetic wave drifts steadily: the pixel L2 rises with the lag
    assert result["distance"]["pixel L2"]["strictly_rising"]
    with open(tmp_path / "scores" / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["method"] for row in rows] == list(methods)
    with open(tmp_path / "scores" / "per_lag.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 4
    assert json.loads((tmp_path / "scores" / "scores.json").read_text())["pairs"] == result["pairs"]
    assert "| diurnal oracle | 100.0" in (tmp_path / "scores" / "summary.md").read_text()
