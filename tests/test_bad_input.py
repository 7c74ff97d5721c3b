"""The bad-input catalogue (docs/data.md): every case through the command line, as a user meets it.

Each bad case must end with exit status 2, one line on stderr that names the file, variable or key and
what was expected, no traceback, and nothing written (no store, no temporary left beside it, an
existing output untouched). The handled cases (data that is odd but valid) must prepare, with the
warning the documentation promises.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from typer.testing import CliRunner

from atmorep.cli import app
from tests.data.conftest import (
    cfgrib_netcdf_layout,
    corrupt_zarr,
    make_reference,
    time_index_layout,
    truncate_file,
    write_grib,
    write_netcdf,
)
from tests.data.test_grids import LAMBERT, write_grib_on
from tests.infer.conftest import checkpoint, coarse_store, infer_root, truth_store  # noqa: F401 (fixtures)
from tests.train.conftest import stores, write_config  # noqa: F401 (fixtures)

OUT = "out.zarr"


def _reference(tmp: Path, name: str = "src.nc", transform=lambda ds: ds) -> str:
    return write_netcdf(transform(make_reference()), tmp / name)


def _grib(tmp: Path, name: str = "t.grib2", level_type: str = "isobaricInhPa", mode: str = "wb") -> str:
    pytest.importorskip("cfgrib")
    expected = make_reference()[["t"]].isel(time=[0, 1]).sel(level=[500.0, 850.0])
    return write_grib(expected, tmp / name, level_type=level_type, mode=mode)


def _junk(tmp: Path, name: str) -> str:
    (tmp / name).write_bytes(b"\x01junk" * 200)
    return str(tmp / name)


def _text_file(path: Path) -> str:
    path.write_text("not data")
    return str(path)


def _pick(dim: str, order: list[int]) -> Callable:
    return lambda ds: ds.isel({dim: order})


def _times(order) -> Callable:
    return _pick("time", order)


def _mixed_grib(tmp: Path) -> str:
    _grib(tmp, "mixed.grib2")
    return _grib(tmp, "mixed.grib2", level_type="hybrid", mode="ab")


def _nan_level(ds):
    t = ds.t.values.copy()
    t[:, 1] = np.nan  # every value at 850 hPa
    return ds.assign(t=(ds.t.dims, t, ds.t.attrs))


def _ensemble(name: str) -> Callable:
    def layout(ds):
        return make_reference(members=3).rename(member=name)
    return layout


# case -> (make(tmp) -> command-line arguments after `atmorep`, expected message regex)
PREPARE: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "missing-file": (lambda tmp: [str(tmp / "none.nc")], r"none\.nc: file does not exist"),
    "corrupted-grib": (lambda tmp: [_junk(tmp, "junk.grib")], r"junk\.grib: cannot read as grib"),
    "truncated-grib": (lambda tmp: [truncate_file(_grib(tmp, "cut.grib2"), lambda n: n - 7)],
                       r"cut\.grib2: cannot read as grib"),
    "corrupted-netcdf": (lambda tmp: [_junk(tmp, "junk.nc")], r"junk\.nc: cannot read as netcdf"),
    "truncated-netcdf4": (lambda tmp: [truncate_file(_reference(tmp, "cut.nc"), lambda n: n // 2)],
                          r"cut\.nc: cannot read as netcdf"),
    "truncated-netcdf3": (lambda tmp: [truncate_file(write_netcdf(make_reference(), tmp / "cut3.nc",
                                                              fmt="NETCDF3_64BIT"), lambda n: n // 2)],
                          r"cut3\.nc: truncated or corrupted netCDF-3"),
    "corrupted-zarr": (lambda tmp: [corrupt_zarr(make_reference(), tmp / "broken.zarr")],
                       r"broken\.zarr: cannot read as zarr"),
    "unknown-format": (lambda tmp: [_text_file(tmp / "notes.txt")], r"notes\.txt: unknown data format"),
    "missing-field": (lambda tmp: [_reference(tmp), "--fields", "q"],
                      r"src\.nc: field\(s\) q not found \(available: t, u, tp\)"),
    "missing-level": (lambda tmp: [_reference(tmp), "--levels", "700"],
                      r"src\.nc: level\(s\) \[700\.0\] not found \(pressure levels available: \[500\.0, "
                      r"850\.0, 1000\.0\] hPa\)"),
    "levels-in-pa": (lambda tmp: [_reference(tmp), "--levels", "50000"],
                     r"src\.nc: level\(s\) \[50000\.0\] not found .* hPa\)"),
    "duplicated-times": (lambda tmp: [_reference(tmp, transform=_times([0, 1, 1, 2]))],
                         r"src\.nc: duplicated time 2020-01-01T06:00:00 at indices \[1, 2\]"),
    "unsorted-times": (lambda tmp: [_reference(tmp, transform=_times([0, 2, 1, 3]))],
                       r"src\.nc: times not sorted at index 2"),
    "irregular-times": (lambda tmp: [_reference(tmp, transform=_times([0, 1, 3]))],
                        r"src\.nc: irregular time steps at index 2 .*expected equally spaced times"),
    "irregular-longitude": (lambda tmp: [_reference(tmp, transform=_pick("longitude", [0, 1, 3, 4]))],
                            r"src\.nc: irregular longitude spacing at index 2"),
    "non-monotonic-latitude": (lambda tmp: [_reference(tmp, transform=_pick("latitude", [0, 2, 1, 3]))],
                               r"src\.nc: latitude not strictly monotonic at index 2"),
    "all-nan-level": (lambda tmp: [_reference(tmp, transform=_nan_level)],
                      r"src\.nc: field 't' at level 850 holds no value but NaN .*--fields or --levels"),
    "mixed-level-types": (lambda tmp: [_mixed_grib(tmp)],
                          r"mixed\.grib2: GRIB field 't' comes on several level types \(hybrid, "
                          r"isobaricInhPa\); select one with --filter typeOfLevel=hybrid"),
    "filter-matches-nothing": (lambda tmp: [_grib(tmp), "--filter", "typeOfLevel=surface"],
                               r"t\.grib2: no GRIB message matches --filter typeOfLevel=surface"),
    "filter-on-netcdf": (lambda tmp: [_reference(tmp), "--filter", "typeOfLevel=surface"],
                         r"src\.nc: --filter selects GRIB messages; this is a netcdf source"),
    "lambert-grid": (lambda tmp: [write_grib_on(tmp / "lam.grib2", "GRIB2", LAMBERT)],
                     r"lam\.grib2: variable 't' is on a GRIB grid of type 'lambert' \(Lambert conformal\), "
                     r"not a regular latitude-longitude grid; regrid"),
    "integer-time-dimension": (lambda tmp: [_reference(tmp, transform=time_index_layout)],
                               r"src\.nc: variable 't' has dimensions \(time_index, .*--time-dim time_index "
                               r"--time-units 'hours since 1940-01-01'"),
    "time-without-units": (lambda tmp: [_reference(tmp, transform=time_index_layout),
                                        "--time-dim", "time_index"],
                           r"src\.nc: time 'time' holds numbers \(int64\) without CF units .*--time-units"),
    "bad-time-units": (lambda tmp: [_reference(tmp, transform=time_index_layout), "--time-dim", "time_index",
                                    "--time-units", "hours"],
                       r"src\.nc: time units 'hours' \(--time-units\)"),
    "member-not-found-number": (lambda tmp: [_reference(tmp, transform=_ensemble("number")), "--member", "7"],
                                r"src\.nc: member 7 not found \(members: \[0, 1, 2\]\)"),
    "member-not-found-member": (lambda tmp: [_reference(tmp, transform=_ensemble("member")), "--member", "7"],
                                r"src\.nc: member 7 not found"),
    "member-not-found-realization": (lambda tmp: [_reference(tmp, transform=_ensemble("realization")),
                                                  "--member", "7"], r"src\.nc: member 7 not found"),
    "two-ensemble-dimensions": (lambda tmp: [_reference(tmp, transform=lambda ds: _ensemble("number")(ds)
                                                        .expand_dims(realization=[0, 1]))],
                                r"src\.nc: several ensemble dimensions \(number, realization\)"),
    "bad-rename": (lambda tmp: [_reference(tmp), "--rename", "time_index"], r"--rename must be KEY=VALUE"),
    "rename-of-nothing": (lambda tmp: [_reference(tmp), "--rename", "clock=time"],
                          r"src\.nc: cannot rename 'clock' \(--rename\): no such variable or dimension"),
    "unknown-transform": (lambda tmp: [_reference(tmp), "--transform", "tp=sqrt"],
                          r"transform 'sqrt' of field 'tp' is unknown; expected one of log1p"),
    "bad-member-option": (lambda tmp: [_reference(tmp), "--member", "first"],
                          r"--member must be an index or 'all', got 'first'"),
}


def invoke(args: list[str]):
    return CliRunner().invoke(app, args)


def assert_one_line_error(result, pattern: str) -> None:
    import re

    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an unhandled exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in result.output


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("case", sorted(PREPARE))
def test_prepare_catalogue(case, tmp_path):
    make, pattern = PREPARE[case]
    args = make(tmp_path)
    before = sorted(os.listdir(tmp_path))
    assert_one_line_error(invoke(["data", "prepare", *args, str(tmp_path / OUT)]), pattern)
    assert sorted(os.listdir(tmp_path)) == before  # no store and no temporary left


def test_existing_output_is_refused_and_untouched(tmp_path):
    source = _reference(tmp_path)
    assert invoke(["data", "prepare", source, str(tmp_path / OUT)]).exit_code == 0
    stamp = (tmp_path / OUT / "zarr.json").read_bytes()
    assert_one_line_error(invoke(["data", "prepare", source, str(tmp_path / OUT)]),
                          r"out\.zarr' already exists \(use --overwrite to replace it\)")
    assert (tmp_path / OUT / "zarr.json").read_bytes() == stamp


def test_store_of_a_newer_format(tmp_path):
    assert invoke(["data", "prepare", _reference(tmp_path), str(tmp_path / OUT)]).exit_code == 0
    group = zarr.open_group(tmp_path / OUT, mode="r+")
    group.attrs["atmorep_format"] = "atmorep-store-99"
    zarr.consolidate_metadata(tmp_path / OUT)
    assert_one_line_error(invoke(["data", "info", str(tmp_path / OUT)]),
                          r"has format 'atmorep-store-99'; this atmorep reads 'atmorep-store-1' .*upgrade")


def test_config_key_of_the_wrong_type(stores, tmp_path):  # noqa: F811
    path = write_config(tmp_path / "run.yaml", stores, tmp_path / "run")
    config = yaml.safe_load(path.read_text())
    config["train"]["max_steps"] = "many"
    path.write_text(yaml.safe_dump(config))
    assert_one_line_error(invoke(["train", "--config", str(path)]),
                          r"run\.yaml: train\.max_steps: Input should be a valid integer")
    assert not (tmp_path / "run").exists()


def test_checkpoint_from_another_grid(checkpoint, coarse_store, tmp_path):  # noqa: F811
    out = tmp_path / "prediction.zarr"
    result = invoke(["infer", "--checkpoint", str(checkpoint), "--data", str(coarse_store), "-o", str(out),
                     "--task", "forecast", "--time", "2001-03-01T10", "--device", "cpu"])
    assert_one_line_error(result, r"10 degree grid")
    assert not out.exists()


# ------------------------------------------------------------- odd but valid: prepared, as documented


def _prepared(args: list[str], tmp: Path):
    result = invoke(["data", "prepare", *args, str(tmp / OUT)])
    assert result.exit_code == 0, result.output
    return zarr.open_group(tmp / OUT, mode="r")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_grib_with_missing_values_prepares_with_a_nan_report(tmp_path, caplog):
    pytest.importorskip("cfgrib")
    expected = make_reference()[["t"]].isel(time=[0, 1]).sel(level=[500.0, 850.0])
    t = expected.t.values.copy()
    t[0, 0, :3, :5] = np.nan  # a bitmap marks these points missing
    path = write_grib(expected.assign(t=(expected.t.dims, t)), tmp_path / "gaps.grib2")
    group = _prepared([path], tmp_path)
    stored = group["t"][...]
    assert np.array_equal(np.isnan(stored), np.isnan(t))
    assert np.allclose(stored[~np.isnan(stored)], t[~np.isnan(t)])
    assert "field 't' holds NaN" in caplog.text


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ["number", "member", "realization"])
def test_an_ensemble_under_each_name_keeps_its_members(name, tmp_path):
    group = _prepared([_reference(tmp_path, transform=_ensemble(name))], tmp_path)
    assert group.attrs["atmorep_members"] == 3
    assert list(group["member"][...]) == [0, 1, 2]
    one = _prepared([_reference(tmp_path, "b.nc", transform=_ensemble(name)), "--member", "2", "--overwrite"],
                    tmp_path)
    assert one.attrs["atmorep_members"] == 1
    assert np.allclose(one["t"][...], make_reference().t.values + 2)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_levels_in_pa_are_read_as_hpa(tmp_path):
    def in_pa(ds):
        return ds.rename(level="plev").assign_coords(plev=("plev", ds.level.values * 100, {"units": "Pa"}))

    group = _prepared([_reference(tmp_path, transform=in_pa), "--levels", "500,850"], tmp_path)
    assert list(group["level"][...]) == [500.0, 850.0]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mixed_level_types_prepare_with_a_filter(tmp_path):
    path = _mixed_grib(tmp_path)
    group = _prepared([path, "--filter", "typeOfLevel=hybrid"], tmp_path)
    assert group["level"].attrs["level_kind"] == "model"
    shutil.rmtree(tmp_path / OUT)
    group = _prepared([path, "--filter", "typeOfLevel=isobaricInhPa", "--filter", "level=500"], tmp_path)
    assert list(group["level"][...]) == [500.0]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_short_numeric_step_file_prepares_with_a_warning(tmp_path, caplog):
    """The first failures users met: a 4-step cfgrib netCDF (numeric step) with the default box."""
    group = _prepared([_reference(tmp_path, transform=cfgrib_netcdf_layout)], tmp_path)
    assert group["time"].shape == (4,)
    assert "is larger than the data" in caplog.text
