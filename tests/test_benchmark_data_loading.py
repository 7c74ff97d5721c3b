"""The data-loading benchmark's own machinery: byte counting, the naive loader, the report file."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from atmorep.data.prepare import prepare_dataset
from tests.data.synthetic import internal_dataset

BOX = (12, 8, 16)


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "data_loading.py"
    spec = importlib.util.spec_from_file_location("benchmark_data_loading", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("bench") / "store.zarr"
    return str(prepare_dataset(internal_dataset(times=24), path, box=BOX))


def test_counting_store_counts_chunk_reads(bench, store):
    group, counts = bench.counting_group(store)
    array = group["t"]  # chunks (6, 2, 4, 8)
    array[6:12, :, 4:8, 8:16]  # exactly one chunk
    assert (counts.chunks, counts.decoded) == (1, 6 * 2 * 4 * 8 * 4)
    assert counts.stored == (Path(store) / "t" / "c" / "1" / "0" / "1" / "1").stat().st_size
    array[0:7, :, 0:1, 0:1]  # two chunks along time
    assert counts.chunks == 3


def test_naive_loader_yields_the_batches_of_box_dataset(bench, store):
    ours, _ = bench._ours(store, BOX, boxes=3)
    naive, _ = bench._naive(store, BOX, boxes=3)
    for _ in range(3):
        first, second = next(ours), next(naive)
        assert first.keys() == second.keys()
        for name in first:
            torch.testing.assert_close(first[name], second[name], rtol=0, atol=1e-5)


def test_child_measures_bytes_and_memory(bench, store):
    result = bench.child("ours", store, BOX, batches=2, boxes=2)
    assert result["samples_per_s"] > 0
    assert result["decoded_per_sample"] >= 1.0  # a box decodes at least its own bytes
    assert result["stored_per_sample"] > 0
    assert result["peak_mb"] >= result["baseline_mb"] - 1
    sample = sum(n * 12 * 8 * 16 * 4 for n in (1, 2, 2)) / 1e6  # sp, t, u: [L, T, H, W] float32
    assert result["sample_mb"] == pytest.approx(sample)


def test_write_doc_replaces_only_its_section(bench, tmp_path, monkeypatch):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Training\n\nsteps/s\n")
    monkeypatch.setattr(bench, "DOC", doc)
    bench.write_doc("## Data loading\n\nfirst\n")
    bench.write_doc("## Data loading\n\nsecond\n")
    text = doc.read_text()
    assert text.count("## Data loading") == 1 and "second" in text and "first" not in text
    assert "## Training\n\nsteps/s" in text
    doc.write_text("# Benchmarks\n\n## Data loading\n\nold\n\n## Training\n\nsteps/s\n")
    bench.write_doc("## Data loading\n\nnew\n")
    assert doc.read_text() == "# Benchmarks\n\n## Data loading\n\nnew\n\n## Training\n\nsteps/s\n"


def test_analytic_field_is_quantised(bench):
    levels = np.asarray([500.0, 850.0])
    block = bench._analytic_block({None: {"array-location": [(0, 2), (0, 2), (0, 5), (0, 7)]}}, levels=levels)
    assert block.shape == (2, 2, 5, 7) and block.dtype == np.float32
    assert np.array_equal(block * 64, np.round(block * 64))
