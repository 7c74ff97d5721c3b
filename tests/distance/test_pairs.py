"""Pairs: exact patches and lags, segments and periods, the enumerated set, control pairs, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from atmorep.config import ConfigError
from atmorep.data.prepare import prepare_dataset
from atmorep.data.store import BoxIndex, Store
from atmorep.distance.config import EvaluationSpec, PairSpec, Source, resolve_distance_config
from atmorep.distance.pairs import PairSampler, PatchSource, evaluation_pairs
from atmorep.errors import DataError
from tests.data.synthetic import internal_dataset
from tests.distance.conftest import SPEC, config_dict

HOUR = np.timedelta64(1, "h")


def _store_patch(store: Store, channel, time: int, row: int, column: int) -> np.ndarray:
    levels = store.level_indices(channel.field, [channel.level])
    box = store.read_box(channel.field, BoxIndex(time, row, column), (1, *SPEC.patch), levels=levels)
    return box[0, 0]  # [H, W]


def test_patches_are_the_store_values_at_the_pair_indices(stores):
    source = PatchSource(Source(path=stores["train"]), SPEC)
    store = Store(stores["train"])
    pairs = PairSampler(source, seed=0).draw(60)
    first, second = source.patches(pairs)
    assert first.shape == second.shape == (60, 2, *SPEC.patch)
    later = source.second_time(pairs)
    assert np.array_equal((store.time[later] - store.time[pairs.time]) / HOUR, 3 * pairs.lag)
    for n in range(len(pairs)):
        for c, channel in enumerate(SPEC.channels):
            row, column = pairs.latitude[n], pairs.longitude[n]
            assert np.array_equal(first[n, c], _store_patch(store, channel, pairs.time[n], row, column))
            assert np.array_equal(second[n, c], _store_patch(store, channel, later[n], row, column))
        rows = store.latitude[pairs.latitude[n]:pairs.latitude[n] + SPEC.patch[0]]
        assert rows.size == SPEC.patch[0] and np.all(np.abs(rows) <= SPEC.max_latitude)


def test_the_sampler_is_deterministic_and_reaches_every_class_and_the_wrap(stores):
    source = PatchSource(Source(path=stores["train"]), SPEC)
    a, b = PairSampler(source, 5).draw(500), PairSampler(source, 5).draw(500)
    assert all(np.array_equal(getattr(a, name), getattr(b, name))
               for name in ("time", "lag", "latitude", "longitude"))
    assert set(a.lag.tolist()) == {1, 2, 3, 4}
    assert np.any(a.longitude + SPEC.patch[1] > 36)  # some patches wrap past 360 degrees
    assert not np.array_equal(PairSampler(source, 6).draw(500).time, a.time)


def test_no_pair_crosses_a_gap_in_the_time_axis(stores):
    source = PatchSource(Source(path=stores["gap"]), SPEC)
    assert source.segments == [(0, 24), (24, 48)]
    pairs = PairSampler(source, 0).draw(2000)
    later = source.second_time(pairs)
    assert np.all((pairs.time < 24) == (later < 24))
    assert np.array_equal((source.time[later] - source.time[pairs.time]) / HOUR, 3 * pairs.lag)


def test_periods_bound_both_times_of_every_pair(stores):
    times = Store(stores["train"]).time
    start, end = times[5], times[30]
    source = PatchSource(Source(path=stores["train"], periods=((str(start), str(end)),)), SPEC)
    pairs = PairSampler(source, 1).draw(1000)
    both = np.concatenate([pairs.time, source.second_time(pairs)])
    assert times[both].min() >= start and times[both].max() < end
    assert times[source.second_time(pairs)].max() == times[29]  # the last step before the end is used


def test_the_evaluation_set_is_enumerated_balanced_and_on_the_stride(stores):
    source = PatchSource(Source(path=stores["train"]), SPEC)
    spec = EvaluationSpec(time_stride_hours=6, latitude_places=3, longitude_stride=12)
    pairs = evaluation_pairs(source, spec)
    assert np.array_equal(pairs.time, evaluation_pairs(source, spec).time)
    # first times 0, 6, ..., 30 (the 12 h lag must fit in 48 steps), 4 classes, 3 rows, 3 columns
    assert len(pairs) == 6 * 4 * 3 * 3
    assert np.all(np.bincount(pairs.lag)[1:] == len(pairs) // 4)
    assert np.all(source.hours(pairs.time) % 6 == 0)
    rows = np.unique(pairs.latitude)
    assert rows.size == 3 and rows[0] == source.latitude_starts[0] and rows[-1] == source.latitude_starts[-1]


def test_control_pairs_take_the_second_patch_from_the_other_run_at_the_same_time(stores):
    source = PatchSource(Source(path=stores["train"]), SPEC)
    control = PatchSource(Source(path=stores["control"]), SPEC)
    pairs = PairSampler(source, 2).draw(40)
    first, second = source.patches(pairs, control)
    own_first, _ = control.patches(pairs)
    assert np.array_equal(first, source.patches(pairs)[0])
    assert np.array_equal(second, control.patches(pairs)[1])
    assert not np.array_equal(first, own_first)  # the control is another run
    assert np.array_equal(source.time, control.time)
    elsewhere = PatchSource(Source(path=stores["gap"]), SPEC)
    with pytest.raises(DataError, match="other time values"):
        source.patches(pairs, elsewhere)


@pytest.mark.parametrize(("change", "message"), [
    ({"channels": ["q@850"]}, "has no field 'q'"),
    ({"channels": ["t@700"]}, "field 't' has no level 700"),
    ({"lags": 20}, "the longest lag 60 h .* fits in no contiguous period"),
    ({"patch": [14, 8]}, "a patch of 14 rows does not fit in the 13 rows within"),
    ({"patch": [4, 40]}, "a patch of 40 columns is wider than its 36 longitudes"),
    ({"step_hours": 1.5}, "steps by 1 h; pairs.step_hours=1.5 must be a positive multiple"),
])
def test_bad_pairs_give_one_line_errors(stores, change, message):
    spec = PairSpec.model_validate({**SPEC.model_dump(mode="json"), **change})
    with pytest.raises(DataError, match=message) as error:
        PatchSource(Source(path=stores["train"]), spec)
    assert "\n" not in str(error.value) and stores["train"] in str(error.value)


def test_a_non_finite_value_in_the_band_is_named_with_its_channel_and_time(tmp_path):
    dataset = internal_dataset(times=48, nlat=19, nlon=36, seed=0)
    dataset["u"].values[5, 0, 9, 3] = np.nan  # time 5, level 500 hPa, the equator
    path = prepare_dataset(dataset, tmp_path / "nan.zarr", box=(24, 19, 36), chunk_fraction=1)
    expected = r"1 non-finite value\(s\) of 'u@500'.*the first at 2001-03-01T05"
    with pytest.raises(DataError, match=expected) as error:
        PatchSource(Source(path=str(path)), SPEC)
    assert "\n" not in str(error.value)
    PatchSource(Source(path=str(path), periods=(("2001-03-01T06", "2001-03-03"),)), SPEC)  # left out


def test_a_period_outside_the_store_is_named(stores):
    with pytest.raises(DataError, match="has no time in the period"):
        PatchSource(Source(path=stores["train"], periods=(("1990-01-01", "1990-02-01"),)), SPEC)


@pytest.mark.parametrize(("override", "message"), [
    ("pairs.lagz=3", "unknown key 'pairs.lagz'"),
    ("pairs.channels=[t@x]", "is not FIELD or FIELD@LEVEL"),
    ("pairs.patch=[0,4]", "patch sizes must be positive"),
    ("data.train.periods=[[2001-03-02,2001-03-01]]", "the end must be after the start"),
])
def test_bad_configuration_keys_are_named(stores, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        resolve_distance_config(config_dict(stores, tmp_path), [override])
