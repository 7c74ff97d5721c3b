"""Prediction stores: round trips, union level axis, incremental appends, atomicity, input checks."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import xarray as xr

from atmorep.errors import DataError
from atmorep.fields import field_spec
from atmorep.io import temporary_sibling
from atmorep.prediction_store import PredictionLayout, PredictionWriter, open_prediction

OFFSETS = np.array([30, 60, 90], dtype="timedelta64[m]")  # P = 3, half-hour steps
TIMES = np.array(["2020-01-01T00", "2020-01-01T06", "2021-03-01T12:00:01"], dtype="datetime64[s]")
LATITUDES = np.array([-30.0, 0.0, 30.0, 60.0])  # H = 4
LONGITUDES = np.array([300.0, 330.0, 0.0, 30.0, 60.0])  # W = 5, a regional range wrapping past 360
FIELDS = {"t": (850.0, 500.0), "u": (700.0, 500.0, 1000.0), "sp": None}  # union: 500, 700, 850, 1000
MEMBERS = 2


def make_layout(**changes) -> PredictionLayout:
    layout = {
        "fields": FIELDS,
        "level_kind": "pressure",
        "prediction_timedelta": OFFSETS,
        "members": MEMBERS,
        "latitude": LATITUDES,
        "longitude": LONGITUDES,
        "attrs": {"task": "infill", "checkpoint": "runs/a", "box": [3, 4, 5], "time_step_hours": 0.5},
        "with_mask": False,
    }
    return PredictionLayout(**{**layout, **changes})


def make_case(layout: PredictionLayout, seed: int) -> dict[str, np.ndarray]:
    """Random finite values of every field, ``[P, E, L_own, H, W]`` or ``[P, E, H, W]``."""
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=layout.case_shape(name)).astype(np.float32) for name in layout.fields}


def make_mask(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((len(OFFSETS), len(LATITUDES), len(LONGITUDES))) < 0.5


def write_store(path, layout: PredictionLayout, seeds=(0, 1, 2), **options) -> list[dict[str, np.ndarray]]:
    cases = [make_case(layout, seed) for seed in seeds]
    with PredictionWriter(path, layout, **options) as writer:
        for time, values, seed in zip(TIMES, cases, seeds):
            writer.write(time, values, make_mask(seed) if layout.with_mask else None)
    return cases


def leftovers(path) -> list[str]:
    """Everything in the store's directory: the store itself and any temporary sibling."""
    return sorted(entry.name for entry in path.parent.iterdir())


def test_round_trip_of_values_at_each_fields_own_levels(tmp_path):
    path = tmp_path / "prediction.zarr"
    cases = write_store(path, make_layout())
    ds = open_prediction(path)
    np.testing.assert_array_equal(ds.level.values, [500.0, 700.0, 850.0, 1000.0])
    assert ds.sizes == {"time": 3, "prediction_timedelta": 3, "member": 2, "level": 4, "latitude": 4,
                        "longitude": 5}
    for index, values in enumerate(cases):
        for name, levels in FIELDS.items():
            stored = ds[name].isel(time=index)
            if levels is None:
                np.testing.assert_array_equal(stored.values, values[name])
                continue
            own = stored.sel(level=list(levels)).values  # [P, E, L_own, H, W] in the field's own order
            np.testing.assert_array_equal(own, values[name])
            others = stored.drop_sel(level=list(levels)).values
            assert others.size and np.isnan(others).all()
    assert ds.t.dims == ("time", "prediction_timedelta", "member", "level", "latitude", "longitude")
    assert ds.sp.dims == ("time", "prediction_timedelta", "member", "latitude", "longitude")
    assert "target_mask" not in ds


def test_coordinates_and_times_round_trip_exactly(tmp_path):
    path = tmp_path / "prediction.zarr"
    write_store(path, make_layout())
    ds = xr.open_zarr(path, consolidated=True)  # the metadata is consolidated
    assert ds.time.dtype == np.dtype("datetime64[ns]")
    assert ds.prediction_timedelta.dtype == np.dtype("timedelta64[ns]")
    np.testing.assert_array_equal(ds.time.values, TIMES.astype("datetime64[ns]"))
    np.testing.assert_array_equal(ds.prediction_timedelta.values, OFFSETS.astype("timedelta64[ns]"))
    assert ds.valid_time.dims == ("time", "prediction_timedelta")
    np.testing.assert_array_equal(ds.valid_time.values, TIMES[:, None] + OFFSETS[None, :])
    np.testing.assert_array_equal(ds.member.values, [0, 1])
    assert ds.member.dtype == np.int64
    np.testing.assert_array_equal(ds.latitude.values, LATITUDES)
    np.testing.assert_array_equal(ds.longitude.values, LONGITUDES)  # the wrapped range is kept as is
    assert all(ds[name].dtype == np.float64 for name in ("level", "latitude", "longitude"))
    assert all(ds[name].dtype == np.float32 for name in FIELDS)


