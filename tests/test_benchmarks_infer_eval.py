"""The inference and evaluation benchmarks run at their smallest size and report every row."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from atmorep.checkpoint import read_meta
from atmorep.data.store import Store
from atmorep.infer.request import check_compatible

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SMALL_MODEL = ("model.dim=16", "model.heads=2", "model.encoder_layers=1", "model.decoder_layers=1",
               "model.ensemble_members=2")


def _load(name: str):
    if str(BENCHMARKS) not in sys.path:  # as when a benchmark runs as a script: its folder is importable
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def inference():
    yield _load("inference")
    sys.modules.pop("benchmark_inference", None)


@pytest.fixture(scope="module")
def evaluation():
    yield _load("evaluation")
    sys.modules.pop("benchmark_evaluation", None)


@pytest.mark.parametrize("count", [16, 48])
def test_gaussian_latitudes_are_the_roots_of_the_legendre_polynomial(inference, count):
    latitude = sys.modules["synthetic_corpus"].gaussian_latitudes(count)
    roots = np.polynomial.legendre.legval(np.sin(np.deg2rad(latitude)), [0] * count + [1])
    assert np.all(np.diff(latitude) > 0) and np.allclose(latitude, -latitude[::-1])
    np.testing.assert_allclose(roots, 0.0, atol=1e-9)
    if count == 48:  # the T31 grid of the default corpus
        assert latitude[-1] == pytest.approx(87.16, abs=0.01)


def test_the_corpus_store_and_checkpoint_match_as_inference_requires(inference, tmp_path):
    store = inference.make_store(tmp_path / "corpus.zarr", days=1, grid=(16, 64))
    checkpoint = inference.make_checkpoint(tmp_path / "checkpoint", store, SMALL_MODEL)
    opened, meta = Store(store), read_meta(checkpoint)
    assert opened.level_kind.value == meta["level_kind"] == "sigma"
    assert opened.time.size == 24 and np.allclose(opened.level, sorted(sys.modules["synthetic_corpus"].SIGMA))
    config = inference.tiny_config(store, SMALL_MODEL)
    indices = check_compatible(opened, config, meta, checkpoint)  # raises DataError on any mismatch
    corpus = sys.modules["synthetic_corpus"]
    assert indices == {name: [2, 1, 0] for name in corpus.FIELDS}  # config 0.835 .. 0.2, store ascending


@pytest.mark.slow
def test_inference_benchmark_reports_every_configuration(inference, capsys):
    rows = inference.main(["--quick", "--grid", "16,64", "--device", "cpu", *SMALL_MODEL])
    expected = [(setting.name, setting.batch_size) for setting in inference.SETTINGS]
    assert [(row["config"], row["batch size"]) for row in rows] == expected
    members = 2
    for row, setting in zip(rows, inference.SETTINGS):
        tiles = 4 if setting.overlap == 0.5 else 3  # one row of tiles 32 wide, 16 or 24 apart on 64 columns
        assert row["tiles per pass"] == tiles and row["cases"] == 1
        rollout = setting.lead_hours is not None
        assert row["domain passes"] == (2 if rollout else 1)  # a 6 h lead is two 3 h blocks
        fed = {False: tiles, True: tiles + (members * tiles if setting.rollout == "members" else tiles)}
        assert row["tiles"] == fed[rollout]  # a member rollout runs every member's window after step one
        assert row["tiles/s"] * row["seconds"] == pytest.approx(row["tiles"])
        assert 0.0 < row["model share"] <= 1.0
    printed = capsys.readouterr().out
    assert "global forecast inference" in printed and "rollout 6 h, members" in printed


@pytest.mark.slow
def test_evaluation_benchmark_reads_the_same_chunks_from_a_ten_times_longer_archive(evaluation, capsys):
    rows = {r["measure"]: r for r in evaluation.main(["--quick", "--grid", "16,32"])}
    assert list(rows) == ["store days (truth, climatology source)", "stored MB (truth + climatology source)",
                          "score: median s", "evaluate(maps=False): median s",
                          "truth store: chunks read by score", "truth store: MB read by score",
                          "climatology source: chunks read by score", "climatology source: MB read by score"]
    days = rows["store days (truth, climatology source)"]
    assert (days["1x"], days["10x"]) == (1, 10)
    assert rows["stored MB (truth + climatology source)"]["10x / 1x"] > 5
    for store in ("truth store", "climatology source"):
        chunks = rows[f"{store}: chunks read by score"]
        assert chunks["1x"] > 0 and chunks["10x"] == chunks["1x"]
    for timed in ("score: median s", "evaluate(maps=False): median s"):
        assert rows[timed]["1x"] > 0 and rows[timed]["10x"] > 0
    assert "evaluation cost against archive length" in capsys.readouterr().out
