"""The ``atmorep data`` commands: output on good input, one-line errors with exit status 2 on bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from atmorep.cli import app
from atmorep.data.prepare import prepare_dataset
from atmorep.data.store import Store
from tests.data.synthetic import internal_dataset

BOX = "12,8,16"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("cli") / "store.zarr"
    return str(prepare_dataset(internal_dataset(times=24), path, box=(12, 8, 16)))


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def assert_one_line_error(result, *fragments: str) -> None:
    """Exit status 2, one line on stderr naming the problem, no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # not an unhandled exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output


def test_info_describes_the_store(store):
    result = invoke("data", "info", store)
    assert result.exit_code == 0, result.output
    statistics = Store(store).statistics
    for text in ("24 steps of 60 minutes", "19 latitudes", "36 longitudes", "pressure: 500, 850",
                 "NaN", "none", "6x2x4x8", "6x4x8", "K", "m s-1", "Pa",
                 f"{statistics['t'].mean[0]:.5g}", f"{statistics['u'].std[1]:.5g}"):
        assert text in result.stdout, text


def test_sample_prints_a_table(store):
    result = invoke("data", "sample", store, "--box", BOX, "--batches", "2", "--boxes-per-window", "3",
                    "--fields", "t,sp")
    assert result.exit_code == 0, result.output
    assert "2 batches of 3 boxes (12, 8, 16)" in result.stdout
    assert "samples/s" in result.stdout
    assert "batch" in result.stdout and "first time" in result.stdout
    assert "u (" not in result.stdout  # only the chosen fields


def test_stats_recomputes_and_describes(store):
    result = invoke("data", "stats", store)
    assert result.exit_code == 0, result.output
    assert "fields" in result.stdout


def test_missing_store(tmp_path):
    missing = str(tmp_path / "missing.zarr")
    assert_one_line_error(invoke("data", "info", missing), missing)
    assert_one_line_error(invoke("data", "sample", missing, "--box", BOX), missing)


def test_directory_that_is_not_a_store(tmp_path):
    assert_one_line_error(invoke("data", "info", str(tmp_path)), str(tmp_path))
    plain = tmp_path / "plain.zarr"
    internal_dataset(times=4).to_zarr(plain, zarr_format=3)  # a zarr store, but not a prepared one
    assert_one_line_error(invoke("data", "sample", str(plain), "--box", BOX), "not a complete atmorep store")


def test_info_describes_a_source_file_as_read(tmp_path):
    plain = tmp_path / "plain.zarr"
    internal_dataset(times=4).to_zarr(plain, zarr_format=3)
    result = invoke("data", "info", str(plain))
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "zarr: " in text and "time=4" in text and "t (time, level, latitude, longitude) float32" in text
    assert "a source, not a prepared store" in text


@pytest.mark.parametrize("box", ["12,8", "12,8,16,4", "a,b,c", "12,0,16", "12;8;16"])
def test_bad_box_string(store, box):
    assert_one_line_error(invoke("data", "sample", store, "--box", box), "--box", box)


def test_box_too_large_for_the_grid(store):
    assert_one_line_error(invoke("data", "sample", store, "--box", "12,40,16"), "does not fit", "latitude 19")
    assert_one_line_error(invoke("data", "sample", store, "--box", "25,8,16"), "does not fit", "time 24")


def test_unknown_field(store):
    assert_one_line_error(invoke("data", "sample", store, "--box", BOX, "--fields", "q"), "no field 'q'")


def test_prepare_needs_a_source_and_an_output(tmp_path):
    assert_one_line_error(invoke("data", "prepare", str(tmp_path / "out.zarr")), "at least one source")


@pytest.mark.parametrize("args", [["data", "info", "/nonexistent/store.zarr"],
                                  ["data", "sample", "/nonexistent/store.zarr", "--box", "1,2"]])
def test_real_process_prints_one_line_and_no_traceback(args):
    result = subprocess.run([sys.executable, "-m", "atmorep.cli", *args], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