def test_cf_attributes(tmp_path):
    path = tmp_path / "prediction.zarr"
    write_store(path, make_layout())
    ds = open_prediction(path)
    for name in FIELDS:
        spec = field_spec(name)
        assert ds[name].attrs == {"units": spec.units, "long_name": spec.long_name,
                                  "standard_name": spec.standard_name}
    assert ds.latitude.attrs["units"] == "degrees_north" and ds.latitude.attrs["axis"] == "Y"
    assert ds.longitude.attrs["units"] == "degrees_east" and ds.longitude.attrs["axis"] == "X"
    assert ds.level.attrs["units"] == "hPa" and ds.level.attrs["level_kind"] == "pressure"
    assert ds.attrs["Conventions"] == "CF-1.8" and ds.attrs["source"].startswith("atmorep ")
    assert ds.attrs["task"] == "infill" and ds.attrs["box"] == [3, 4, 5]
    assert ds.attrs["time_step_hours"] == 0.5 and ds.attrs["checkpoint"] == "runs/a"
    json.dumps(ds.attrs)


def test_one_chunk_per_case_and_variable(tmp_path):
    path = tmp_path / "prediction.zarr"
    write_store(path, make_layout(with_mask=True))
    ds = open_prediction(path)
    assert ds.t.encoding["chunks"] == (1, 3, 2, 4, 4, 5)
    assert ds.sp.encoding["chunks"] == (1, 3, 2, 4, 5)
    assert ds.target_mask.encoding["chunks"] == (1, 3, 4, 5)
    assert ds.t.chunks[0] == (1, 1, 1)  # lazily opened, one dask chunk per case


def test_mask_round_trip(tmp_path):
    path = tmp_path / "prediction.zarr"
    write_store(path, make_layout(with_mask=True))
    ds = open_prediction(path)
    assert ds.target_mask.dtype == np.bool_
    assert ds.target_mask.dims == ("time", "prediction_timedelta", "latitude", "longitude")
    for index in range(3):
        np.testing.assert_array_equal(ds.target_mask.isel(time=index).values, make_mask(index))


@pytest.mark.parametrize("level_kind", ["sigma", "model"])
def test_level_kind_and_units(tmp_path, level_kind):
    fields = {"t": (0.85, 0.5)} if level_kind == "sigma" else {"t": (137.0, 96.0)}
    layout = make_layout(fields=fields, level_kind=level_kind)
    write_store(tmp_path / "p.zarr", layout, seeds=(0,))
    level = open_prediction(tmp_path / "p.zarr").level
    assert level.attrs["level_kind"] == level_kind and level.attrs["units"] == "1"
    np.testing.assert_array_equal(level.values, sorted(fields["t"]))


def test_surface_fields_only_have_no_level_axis(tmp_path):
    layout = make_layout(fields={"sp": None, "t2m": None}, level_kind="surface", members=1)
    cases = write_store(tmp_path / "p.zarr", layout, seeds=(3, 4))
    ds = open_prediction(tmp_path / "p.zarr")
    assert "level" not in ds.dims and "level" not in ds.coords
    np.testing.assert_array_equal(ds.t2m.isel(time=1).values, cases[1]["t2m"])
    assert ds.sizes["member"] == 1


def test_nothing_is_visible_before_the_store_is_complete(tmp_path):
    path = tmp_path / "prediction.zarr"
    layout = make_layout()
    with PredictionWriter(path, layout) as writer:
        writer.write(TIMES[0], make_case(layout, 0))
        assert not path.exists() and temporary_sibling(path).exists()
    assert leftovers(path) == ["prediction.zarr"]


def test_an_exception_leaves_no_store_and_no_temporary_directory(tmp_path):
    path = tmp_path / "prediction.zarr"
    layout = make_layout()
    with pytest.raises(RuntimeError, match="interrupted"), PredictionWriter(path, layout) as writer:
        writer.write(TIMES[0], make_case(layout, 0))
        raise RuntimeError("interrupted")
    assert leftovers(path) == []


def test_an_existing_store_survives_a_failed_overwrite(tmp_path):
    path = tmp_path / "prediction.zarr"
    layout = make_layout()
    cases = write_store(path, layout)
    with pytest.raises(KeyboardInterrupt), PredictionWriter(path, layout, overwrite=True) as writer:
        writer.write(TIMES[0], make_case(layout, 9))
        raise KeyboardInterrupt
    assert leftovers(path) == ["prediction.zarr"]
    ds = open_prediction(path)
    assert ds.sizes["time"] == 3
    np.testing.assert_array_equal(ds.sp.isel(time=0).values, cases[0]["sp"])


