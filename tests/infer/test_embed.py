"""Encoder states of boxes (``atmorep embed``): shapes, coordinates, determinism, agreement with the
model's own encoder, the written store and one-line errors for bad times, places and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from typer.testing import CliRunner

from atmorep.batch import EPOCH, Batch, BatchMetadata
from atmorep.checkpoint import CheckpointError
from atmorep.cli import app
from atmorep.data.store import Store
from atmorep.errors import AtmorepError, DataError
from atmorep.infer.embed import BoxEmbedder, BoxOrigins, embed_boxes
from atmorep.numerics.modes import VISIBLE
from atmorep.numerics.tokens import tokenise_batch
from tests.infer.conftest import FIELDS, LEVELS, NAN_FROM, store_time

TIMES = (store_time(3), store_time(20))
PLACES = ((0.0, 0.0), (90.0, 175.0))  # one box across the 0/360 meridian, one clipped at the pole


@pytest.fixture(scope="module")
def embedder(checkpoint, truth_store) -> BoxEmbedder:
    return BoxEmbedder.open(checkpoint, truth_store)


@pytest.fixture(scope="module")
def states(embedder):
    return embedder.states(embedder.origins(TIMES, PLACES), batch_size=3)


def test_states_have_one_row_per_box_and_the_token_grid_of_each_field(states, embedder):
    dim = embedder.config.model.dim
    for name in FIELDS:  # box (6, 8, 8), tokens (2, 4, 4): 3 x 2 x 2 tokens per level
        assert states.states[name].shape == (4, len(LEVELS), 3, 2, 2, dim)
        assert states.states[name].dtype == torch.float32
        assert torch.isfinite(states.states[name]).all()
    assert states.pooled().shape == (4, len(FIELDS) * dim)


def test_origins_are_time_major_centred_on_the_places_and_inside_the_grid(states):
    origins = states.origins
    np.testing.assert_array_equal(origins.time, [3, 3, 20, 20])
    # 19 rows: latitude 0 is row 9, a box of 8 rows from row 5; at the pole the box is the top 8 rows
    np.testing.assert_array_equal(origins.latitude, [5, 11, 5, 11])
    # 36 columns of 10 degrees: 0 E is column 0, the box starts 4 columns west; 175 E -> column 17 or 18
    assert origins.longitude[0] == 32 and origins.longitude[1] in (13, 14)


def test_coordinates_are_the_box_steps_and_the_token_centres(states, truth_store):
    store = Store(truth_store)
    ds = states.dataset("t")
    assert ds["states"].dims == ("box", "level", "token_time", "token_latitude", "token_longitude", "dim")
    np.testing.assert_array_equal(ds["time"].values, np.array([TIMES[0], TIMES[0], TIMES[1], TIMES[1]]))
    np.testing.assert_array_equal(ds["token_start"].values[0], [store_time(3 + 2 * k) for k in range(3)])
    np.testing.assert_allclose(ds["level"].values, LEVELS)
    rows = store.latitude[5:13].reshape(2, 4).mean(axis=1)
    np.testing.assert_allclose(ds["latitude"].values[0], rows)
    # columns 32..35, 0..3 (320..350 E, 0..30 E): centres 335 E and 15 E, across the meridian
    np.testing.assert_allclose(ds["longitude"].values[0], [335.0, 15.0], atol=1e-9)
    assert str(ds["field"].values) == "t"


def test_states_are_deterministic_and_independent_of_the_batch_size(embedder, states):
    again = embedder.states(states.origins, batch_size=1)
    for name in FIELDS:
        torch.testing.assert_close(again.states[name], states.states[name], rtol=1e-5, atol=1e-6)
    repeat = embedder.states(states.origins, batch_size=3)
    for name in FIELDS:
        assert torch.equal(repeat.states[name], states.states[name])


def _independent_input(embedder, store_path, origins: BoxOrigins):
    """Tokens, modes and alpha of the boxes, read straight from the zarr arrays and normalised here."""
    group, store = zarr.open_group(str(store_path), mode="r"), Store(store_path)
    statistics, (t, h, w) = embedder.predictor.statistics, embedder.box
    fields, times, lats, lons = {}, [], [], []
    for name in FIELDS:
        mean, std = statistics[name].select(LEVELS, name)
        boxes = []
        for first, row, column in zip(origins.time, origins.latitude, origins.longitude):
            columns = (column + np.arange(w)) % store.longitude.size
            raw = group[name][first:first + t, :, row:row + h][..., columns]  # [T, L, H, W]
            boxes.append((raw.transpose(1, 0, 2, 3) - mean[:, None, None, None]) / std[:, None, None, None])
        fields[name] = torch.from_numpy(np.stack(boxes).astype(np.float32))  # [B, L, T, H, W]
    for first, row, column in zip(origins.time, origins.latitude, origins.longitude):
        times.append((store.time[first:first + t] - EPOCH).astype(np.int64))
        lats.append(store.latitude[row:row + h])
        lons.append(store.longitude[(column + np.arange(w)) % store.longitude.size])
    metadata = BatchMetadata(torch.tensor(np.stack(times)), torch.tensor(np.stack(lats)),
                             torch.tensor(np.stack(lons)), dict.fromkeys(FIELDS, LEVELS), store.level_kind,
                             store.resolution)
    tokens, alpha = tokenise_batch(Batch(fields, metadata), embedder.predictor.fields)
    modes = {name: torch.full(value.shape[:5], VISIBLE, dtype=torch.int8) for name, value in tokens.items()}
    return tokens, modes, alpha


def test_states_are_what_the_model_computes_inside_its_forward_pass(embedder, states, truth_store):
    model = embedder.predictor.model
    tokens, modes, alpha = _independent_input(embedder, truth_store, states.origins)
    seen = {}
    hooks = [model.fields[name].encoder[-1].register_forward_hook(
        lambda module, args, output, name=name: seen.__setitem__(name, output)) for name in FIELDS]
    try:
        with torch.no_grad():
            model(tokens, modes, alpha)
    finally:
        for hook in hooks:
            hook.remove()
    for name in FIELDS:
        expected = seen[name].reshape(states.states[name].shape)  # [B, N, D] in (L, nT, nH, nW) order
        torch.testing.assert_close(states.states[name], expected, rtol=1e-5, atol=1e-5)


def test_boxes_cut_from_the_store_held_in_memory_are_the_boxes_read_from_it(embedder, states, truth_store):
    held = BoxEmbedder.open(embedder.checkpoint, truth_store).preload()
    for name in FIELDS:
        assert torch.equal(held.states(states.origins, batch_size=3).states[name], states.states[name])
    outside = BoxOrigins(np.array([45]), np.array([0]), np.array([0]))  # 6 steps from 45 of 48
    with pytest.raises(DataError, match="does not lie inside"):
        held.read(outside)


def test_alpha_overrides_reach_the_model(embedder, states):
    shifted = BoxEmbedder.open(embedder.checkpoint, embedder.store.path, alpha=("day_of_year+=182",))
    assert not torch.allclose(shifted.states(states.origins).states["t"], states.states["t"])
    with pytest.raises(AtmorepError, match="expected NAME=VALUE"):
        BoxEmbedder.open(embedder.checkpoint, embedder.store.path, alpha=("day_of_year",))


def test_a_random_control_has_other_weights_the_same_seed_the_same_ones(embedder, states):
    before = torch.random.get_rng_state()
    first, second = embedder.randomised(seed=3), embedder.randomised(seed=3)
    assert torch.equal(before, torch.random.get_rng_state())
    a, b = first.states(states.origins), second.states(states.origins)
    assert torch.equal(a.states["t"], b.states["t"])
    assert not torch.allclose(a.states["t"], states.states["t"])


def test_all_tiles_cover_every_grid_point(embedder, truth_store):
    origins = embedder.origins(TIMES[:1], all_tiles=True)
    store = Store(truth_store)
    covered = np.zeros((store.latitude.size, store.longitude.size), dtype=int)
    for row, column in zip(origins.latitude, origins.longitude):
        covered[row:row + 8][:, (column + np.arange(8)) % store.longitude.size] += 1
    assert covered.min() >= 1 and len(origins) == 3 * 5  # 19 rows: 3 tiles of 8; 36 columns: 5 of 8


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert text.startswith("error:") and "Traceback" not in text, text
    for word in words:
        assert word in text, text


def test_the_command_writes_every_field_with_its_coordinates(checkpoint, truth_store, tmp_path, states):
    out = tmp_path / "states.zarr"
    result = _invoke("embed", "--checkpoint", checkpoint.parent, "--data", truth_store, "-o", out,
                     "--time", "2001-03-01T03", "--time", "2001-03-01T20", "--latitude", 0, "--longitude", 0,
                     "--latitude", 90, "--longitude", 175, "--device", "cpu", "--precision", "float32")
    assert result.exit_code == 0, result.output
    attrs = dict(zarr.open_group(str(out), mode="r").attrs)
    assert attrs["checkpoint"] == str(checkpoint.resolve()) and attrs["fields"] == list(FIELDS)
    for name in FIELDS:
        ds = xr.open_zarr(out, group=name)
        np.testing.assert_array_equal(ds["states"].values, states.states[name].numpy())
        np.testing.assert_array_equal(ds["row"].values, states.origins.latitude)
    again = _invoke("embed", "--checkpoint", checkpoint, "--data", truth_store, "-o", out,
                    "--time", "2001-03-01T03", "--all-tiles")
    _one_line_error(again, "already exists")


@pytest.mark.parametrize(("options", "words"), [
    (("--time", "2001-03-01T03:30", "--all-tiles"), ("not a time step",)),
    (("--time", "2001-03-02T20", "--all-tiles"), ("runs past the end", "2001-03-02T18")),
    (("--time", "2001-03-01T03", "--latitude", 95, "--longitude", 0), ("latitude in [-90, 90]",)),
    (("--time", "2001-03-01T03", "--latitude", 10, "--longitude", 0, "--all-tiles"), ("not both",)),
    (("--time", "2001-03-01T03",), ("--all-tiles",)),
    (("--time", "2001-03-01T03", "--latitude", 10), ("one --longitude per --latitude",)),
    (("--all-tiles",), ("no time given",)),
    (("--time", "2001-03-01T03", "--all-tiles", "--layer", 1), ("encoder layer 1", "0..0")),
])
def test_bad_requests_give_one_line_errors(checkpoint, truth_store, tmp_path, options, words):
    result = _invoke("embed", "--checkpoint", checkpoint, "--data", truth_store, "-o", tmp_path / "x.zarr",
                     "--device", "cpu", *options)
    _one_line_error(result, *words)
    assert not (tmp_path / "x.zarr").exists()


def test_a_missing_checkpoint_is_a_one_line_error(truth_store, tmp_path):
    result = _invoke("embed", "--checkpoint", tmp_path, "--data", truth_store, "-o", tmp_path / "x.zarr",
                     "--time", "2001-03-01T03", "--all-tiles")
    _one_line_error(result, "neither a checkpoint nor a run directory")
    with pytest.raises(CheckpointError):
        embed_boxes(tmp_path, truth_store, TIMES, all_tiles=True)


def test_a_store_the_model_cannot_read_or_a_box_with_nan_is_refused(checkpoint, store_without_u, nan_store):
    with pytest.raises(DataError, match="needs field 'u'"):
        BoxEmbedder.open(checkpoint, store_without_u)
    embedder = BoxEmbedder.open(checkpoint, nan_store)
    with pytest.raises(DataError, match="NaN"):
        embedder.states(embedder.origins((store_time(NAN_FROM - 2),), all_tiles=True))
