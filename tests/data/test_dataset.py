"""BoxDataset: batch contents, normalisation, worker-independent streams, resumption, NaN policy."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
import torch

from atmorep.batch import EPOCH, Batch
from atmorep.config import BoxConfig, DataConfig, FieldConfig
from atmorep.data.dataset import BoxDataset, SamplerState, make_loader
from atmorep.data.store import Store
from atmorep.errors import DataError
from atmorep.fields import LevelKind
from tests.data.conftest import NAN_COLUMNS, NAN_FIELD, NAN_LEVEL, NAN_ROWS, STORE_BOX, draw_batch

FIELDS = [FieldConfig(name="t", token_size=(1, 1, 1)), FieldConfig(name="sp", token_size=(1, 1, 1)),
          FieldConfig(name="u", levels=[850.0], token_size=(1, 1, 1))]


def _data(box=STORE_BOX, **overrides) -> DataConfig:
    settings = dict(boxes_per_window=3, windows_per_batch=2, batches_per_epoch=4) | overrides
    return DataConfig(box=BoxConfig(time=box[0], latitude=box[1], longitude=box[2]), **settings)


def _take(iterable, count: int) -> list[Batch]:
    return list(itertools.islice(iterable, count))


def _assert_same(first: Batch, second: Batch) -> None:
    assert first.field_names == second.field_names
    for name in first.field_names:
        assert torch.equal(first.fields[name], second.fields[name]), name
    for name in ("time", "latitude", "longitude"):
        assert torch.equal(getattr(first.metadata, name), getattr(second.metadata, name)), name


# ------------------------------------------------------------------------------------ batch contents


def test_batch_shapes_and_metadata(prepared_store):
    dataset = BoxDataset([prepared_store], FIELDS, _data())
    batch = dataset.make_batch(0, 0)
    assert batch.batch_size == 6 and batch.normalised
    assert batch.fields["t"].shape == (6, 2, 12, 8, 16)  # [B, L, T, H, W]
    assert batch.fields["sp"].shape == (6, 1, 12, 8, 16)
    assert batch.fields["u"].shape == (6, 1, 12, 8, 16)
    assert all(v.dtype == torch.float32 for v in batch.fields.values())
    meta = batch.metadata
    assert dict(meta.levels) == {"t": (500.0, 850.0), "sp": (0.0,), "u": (850.0,)}
    assert meta.level_kind == LevelKind.PRESSURE
    assert meta.resolution == pytest.approx(10.0)
    assert torch.all(meta.time.diff(dim=1) == 3600)
    assert torch.all(meta.latitude.diff(dim=1) == 10.0)
    assert torch.all((meta.longitude.diff(dim=1) % 360) == 10.0)
    assert torch.equal(batch.extras["skipped_boxes"], torch.zeros(6, dtype=torch.int64))
    # the samples of a window share its time; the two windows of the batch are drawn independently
    assert torch.equal(meta.time[0], meta.time[2]) and torch.equal(meta.time[3], meta.time[5])


def test_values_are_the_store_boxes_normalised(prepared_store):
    store = Store(prepared_store)
    dataset = BoxDataset([prepared_store], FIELDS, _data())
    for epoch, index in ((0, 1), (3, 2)):
        batch = dataset.make_batch(epoch, index)
        physical = store.statistics.denormalise_fields(batch.fields, batch.metadata.levels)
        boxes = draw_batch(dataset.sampler, epoch, index)  # no NaN: exactly the boxes of the stream
        for b, box in enumerate(boxes):
            time, lat, lon = store.box_coordinates(box.index, STORE_BOX)
            assert torch.equal(batch.metadata.time[b], torch.from_numpy((time - EPOCH).astype(np.int64)))
            assert torch.equal(batch.metadata.latitude[b], torch.from_numpy(lat))
            assert torch.equal(batch.metadata.longitude[b], torch.from_numpy(lon))
            for f in FIELDS:
                levels = store.level_indices(f.name, f.levels)
                raw = store.read_box(f.name, box.index, STORE_BOX, levels=levels)  # [L, T, H, W]
                mean, std = store.statistics[f.name].select(batch.metadata.levels[f.name])
                expected = (raw - mean[:, None, None, None]) / std[:, None, None, None]
                np.testing.assert_allclose(batch.fields[f.name][b].numpy(), expected, atol=1e-5)
                np.testing.assert_allclose(physical[f.name][b].numpy(), raw, rtol=1e-6,
                                           atol=1e-6 * float(np.abs(raw).max()))


def test_given_statistics_are_used(prepared_store):
    store = Store(prepared_store)
    shifted = store.statistics.from_dict(
        {name: {"levels": list(s.levels), "mean": [m + 1.0 for m in s.mean], "std": list(s.std)}
         for name, s in store.statistics.fields.items()})
    own = BoxDataset([prepared_store], FIELDS, _data()).make_batch(0, 0)
    given = BoxDataset([prepared_store], FIELDS, _data(), statistics=shifted).make_batch(0, 0)
    for f in FIELDS:
        _, std = store.statistics[f.name].select(own.metadata.levels[f.name])
        shift = torch.tensor(1.0 / std, dtype=torch.float32).reshape(1, -1, 1, 1, 1)  # [1, L, 1, 1, 1]
        difference = own.fields[f.name] - given.fields[f.name]
        torch.testing.assert_close(difference, shift.expand_as(difference))


def test_missing_field_or_level_is_an_error(prepared_store):
    with pytest.raises(DataError, match="no field 'q'"):
        BoxDataset([prepared_store], [FieldConfig(name="q")], _data())
    with pytest.raises(DataError, match="no level 700"):
        BoxDataset([prepared_store], [FieldConfig(name="t", levels=[700.0])], _data())


# ---------------------------------------------------------------------------------------- streams


def test_stream_is_the_same_for_any_number_of_workers(prepared_store):
    dataset = BoxDataset([prepared_store], FIELDS, _data(), seed=4)
    serial = _take(make_loader(dataset, num_workers=0), 6)
    parallel_loader = make_loader(dataset, num_workers=2)
    parallel = _take(parallel_loader, 6)
    del parallel_loader
    for k, (first, second) in enumerate(zip(serial, parallel)):
        _assert_same(first, second)
        _assert_same(first, dataset.make_batch(*divmod(k, 4)))  # epoch rolls over after 4 batches
    assert not torch.equal(serial[0].fields["t"], serial[4].fields["t"])


def test_ranks_draw_different_streams(prepared_store):
    first = BoxDataset([prepared_store], FIELDS, _data(), seed=4, rank=0).make_batch(0, 0)
    second = BoxDataset([prepared_store], FIELDS, _data(), seed=4, rank=1).make_batch(0, 0)
    assert not torch.equal(first.fields["t"], second.fields["t"])


@pytest.mark.parametrize("workers", [0, 2])
def test_restored_state_continues_the_identical_stream(prepared_store, workers):
    data = _data()
    full = _take(BoxDataset([prepared_store], FIELDS, data, seed=8), 5)
    state = SamplerState()
    state.advance(2, data.batches_per_epoch)  # two batches consumed, then a checkpoint
    saved = pickle.loads(pickle.dumps(state.to_dict()))
    resumed_dataset = BoxDataset([prepared_store], FIELDS, data, seed=8, state=SamplerState(**saved))
    loader = make_loader(resumed_dataset, num_workers=workers)
    resumed = _take(loader, 3)
    del loader
    for first, second in zip(full[2:], resumed):
        _assert_same(first, second)


def test_sampler_state_advance_rolls_over_epochs():
    state = SamplerState(epoch=1, next_batch=3)
    state.advance(6, batches_per_epoch=4)
    assert state.to_dict() == {"epoch": 3, "next_batch": 1}


def test_dataset_survives_pickling(prepared_store):
    dataset = BoxDataset([prepared_store], FIELDS, _data(), seed=2)
    before = dataset.make_batch(0, 3)
    _assert_same(pickle.loads(pickle.dumps(dataset)).make_batch(0, 3), before)


# ---------------------------------------------------------------------------------------- NaN policy


def _box_has_nan(source, box, shape) -> bool:
    """Whether a box overlaps the NaN patch of the fixture, decided from the source with numpy."""
    t, h, w = shape
    values = source[NAN_FIELD].values[box.time: box.time + t, :, box.latitude: box.latitude + h]
    columns = (box.longitude + np.arange(w)) % values.shape[-1]
    return bool(np.isnan(np.take(values, columns, axis=-1)).any())


def _expected_skips(dataset: BoxDataset, source, epoch: int, index: int) -> int:
    """Replay the stream of one batch: every box with NaN is replaced by the next draw of its window."""
    rng = dataset.sampler.generator(epoch, index)
    skipped = 0
    for box in dataset.sampler.iter_batch(rng):
        while _box_has_nan(source, box.index, STORE_BOX):
            skipped += 1
            box = dataset.sampler.draw_box(rng, box.store, box.index.member, box.index.time)
    return skipped


def test_skip_policy_never_yields_nan_and_counts_skipped_boxes(nan_store, nan_source):
    fields = [FieldConfig(name=NAN_FIELD, token_size=(1, 1, 1))]
    skipping = BoxDataset([nan_store], fields, _data(nan_policy="skip"), seed=1)
    strict = BoxDataset([nan_store], fields, _data(nan_policy="error"), seed=1)
    total = 0
    for index in range(12):
        batch = skipping.make_batch(0, index)
        assert all(bool(torch.isfinite(value).all()) for value in batch.fields.values())
        skipped = int(batch.extras["skipped_boxes"][0])
        assert skipped == _expected_skips(skipping, nan_source, 0, index)
        total += skipped
        if skipped:
            with pytest.raises(DataError, match="holds NaN"):
                strict.make_batch(0, index)
        else:
            _assert_same(strict.make_batch(0, index), batch)
    assert total > 0


def test_nan_in_unselected_levels_is_ignored(nan_store):
    fields = [FieldConfig(name=NAN_FIELD, levels=[500.0], token_size=(1, 1, 1)),
              FieldConfig(name="u", token_size=(1, 1, 1))]
    dataset = BoxDataset([nan_store], fields, _data(nan_policy="error"), seed=1)
    for index in range(4):
        assert int(dataset.make_batch(0, index).extras["skipped_boxes"].sum()) == 0


def test_nan_everywhere_in_reach_raises_after_max_redraws(nan_store, nan_source):
    assert np.isnan(nan_source[NAN_FIELD].values[:, NAN_LEVEL, NAN_ROWS, NAN_COLUMNS]).all()
    whole_globe = (12, 19, 36)  # every box covers the NaN patch
    fields = [FieldConfig(name=NAN_FIELD, token_size=(1, 1, 1))]
    dataset = BoxDataset([nan_store], fields, _data(whole_globe, nan_policy="skip", max_redraws=3))
    with pytest.raises(DataError, match=r"holds NaN \(nan_policy=skip, 3 redraws\)"):
        dataset.make_batch(0, 0)


# ------------------------------------------------------------------------------------ fields of other stores


def test_a_field_read_from_its_own_store_gives_the_batches_of_one_store(tmp_path, prepared_store,
                                                                        store_source):
    from atmorep.data.prepare import prepare_dataset

    main = prepare_dataset(store_source[["t", "sp"]], tmp_path / "main.zarr", box=STORE_BOX)
    own = prepare_dataset(store_source[["u"]], tmp_path / "u.zarr", box=STORE_BOX)
    split = BoxDataset([str(main)], FIELDS, _data(), field_paths={"u": [str(own)]})
    whole = BoxDataset([prepared_store], FIELDS, _data())
    for index in range(3):
        _assert_same(split.make_batch(0, index), whole.make_batch(0, index))
    assert split.statistics == whole.statistics
    assert dict(split.levels) == dict(whole.levels)


def test_a_field_store_that_does_not_pair_with_the_split_is_refused(tmp_path, prepared_store, store_source):
    from atmorep.data.prepare import prepare_dataset

    shifted = store_source[["u"]].assign_coords(time=store_source["time"] + np.timedelta64(1, "h"))
    late = prepare_dataset(shifted, tmp_path / "late.zarr", box=STORE_BOX)
    with pytest.raises(DataError, match="field_stores.u: store .*late.zarr' has other time values"):
        BoxDataset([prepared_store], FIELDS, _data(), field_paths={"u": [str(late)]})
    with pytest.raises(DataError, match="2 stores for the 1 stores"):
        BoxDataset([prepared_store], FIELDS, _data(), field_paths={"u": [prepared_store, prepared_store]})
    with pytest.raises(DataError, match=r"names \['v'\], which are not fields"):
        BoxDataset([prepared_store], FIELDS, _data(), field_paths={"v": [prepared_store]})


def test_another_models_values_come_with_each_box_normalised_like_the_truth(tmp_path, prepared_store,
                                                                             store_source):
    from atmorep.data.prepare import prepare_dataset

    warmer = store_source.assign(t=store_source.t + 2.0)
    other = prepare_dataset(warmer, tmp_path / "other.zarr", box=STORE_BOX)
    plain = BoxDataset([prepared_store], FIELDS, _data())
    paired = BoxDataset([prepared_store], FIELDS, _data(), guide_paths=[str(other)])
    std = paired.statistics["t"].select(paired.levels["t"], "t")[1].reshape(-1, 1, 1, 1)
    for index in range(2):
        batch, truth = paired.make_batch(0, index), plain.make_batch(0, index)
        _assert_same(batch, truth)  # the truth as without the other model
        guide = batch.guide()
        assert set(guide) == {"t", "sp", "u"}
        torch.testing.assert_close(guide["u"], batch.fields["u"])
        shift = (guide["t"] - batch.fields["t"]) * torch.from_numpy(std)  # back in kelvin
        torch.testing.assert_close(shift, torch.full_like(shift, 2.0), rtol=0, atol=1e-3)
    with pytest.raises(DataError, match="data.guide: 2 stores for the 1 stores"):
        BoxDataset([prepared_store], FIELDS, _data(), guide_paths=[str(other), str(other)])
    fewer = prepare_dataset(store_source.sel(level=[850.0]), tmp_path / "fewer.zarr", box=STORE_BOX)
    with pytest.raises(DataError, match=r"data.guide: store .*fewer.zarr' has the levels \[850.0\] of 't'"):
        BoxDataset([prepared_store], FIELDS, _data(), guide_paths=[str(fewer)])