def test_overwrite_replaces_a_store_only_when_asked(tmp_path):
    path = tmp_path / "prediction.zarr"
    layout = make_layout()
    write_store(path, layout)
    with pytest.raises(DataError, match="prediction.zarr"):
        PredictionWriter(path, layout)
    cases = write_store(path, layout, seeds=(7,), overwrite=True)
    ds = open_prediction(path)
    assert ds.sizes["time"] == 1
    np.testing.assert_array_equal(ds.sp.isel(time=0).values, cases[0]["sp"])
    assert leftovers(path) == ["prediction.zarr"]


def test_an_empty_writer_leaves_nothing(tmp_path):
    path = tmp_path / "prediction.zarr"
    with pytest.raises(DataError, match="no case written"), PredictionWriter(path, make_layout()):
        pass
    assert leftovers(path) == []


def test_a_rejected_case_does_not_spoil_the_store(tmp_path):
    path = tmp_path / "prediction.zarr"
    layout = make_layout()
    good = make_case(layout, 0)
    with PredictionWriter(path, layout) as writer:
        writer.write(TIMES[0], good)
        with pytest.raises(DataError):
            writer.write(TIMES[1], {**good, "t": good["t"][:, :1]})
        writer.write(TIMES[1], good)
    ds = open_prediction(path)
    np.testing.assert_array_equal(ds.time.values, TIMES[:2])
    np.testing.assert_array_equal(ds.u.isel(time=1).sel(level=[700.0, 500.0, 1000.0]).values, good["u"])


def _bad_values(case):
    t_nan = case["t"].copy()
    t_nan[1, 0, 1, 2, 3] = np.nan
    sp_inf = case["sp"].copy()
    sp_inf[0, 1, 0, 0] = np.inf
    return {
        "wrong level count": ({**case, "t": case["t"][:, :, :1]}, r"field 't'.*\(3, 2, 2, 4, 5\)"),
        "surface with levels": ({**case, "sp": case["sp"][:, :, None]}, r"field 'sp'.*\(3, 2, 4, 5\)"),
        "transposed grid": ({**case, "u": case["u"].swapaxes(-1, -2)}, r"field 'u'.*\(3, 2, 3, 4, 5\)"),
        "missing field": ({"t": case["t"], "u": case["u"]}, r"missing \['sp'\]"),
        "unknown field": ({**case, "q": case["sp"]}, r"not in the layout \['q'\]"),
        "NaN": ({**case, "t": t_nan}, r"field 't' holds 1 NaN"),
        "inf": ({**case, "sp": sp_inf}, r"field 'sp' holds 1 NaN or infinite"),
        "strings": ({**case, "sp": case["sp"].astype(str)}, r"field 'sp'.*dtype"),
    }


@pytest.mark.parametrize("problem", list(_bad_values(make_case(make_layout(), 0))))
def test_bad_values_raise_naming_the_field(tmp_path, problem):
    layout = make_layout()
    values, message = _bad_values(make_case(layout, 0))[problem]
    path = tmp_path / "p.zarr"
    with pytest.raises(DataError, match="no case written"), PredictionWriter(path, layout) as writer:
        with pytest.raises(DataError, match=message):
            writer.write(TIMES[0], values)
    assert leftovers(tmp_path / "p.zarr") == []


@pytest.mark.parametrize("second", [TIMES[0], np.datetime64("2019-12-31T23")])
def test_times_must_increase_strictly(tmp_path, second):
    layout = make_layout()
    with PredictionWriter(tmp_path / "p.zarr", layout) as writer:
        writer.write(TIMES[0], make_case(layout, 0))
        with pytest.raises(DataError, match="strictly increasing"):
            writer.write(second, make_case(layout, 1))


@pytest.mark.parametrize("time", ["not a time", np.datetime64("NaT"), np.datetime64("2020-01-01T00:00:00.5")])
def test_bad_times_are_rejected(tmp_path, time):
    layout = make_layout()
    with PredictionWriter(tmp_path / "p.zarr", layout) as writer:
        writer.write(TIMES[0], make_case(layout, 0))
        with pytest.raises(DataError, match="case time"):
            writer.write(time, make_case(layout, 1))
    assert open_prediction(tmp_path / "p.zarr").sizes["time"] == 1


@pytest.mark.parametrize(("with_mask", "mask", "message"), [
    (True, None, "with_mask is True"),
    (False, make_mask(0), "with_mask is False"),
    (True, make_mask(0)[:, :, :4], r"expected bool of shape \(3, 4, 5\)"),
    (True, make_mask(0).astype(np.uint8), r"dtype uint8"),
])
def test_bad_masks_are_rejected(tmp_path, with_mask, mask, message):
    layout = make_layout(with_mask=with_mask)
    path = tmp_path / "p.zarr"
    with pytest.raises(DataError, match="no case written"), PredictionWriter(path, layout) as writer:
        with pytest.raises(DataError, match=message):
            writer.write(TIMES[0], make_case(layout, 0), mask)


