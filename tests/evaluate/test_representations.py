"""The lag probe of frozen representations: its scores on analytic cases, the fit's optimality, the
hidden clock, the pairs' boxes, and the whole probe (``benchmarks/representation_probe.py``) on tiny
stores, an untrained tiny backbone and an untrained tiny distance model."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from atmorep.config import ConfigError
from atmorep.distance.config import Channel
from atmorep.distance.network import EncoderSpec, LagClassifier
from atmorep.distance.pairs import PairSampler
from atmorep.distance.saved import write_distance
from atmorep.errors import DataError
from atmorep.evaluate.representation_features import PairSet, box_features, pair_source, unique_boxes
from atmorep.evaluate.representations import (
    CLOCK,
    CONSTANT,
    INPUTS,
    ProbeSpec,
    fit_probe,
    hidden_clock,
    lag_scores,
    pair_features,
    probe_representations,
)
from atmorep.infer.embed import BoxEmbedder
from tests.infer.conftest import untrained_checkpoint
from tests.train.conftest import make_store

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "representation_probe.py"
LAGS = 4
CHANNELS = (Channel(field="t", level=850.0), Channel(field="u", level=850.0))


# ------------------------------------------------------------------------------------------- scores

def test_perfect_predictions_score_one_and_zero_error():
    lags = np.tile(np.arange(1, 17), 10)
    days = np.repeat(np.arange(10), 16)
    scores = lag_scores(lags, lags, days, step_hours=3.0, bootstrap=200)
    assert scores["accuracy"] == scores["accuracy_low"] == scores["accuracy_high"] == 1.0
    assert scores["mae_hours"] == scores["mae_low"] == scores["mae_high"] == 0.0


def test_a_constant_guess_of_the_median_on_balanced_classes_is_off_by_four_classes():
    lags = np.tile(np.arange(1, 17), 5)  # sum_k |k - 8| / 16 = (28 + 36) / 16 = 4 classes = 12 h
    scores = lag_scores(np.full(lags.size, 8), lags, np.repeat(np.arange(5), 16), step_hours=3.0)
    assert scores["accuracy"] == pytest.approx(1 / 16)
    assert scores["mae_hours"] == pytest.approx(12.0)
    assert scores["mae_low"] == pytest.approx(12.0) and scores["mae_high"] == pytest.approx(12.0)


def test_the_bootstrap_resamples_days_not_pairs():
    lags = np.ones(200, dtype=int)
    predicted = np.r_[np.ones(100, dtype=int), np.full(100, 2)]  # day 0 all right, day 1 all wrong
    days = np.repeat([0, 1], 100)
    scores = lag_scores(predicted, lags, days, step_hours=3.0, bootstrap=2000)
    assert scores["accuracy"] == 0.5
    # a resample of two days is (0, 0), (0, 1) or (1, 1): accuracy 1, 0.5 or 0, each end with chance 1/4
    assert scores["accuracy_low"] == 0.0 and scores["accuracy_high"] == 1.0
    one_day = lag_scores(predicted, lags, np.zeros(200), step_hours=3.0, bootstrap=100)
    assert one_day["accuracy_low"] == one_day["accuracy_high"] == 0.5


# ------------------------------------------------------------------------------------------- probe

def _lag_features(n: int, seed: int, informative: bool):
    """Features of two boxes ``[n, 3]``: a clock and noise; the second clock is the first plus the lag."""
    rng = np.random.default_rng(seed)
    lags = rng.integers(1, 9, n)
    start = rng.uniform(0, 1000, n)
    shift = 3.0 * lags if informative else 3.0 * rng.integers(1, 9, n)
    first = np.stack([start, rng.normal(size=n), rng.normal(size=n)], axis=1)
    second = np.stack([start + shift + rng.normal(0, 0.2, n), rng.normal(size=n), rng.normal(size=n)], axis=1)
    return pair_features(torch.tensor(first), torch.tensor(second)), lags


def test_the_probe_reads_a_lag_that_the_features_hold_and_not_one_they_do_not():
    probe, _ = fit_probe(_lag_features(800, 0, True), _lag_features(200, 1, True), 8, (1e-4, 1e-2))
    x, lags = _lag_features(1000, 2, True)
    assert np.mean(probe.predict(x) == lags) > 0.95
    blind, _ = fit_probe(_lag_features(800, 0, False), _lag_features(200, 1, False), 8, (1e-4, 1e-2))
    x, lags = _lag_features(1000, 3, True)
    assert np.mean(blind.predict(x) == lags) < 0.2  # chance is 1/8


def test_the_probe_options_are_checked():
    with pytest.raises(ConfigError, match="train_pairs"):
        ProbeSpec(train_pairs=3)
    with pytest.raises(ConfigError, match="penalties"):
        ProbeSpec(penalties=())


# ------------------------------------------------------------------------------------------- data

@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("probe")
    return {split: make_store(root / f"{split}.zarr", seed=seed)
            for seed, split in enumerate(("train", "validation", "test"))}


@pytest.fixture(scope="module")
def backbone(stores, tmp_path_factory) -> Path:
    return untrained_checkpoint(stores["train"], tmp_path_factory.mktemp("backbone") / "run")


@pytest.fixture(scope="module")
def distance(tmp_path_factory) -> Path:
    """An untrained distance model of t and u at 850 hPa (4 lags of 3 h, 2 stages of width 4)."""
    spec = EncoderSpec(width=4, stages=2, blocks=1, head_width=8)
    torch.manual_seed(0)
    classifier = LagClassifier(len(CHANNELS), LAGS, spec)
    normalisation = {"channels": [{"field": "t", "level": 850.0, "mean": 290.0, "scale": 20.0},
                                  {"field": "u", "level": 850.0, "mean": 8.0, "scale": 10.0}]}
    calibration = (torch.randn(8, 2, 8, 8) * 10 + 280, torch.randn(8, 2, 8, 8) * 10 + 280)
    meta = {"channels": [c.label for c in CHANNELS], "lags": LAGS, "step_hours": 3.0, "patch": [8, 8],
            "network": spec.model_dump(mode="json")}
    return write_distance(tmp_path_factory.mktemp("distance") / "model", classifier, {}, normalisation,
                          calibration, meta)


@pytest.fixture(scope="module")
def pairs(stores) -> PairSet:
    source = pair_source(str(stores["train"]), CHANNELS, 6, (8, 8), LAGS, 3.0, 60.0)
    return PairSet(source, PairSampler(source, seed=0).draw(30))


def test_every_pair_maps_to_its_two_boxes_which_fit_in_the_store(pairs):
    origins, first, second = unique_boxes(pairs)
    p = pairs.pairs
    np.testing.assert_array_equal(origins.time[first], p.time)
    np.testing.assert_array_equal(origins.time[second], pairs.source.second_time(p))
    np.testing.assert_array_equal(origins.latitude[second], p.latitude)
    np.testing.assert_array_equal(origins.longitude[first], p.longitude)
    keys = np.stack([origins.time, origins.latitude, origins.longitude], axis=1)
    assert np.unique(keys, axis=0).shape[0] == len(origins)  # each box once
    assert origins.time.max() + 5 < pairs.source.time.size  # the second box's last step is in the store


def test_box_features_are_the_pooled_encoder_states(backbone, stores, pairs):
    clock = hidden_clock(np.datetime64("2001-03-01"))
    embedder = BoxEmbedder.open(backbone, stores["train"]).with_alpha(clock)
    origins, _, _ = unique_boxes(pairs)
    features = box_features({"model": embedder}, origins.take(slice(0, 7)), batch_size=3)
    expected = embedder.states(origins.take(slice(0, 7))).pooled()
    torch.testing.assert_close(features["model"], expected, rtol=1e-5, atol=1e-6)
    assert features[INPUTS].shape == (7, 2 * 2 * 2)  # mean and std of 2 fields x 2 levels


def test_a_hidden_clock_makes_the_states_blind_to_when_a_box_lies(backbone, stores):
    assert [o.value for o in hidden_clock(np.datetime64("2000-02-01T06"))] == [2000.0, 31.0, 6.0]
    visible = BoxEmbedder.open(backbone, stores["train"])
    batch = visible.read(visible.origins((np.datetime64("2001-03-01T02"),), all_tiles=True))
    later = replace(batch, metadata=replace(batch.metadata, time=batch.metadata.time + 86400 * 40))
    hidden = visible.with_alpha(hidden_clock(np.datetime64("2001-03-01")))
    assert torch.equal(hidden.encode(batch)["t"], hidden.encode(later)["t"])
    assert not torch.allclose(visible.encode(batch)["t"], visible.encode(later)["t"])


def test_the_probe_needs_a_representation(stores):
    with pytest.raises(DataError, match="needs an AtmoRep checkpoint"):
        probe_representations(stores["train"], stores["validation"], stores["test"])


# ------------------------------------------------------------------------------------------- the benchmark

@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("benchmark_representation_probe", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _arguments(stores, backbone, distance, output) -> list[str]:
    return ["--checkpoint", str(backbone), "--distance", str(distance), "--train", str(stores["train"]),
            "--validation", str(stores["validation"]), "--test", str(stores["test"]), "--lags", str(LAGS),
            "--train-pairs", "40", "--validation-pairs", "20", "--test-stride-hours", "6",
            "--test-latitudes", "1", "--test-longitude-stride", "18", "--bootstrap", "50", "--seed", "1",
            "-o", str(output)]


@pytest.fixture(scope="module")
def scores(benchmark, stores, backbone, distance, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("scores")
    assert benchmark.main(_arguments(stores, backbone, distance, output)) == 0
    return output


def test_the_benchmark_scores_every_representation_on_the_balanced_test_pairs(scores, backbone, distance):
    table = pd.read_csv(scores / "scores.csv", keep_default_na=False)
    models = dict(zip(table["representation"], table["model"]))
    assert models["AtmoRep (random init)"] == str(backbone) and models["AtmoDist (trained)"] == str(distance)
    assert models[INPUTS] == models[CONSTANT] == ""
    table = pd.read_csv(scores / "scores.csv")
    assert list(table["representation"]) == [CONSTANT, "AtmoRep (trained)", "AtmoRep (random init)", CLOCK,
                                             INPUTS, "AtmoDist (trained)", "AtmoDist (random init)"]
    widths = dict(zip(table["representation"], table["features"]))
    assert widths["AtmoRep (trained)"] == 2 * 32 and widths[INPUTS] == 8 and widths["AtmoDist (trained)"] == 8
    # first times 0, 6, ..., 30 h (the longest lag, 12 h, and a 6-step box fit before 48 h), 4 lags, 2 places
    assert (table["test_pairs"] == 6 * LAGS * 2).all() and (table["train_pairs"] == 40).all()
    assert table["accuracy"].between(0, 1).all()
    assert (table["accuracy_low"] <= table["accuracy"] + 1e-12).all()
    assert (table["accuracy"] <= table["accuracy_high"] + 1e-12).all()
    constant = table.set_index("representation").loc[CONSTANT]
    assert constant["accuracy"] == pytest.approx(1 / LAGS)  # balanced classes
    assert constant["mae_hours"] == pytest.approx(3.0)  # a median of 2 or 3: off by 1 class on average
    per_lag = pd.read_csv(scores / "per_lag.csv", index_col="lag_hours")
    assert list(per_lag.index) == [3.0, 6.0, 9.0, 12.0]
    np.testing.assert_allclose(per_lag.mean(axis=0).to_numpy(), table["accuracy"].to_numpy(), rtol=1e-3)


def test_the_benchmark_reports_bad_input_on_one_line(benchmark, stores, backbone, distance, tmp_path, capsys):
    arguments = _arguments(stores, backbone, distance, tmp_path / "out")
    assert benchmark.main([*arguments, "--train-pairs", "2"]) == 2
    assert benchmark.main([*arguments, "--test-stride-hours", "0"]) == 2
    assert benchmark.main([*arguments, "--checkpoint", str(tmp_path)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 3 and "train_pairs" in lines[0] and "time_stride_hours" in lines[1]
    assert "neither a checkpoint" in lines[2]
    assert not (tmp_path / "out").exists()