def test_write_outside_the_with_block_is_an_error(tmp_path):
    writer = PredictionWriter(tmp_path / "p.zarr", make_layout())
    with pytest.raises(RuntimeError, match="with block"):
        writer.write(TIMES[0], make_case(make_layout(), 0))


@pytest.mark.parametrize(("changes", "message"), [
    ({"fields": {}}, "no fields"),
    ({"fields": {"t": (500.0, 500.0)}}, "levels of field 't'"),
    ({"fields": {"t": ()}}, "levels of field 't'"),
    ({"fields": {"level": None}}, "reserved"),
    ({"level_kind": "surface"}, "level_kind 'surface'"),
    ({"level_kind": "height"}, "level_kind 'height'"),
    ({"prediction_timedelta": np.array([2, 1], dtype="timedelta64[h]")}, "strictly increasing"),
    ({"prediction_timedelta": np.array([1, 2])}, "timedelta64"),
    ({"prediction_timedelta": np.array([1500], dtype="timedelta64[ms]")}, "whole seconds"),
    ({"members": 0}, "members"),
    ({"latitude": LATITUDES[::-1]}, "latitude"),
    ({"longitude": np.array([0.0, 180.0, 360.0])}, "longitude"),
    ({"longitude": np.array([0.0, 120.0, 240.0, 10.0])}, "longitude"),  # more than a full circle
    ({"attrs": {"task": "forecast", "when": np.datetime64("2020-01-01")}}, "JSON"),
    ({"attrs": {"checkpoint": "runs/a"}}, "'task'"),
    ({"attrs": {"task": "nowcast"}}, "'task'"),
])
def test_bad_layouts_are_rejected(changes, message):
    with pytest.raises(DataError, match=message):
        make_layout(**changes)


def test_layout_normalises_its_arrays():
    offsets = np.array([1, 2], dtype="timedelta64[h]")
    layout = make_layout(latitude=[-30, 0, 30, 60], prediction_timedelta=offsets)
    assert layout.latitude.dtype == np.float64
    assert layout.prediction_timedelta.dtype == np.dtype("timedelta64[ns]")
    assert layout.case_shape("t") == (2, 2, 2, 4, 5) and layout.case_shape("sp") == (2, 2, 4, 5)
    assert dataclasses.replace(layout, members=3).case_shape("u") == (2, 3, 3, 4, 5)


def test_open_prediction_rejects_what_is_not_a_store(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("not zarr")
    for path in (tmp_path / "folder", tmp_path / "missing.zarr"):
        with pytest.raises(DataError, match=str(path.name)):
            open_prediction(path)


def _store_without(tmp_path, drop: str):
    path = tmp_path / "prediction.zarr"
    write_store(path, make_layout(), seeds=(0,))
    ds = xr.open_zarr(path).load()
    if drop == "member":
        ds = ds.isel(member=0)
    elif drop == "fields":
        ds = ds.drop_vars(list(FIELDS))
    elif drop == "task":
        ds.attrs["task"] = "guess"
    else:
        ds = ds.drop_vars(drop)
    for variable in ds.variables.values():
        variable.encoding = {}
    broken = tmp_path / f"without-{drop}.zarr"
    ds.to_zarr(broken, zarr_format=3, consolidated=True)
    return broken


@pytest.mark.filterwarnings("ignore:Consolidated metadata")  # zarr v3: not yet part of the specification
@pytest.mark.parametrize(("drop", "message"), [
    ("member", r"dimensions \['member'\] missing"),
    ("valid_time", "coordinate 'valid_time'"),
    ("fields", "no data variable"),
    ("task", "attribute 'task' is 'guess'"),
])
def test_open_prediction_names_what_is_missing(tmp_path, drop, message):
    broken = _store_without(tmp_path, drop)
    with pytest.raises(DataError, match=message) as error:
        open_prediction(broken)
    assert broken.name in str(error.value)


def test_a_failure_while_finalising_leaves_nothing(tmp_path, monkeypatch):
    import zarr

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(zarr, "consolidate_metadata", fail)
    path = tmp_path / "prediction.zarr"
    with pytest.raises(OSError, match="disk full"):
        write_store(path, make_layout())
    assert leftovers(path) == []


def test_transformed_fields_say_so_in_the_prediction_store():
    import json

    from atmorep.prediction_store import _field_attrs

    transform = {"atmorep_transform": "log1p", "atmorep_transform_scale": 1e-4, "atmorep_physical_units": "m"}
    attrs = _field_attrs("tp", json.dumps({"tp": transform}))
    assert attrs["units"] == "1" and attrs["atmorep_transform"] == "log1p"
    assert _field_attrs("t", json.dumps({"tp": transform}))["units"] == "K"
    assert _field_attrs("tp")["units"] == "m"
