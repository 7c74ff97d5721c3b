"""The inference engine end to end: known answers from fake predictors, invariants of the real model,
one-line errors on bad input with nothing left behind, and the engine's point-mask helpers.

Fake predictors replace the model with a rule whose output is known in closed form (persistence of the
last given step, identity, a constant at targets), so the tiling, blending, rollout, normalisation and
the output's coordinates can be checked against the truth read from the store.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from torch import Tensor

from atmorep.batch import BatchMetadata
from atmorep.errors import AtmorepError, DataError
from atmorep.infer.engine import infer, seam_attrs
from atmorep.infer.predictor import BoxPredictor, token_modes
from atmorep.infer.tiling import TilePlan
from atmorep.io import temporary_sibling
from atmorep.numerics.coarsening import coarsen
from atmorep.numerics.modes import COARSENED, MASKED, VISIBLE
from atmorep.prediction_store import open_prediction
from atmorep.tasks.infill import region_points
from tests.infer.conftest import FIELDS, NAN_FROM, hours, prepare_variant, store_time

WRAPPED = (-40.0, 40.0, 300.0, 60.0)  # a region across the 0/360 meridian: 9 x 13 points, 2 x 3 tiles
WRAPPED_TILES = 6  # latitude: 1 + ceil((9 - 8) / 4), longitude: 1 + ceil((13 - 8) / 4), overlap 4 points
CONSTANT = 3.0  # the normalised value the constant predictor gives at target points

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")


# ------------------------------------------------------------------------------------ fake predictors

def target_mask(modes: Tensor, token_size: tuple[int, int, int]) -> Tensor:
    """``[b, L, T, H, W]`` bool: the points of the target tokens of ``modes [b, L, nT, nH, nW]``."""
    points = modes != VISIBLE
    for axis, size in enumerate(token_size, start=2):
        points = points.repeat_interleave(size, dim=axis)
    return points


class FakePredictor(BoxPredictor):
    """A predictor whose every member is ``rule(values [b, L, T, H, W], targets [b, L, T, H, W])``."""

    def rule(self, values: Tensor, targets: Tensor) -> Tensor:
        raise NotImplementedError

    def predict(self, inputs: Mapping[str, Tensor], modes: Mapping[str, Tensor],
                metadata: BatchMetadata, coarsen_factor: int | None = None,
                member: Tensor | None = None) -> dict[str, Tensor]:
        kept = self.members if member is None else 1  # every member is the same: any one of them
        result = {}
        for f in self.fields:
            if f.predicted:
                values = inputs[f.name].to(torch.float32)
                out = self.rule(values, target_mask(modes[f.name], f.token_size))
                result[f.name] = out[:, None].repeat(1, kept, 1, 1, 1, 1)  # [b, E, L, T, H, W]
        return result


class Persistence(FakePredictor):
    """Every target step is the last given step before the first target step (per tile)."""

    def rule(self, values: Tensor, targets: Tensor) -> Tensor:
        steps = targets.flatten(3).any(dim=-1).any(dim=1)  # [b, T]
        out = values.clone()
        for i in range(values.shape[0]):
            first = int(steps[i].nonzero().min())
            out[i][:, steps[i]] = values[i, :, first - 1].unsqueeze(1)  # [L, k, H, W] <- [L, 1, H, W]
        return out


class Identity(FakePredictor):
    """The inputs as given (the coarsened values for downscaling)."""

    def rule(self, values: Tensor, targets: Tensor) -> Tensor:
        return values


class Constant(FakePredictor):
    """``CONSTANT`` at the points of target tokens, the inputs elsewhere."""

    def rule(self, values: Tensor, targets: Tensor) -> Tensor:
        return torch.where(targets, CONSTANT, values)


def fake(kind: type[FakePredictor], predictor: BoxPredictor) -> FakePredictor:
    return kind(predictor.model, predictor.config, predictor.statistics)


# ------------------------------------------------------------------------------------ helpers

@functools.cache
def truth_dataset(path: str) -> xr.Dataset:
    return xr.open_zarr(path).load()


def truth_on(prediction: xr.Dataset, store: Path, name: str, when: np.datetime64) -> np.ndarray:
    """``[L, H, W]``: the store's values of field ``name`` at ``when`` on the prediction's grid."""
    values = truth_dataset(str(store))[name].sel(
        time=np.datetime64(when, "ns"), level=prediction.level.values,
        latitude=prediction.latitude.values, longitude=prediction.longitude.values)
    return values.transpose("level", "latitude", "longitude").values


def assert_float32_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to the float32 rounding of normalising, blending and de-normalising."""
    np.testing.assert_allclose(actual, np.broadcast_to(expected, actual.shape), rtol=3e-6, atol=3e-5)


def field_constant(predictor: BoxPredictor, name: str, value: float) -> np.ndarray:
    """``[L, 1, 1]``: the physical value of the normalised ``value`` at every level of a field."""
    mean, std = predictor.statistics[name].select(predictor.levels[name], name)
    return (value * std + mean)[:, None, None]


def run(request, predictor) -> xr.Dataset:
    infer(request, predictor=predictor)
    return open_prediction(request.output).load()


# ------------------------------------------------------------------------------------ forecasts

@pytest.mark.parametrize("region", [None, WRAPPED], ids=["global", "across-meridian"])
def test_persistence_forecast_gives_the_truth_at_the_reference(make_request, predictor, truth_store, region):
    times = (store_time(10), store_time(13))
    prediction = run(make_request(times=times, region=region), fake(Persistence, predictor))
    assert prediction.sizes["member"] == predictor.members
    if region is not None:  # the regional grid keeps the store's longitudes, increasing modulo 360
        assert prediction.longitude.values.tolist() == [*range(300, 360, 10), *range(0, 70, 10)]
        assert prediction.latitude.values.tolist() == list(range(-40, 50, 10))
    np.testing.assert_array_equal(prediction.time.values, np.asarray(times, "datetime64[ns]"))
    np.testing.assert_array_equal(prediction.prediction_timedelta.values, [hours(1), hours(2)])
    for i, when in enumerate(times):
        for name in FIELDS:
            values = prediction[name].isel(time=i).values  # [P, E, L, H, W]
            assert_float32_equal(values, truth_on(prediction, truth_store, name, when)[None, None])


@pytest.mark.parametrize("mode", ["members", "mean"])
def test_persistence_rollout_past_the_box_keeps_the_reference(make_request, predictor, truth_store, mode):
    when = store_time(12)
    prediction = run(make_request(times=(when,), lead_hours=5.0, rollout=mode), fake(Persistence, predictor))
    offsets = np.asarray([hours(h) for h in range(1, 6)], "timedelta64[ns]")
    np.testing.assert_array_equal(prediction.prediction_timedelta.values, offsets)
    np.testing.assert_array_equal(prediction.valid_time.values, np.datetime64(when, "ns") + offsets[None])
    assert prediction.attrs["rollout"] == mode
    for name in FIELDS:
        truth = truth_on(prediction, truth_store, name, when)  # [L, H, W]
        assert_float32_equal(prediction[name].isel(time=0).values, truth)


def test_lead_within_the_box_writes_only_the_requested_steps(make_request, predictor, truth_store):
    prediction = run(make_request(lead_hours=1.0), fake(Persistence, predictor))
    np.testing.assert_array_equal(prediction.prediction_timedelta.values, [np.timedelta64(1, "h")])
    truth = truth_on(prediction, truth_store, "t", store_time(10))
    assert_float32_equal(prediction.t.isel(time=0).values, truth)


# ------------------------------------------------------------------------------------ other tasks

def test_interpolation_predicts_the_gap_after_the_reference(make_request, predictor, truth_store):
    when = store_time(10)
    persisted = run(make_request(task="interpolate", times=(when,)), fake(Persistence, predictor))
    np.testing.assert_array_equal(persisted.prediction_timedelta.values, [hours(1), hours(2)])
    assert_float32_equal(persisted.t.isel(time=0).values, truth_on(persisted, truth_store, "t", when))
    identity = run(make_request(task="interpolate", times=(when,), overwrite=True), fake(Identity, predictor))
    for p, valid in enumerate(identity.valid_time.values[0]):  # the given values land at their own time
        assert_float32_equal(identity.u.isel(time=0, prediction_timedelta=p).values,
                             truth_on(identity, truth_store, "u", valid))


def test_downscaling_identity_gives_the_block_means_of_the_truth(make_request, predictor, truth_store):
    when = store_time(10)
    request = make_request(task="downscale", times=(when,), coarsen_factor=2)
    prediction = run(request, fake(Identity, predictor))
    assert prediction.attrs["coarsen_factor"] == 2
    np.testing.assert_array_equal(prediction.prediction_timedelta.values, [hours(h) for h in range(6)])
    for p in range(6):
        truth = truth_on(prediction, truth_store, "t", when + hours(p))  # [L, 19, 36]
        values = prediction.t.isel(time=0, prediction_timedelta=p).values  # [E, L, 19, 36]
        assert_float32_equal(values, coarsen(torch.from_numpy(truth), 2).numpy())
        assert_float32_equal(values[..., :2, :2], truth[:, :2, :2].mean(axis=(1, 2))[:, None, None])
        # 19 latitudes: the last block holds one row
        assert_float32_equal(values[..., 18, 4:6], truth[:, 18, 4:6].mean(axis=1)[:, None])


def test_downscaling_runs_zero_shot_on_a_grid_finer_than_the_model_and_forecasting_does_not(
        make_request, infer_root, tmp_path):
    fine = prepare_variant(infer_root / "fine-5deg.zarr", nlat=37, nlon=72)  # the model's grid is 10 degrees
    prediction = infer(make_request(data=fine, task="downscale", coarsen_factor=2))
    written = open_prediction(prediction.output)
    assert written.sizes["latitude"] == 37 and written.sizes["longitude"] == 72
    assert np.isfinite(written.t.values).all()
    with pytest.raises(DataError, match="degree grid"):
        infer(make_request(data=fine, output=tmp_path / "forecast.zarr"))


def test_infill_fills_the_region_and_keeps_the_truth_outside(make_request, predictor, truth_store):
    region = (-30.0, 30.0, 350.0, 40.0)  # across the 0/360 meridian
    prediction = run(make_request(task="infill", infill_region=region), fake(Constant, predictor))
    lat, lon = prediction.latitude.values, prediction.longitude.values
    inside = (np.abs(lat) <= 30)[:, None] & ((lon >= 350) | (lon <= 40))[None, :]  # [H, W]
    mask = prediction.target_mask.isel(time=0).values  # [P, H, W]
    assert mask.shape[0] == 6 and (mask == inside).all()
    assert prediction.attrs["infill_region"] == list(region)
    for p, name in itertools.product(range(6), FIELDS):
        values = prediction[name].isel(time=0, prediction_timedelta=p).values  # [E, L, H, W]
        truth = truth_on(prediction, truth_store, name, store_time(10) + hours(p))  # [L, H, W]
        expected = np.where(inside, field_constant(predictor, name, CONSTANT), truth)  # [L, H, W]
        assert_float32_equal(values, expected[None])


def test_reconstruct_hides_the_requested_fraction_reproducibly(make_request, predictor, truth_store,
                                                               tmp_path):
    constant = fake(Constant, predictor)
    first = run(make_request(task="reconstruct", ratio=0.3, seed=5), constant)
    again = run(make_request(task="reconstruct", ratio=0.3, seed=5, output=tmp_path / "again.zarr"), constant)
    other = run(make_request(task="reconstruct", ratio=0.3, seed=6, output=tmp_path / "other.zarr"), constant)
    mask = first.target_mask.isel(time=0).values  # [T=6, 19, 36]
    np.testing.assert_array_equal(mask, again.target_mask.isel(time=0).values)
    assert not np.array_equal(mask, other.target_mask.isel(time=0).values)
    assert abs(mask.mean() - 0.3) < 0.05
    blocks = np.pad(mask, ((0, 0), (0, 1), (0, 0)), mode="edge").reshape(3, 2, 5, 4, 9, 4)  # token blocks
    assert (blocks.all(axis=(1, 3, 5)) == blocks.any(axis=(1, 3, 5))).all()  # whole tokens are hidden
    values = first.t.isel(time=0).values  # [P, E, L, H, W]
    truth = np.stack([truth_on(first, truth_store, "t", store_time(10) + hours(p)) for p in range(6)])
    expected = np.where(mask[:, None], field_constant(predictor, "t", CONSTANT)[None], truth)  # [P, L, H, W]
    assert_float32_equal(values, expected[:, None])


# ------------------------------------------------------------------------------------ the real model

def test_results_do_not_depend_on_the_batch_size(make_request, predictor, tmp_path):
    one = make_request(batch_size=1, output=tmp_path / "one.zarr")
    result = infer(one, predictor=predictor)
    every = make_request(batch_size=result.tiles, output=tmp_path / "every.zarr")
    assert infer(every, predictor=predictor).tiles == result.tiles == 36  # 4 x 9 tiles on the globe
    first, second = open_prediction(one.output).load(), open_prediction(every.output).load()
    for name in FIELDS:
        np.testing.assert_array_equal(first[name].values, second[name].values)


def test_an_alpha_override_moves_the_prediction_and_is_recorded(make_request, predictor, tmp_path):
    factual = run(make_request(region=WRAPPED, output=tmp_path / "factual.zarr"), predictor)
    request = make_request(region=WRAPPED, output=tmp_path / "counterfactual.zarr", alpha=("year=1950",))
    counterfactual = run(request, predictor)
    assert counterfactual.attrs["alpha"] == ["year=1950"] and "alpha" not in factual.attrs
    for name in FIELDS:
        assert not np.allclose(counterfactual[name].values, factual[name].values)
    same = run(make_request(region=WRAPPED, output=tmp_path / "same.zarr", alpha=("year=+0",)), predictor)
    for name in FIELDS:
        np.testing.assert_array_equal(same[name].values, factual[name].values)


def test_the_ensemble_is_kept_and_its_members_differ(make_request, predictor):
    prediction = run(make_request(region=WRAPPED), predictor)
    assert prediction.sizes["member"] == predictor.config.model.ensemble_members == 4
    np.testing.assert_array_equal(prediction.member.values, np.arange(4))
    for name in FIELDS:
        values = prediction[name].isel(time=0).values  # [P, E, L, H, W]
        assert np.isfinite(values).all()
        for a, b in itertools.combinations(range(4), 2):
            assert (values[:, a] != values[:, b]).mean() > 0.99


def test_a_forecast_never_reads_past_its_reference(make_request, predictor, nan_store, tmp_path):
    """The store holds NaN from NAN_FROM on; a forecast from the step before is finite and equal to the
    forecast from the complete store."""
    when = store_time(NAN_FROM - 1)
    options = {"times": (when,), "region": WRAPPED, "lead_hours": 3.0}
    clean = run(make_request(output=tmp_path / "clean.zarr", **options), predictor)
    masked = run(make_request(data=nan_store, output=tmp_path / "nan.zarr", **options), predictor)
    for name in FIELDS:
        assert np.isfinite(masked[name].values).all()
        np.testing.assert_array_equal(masked[name].values, clean[name].values)


@pytest.mark.parametrize(("mode", "tiles"), [("members", 2 * (WRAPPED_TILES + 2 * 4 * WRAPPED_TILES)),
                                             ("mean", 2 * 3 * WRAPPED_TILES)])
def test_the_result_counts_cases_passes_and_tiles(make_request, predictor, mode, tiles):
    """2 cases, a 5 h lead from boxes predicting 2 h: 3 rollout steps; a member rollout feeds E = 4
    windows per tile after the first step."""
    request = make_request(times=(store_time(10), store_time(20)), region=WRAPPED, lead_hours=5.0,
                           rollout=mode)
    calls = []
    result = infer(request, progress=lambda done, total: calls.append((done, total)), predictor=predictor)
    assert (result.cases, result.domain_passes, result.tiles) == (2, 6, tiles)
    assert result.output == request.output and result.task == "forecast" and result.seconds > 0
    assert calls == [(1, 2), (2, 2)]


def test_a_forecast_from_the_last_step_of_the_store(make_request, predictor):
    prediction = run(make_request(times=(store_time(47),), region=WRAPPED), predictor)
    np.testing.assert_array_equal(prediction.valid_time.values[0],
                                  np.asarray([store_time(48), store_time(49)], "datetime64[ns]"))
    assert np.isfinite(prediction.t.values).all()


# ------------------------------------------------------------------------------------ bad input

BAD_REQUESTS = {
    "time-not-in-store": ({"times": (store_time(10) + np.timedelta64(30, "m"),)}, None, "not a time step"),
    "time-before-store": ({"times": (np.datetime64("2000-01-01T00", "s"),)}, None, "not a time step"),
    "window-before-start": ({"times": (store_time(2),)}, None, "needs the store's steps"),
    "window-past-end": ({"task": "infill", "infill_region": (0, 10, 0, 10), "times": (store_time(44),)},
                        None, "needs the store's steps"),
    "lead-not-multiple": ({"lead_hours": 1.5}, None, "lead time 1.5 h"),
    "lead-zero": ({"lead_hours": 0.0}, None, "lead time 0 h"),
    "lead-negative": ({"lead_hours": -2.0}, None, "lead time -2 h"),
    "lead-for-interpolate": ({"task": "interpolate", "lead_hours": 2.0}, None,
                             "for task 'forecast', not for 'interpolate'"),
    "region-smaller-than-box": ({"region": (0, 30, 0, 30)}, None, "smaller than the model's box"),
    "region-without-points": ({"region": (1, 9, 0, 360)}, None, "holds no grid point"),
    "infill-without-region": ({"task": "infill"}, None, "needs the option infill_region"),
    "infill-region-off-domain": ({"task": "infill", "infill_region": (1, 9, 0, 90)}, None,
                                 "holds no grid point"),
    "field-missing": ({}, "store_without_u", "needs field 'u'"),
    "level-missing": ({}, "store_other_levels", "at levels [500.0, 850.0]"),
    "grid-spacing": ({}, "coarse_store", "10 degree grid"),
    "nan-in-forecast-window": ({"times": (store_time(NAN_FROM + 1),)}, "nan_store", "holds NaN"),
    "nan-in-infill-window": ({"task": "infill", "infill_region": (0, 10, 0, 10),
                              "times": (store_time(NAN_FROM - 2),)}, "nan_store", "field 't' holds NaN"),
    "unknown-task": ({"task": "nowcast"}, None, "unknown inference task 'nowcast'"),
    "batch-size": ({"batch_size": 0}, None, "batch_size"),
    "reconstruct-ratio": ({"task": "reconstruct", "ratio": 0.0}, None, "ratio must lie in"),
    "times-not-increasing": ({"times": (store_time(12), store_time(10))}, None, "strictly increasing"),
    "no-time": ({"times": ()}, None, "no reference time"),
    "alpha-unknown": ({"alpha": ("season=2",)}, None, "alpha 'season' is not an auxiliary value"),
    "alpha-malformed": ({"alpha": ("year",)}, None, "expected NAME=VALUE"),
}


@pytest.mark.parametrize(("changes", "store", "message"), BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_bad_input_is_a_one_line_error_and_writes_nothing(make_request, predictor, request, changes, store,
                                                          message):
    if store is not None:
        changes = {**changes, "data": request.getfixturevalue(store)}
    bad = make_request(**changes)
    with pytest.raises(AtmorepError, match=re.escape(message)) as error:
        infer(bad, predictor=fake(Persistence, predictor))
    assert "\n" not in str(error.value)
    assert not bad.output.exists() and not temporary_sibling(bad.output).exists()


@pytest.mark.parametrize("lead", [float("nan"), float("inf")])
def test_a_lead_time_that_is_not_a_number_is_a_data_error(make_request, predictor, lead):
    with pytest.raises(DataError, match="lead time"):
        infer(make_request(lead_hours=lead), predictor=fake(Persistence, predictor))


def test_a_zero_coarsening_factor_is_a_data_error(make_request, predictor):
    bad = make_request(task="downscale", coarsen_factor=0)
    with pytest.raises(DataError, match="coarsen_factor"):
        infer(bad, predictor=fake(Identity, predictor))
    assert not bad.output.exists()


def test_an_existing_output_is_kept_without_overwrite(make_request, predictor, truth_store):
    persistence = fake(Persistence, predictor)
    old = run(make_request(), persistence)
    with pytest.raises(DataError, match="already exists"):
        infer(make_request(times=(store_time(20),)), predictor=persistence)
    kept = open_prediction(make_request().output).load()
    xr.testing.assert_identical(kept.drop_attrs(), old.drop_attrs())
    assert kept.attrs == old.attrs
    assert not temporary_sibling(make_request().output).exists()
    replaced = run(make_request(times=(store_time(20),), overwrite=True), persistence)
    np.testing.assert_array_equal(replaced.time.values, [np.datetime64(store_time(20), "ns")])


# ------------------------------------------------------------------------------------ point masks

def test_token_modes_mark_a_token_when_any_of_its_points_is_a_target():
    generator = torch.Generator().manual_seed(0)
    points = torch.rand(3, 4, 8, 12, generator=generator) > 0.97  # [b, T, H, W], few targets
    modes = token_modes(points, (2, 4, 4), levels=2, mode=MASKED)
    assert modes.shape == (3, 2, 2, 2, 3) and modes.dtype == torch.int8
    for b, t, h, w in itertools.product(range(3), range(2), range(2), range(3)):
        hit = bool(points[b, 2 * t:2 * t + 2, 4 * h:4 * h + 4, 4 * w:4 * w + 4].any())
        assert (modes[b, :, t, h, w] == (MASKED if hit else VISIBLE)).all()
    assert (modes == MASKED).any() and (modes == VISIBLE).any()
    coarse = token_modes(points, (2, 4, 4), levels=1, mode=COARSENED)
    assert torch.equal(coarse[:, 0] == COARSENED, modes[:, 0] == MASKED)


def test_region_points_across_the_date_line():
    latitude = np.array([-20.0, -10.0, 0.0, 10.0, 20.0])
    longitude = np.arange(36) * 10.0
    inside = region_points(latitude, longitude, (-10.0, 10.0, 340.0, 20.0))
    expected = np.isin(latitude, [-10, 0, 10])[:, None] & np.isin(longitude, [340, 350, 0, 10, 20])[None, :]
    np.testing.assert_array_equal(inside, expected)
    np.testing.assert_array_equal(region_points(latitude, longitude, (-10.0, 10.0, -20.0, 20.0)), expected)
    assert region_points(latitude, longitude, (-90.0, 90.0, -180.0, 180.0)).all()
    assert region_points(latitude, longitude, (-5.0, 5.0, 100.0, 120.0)).sum() == 3  # one row, 3 columns
    with pytest.raises(DataError, match="lat_min"):
        region_points(latitude, longitude, (10.0, -10.0, 0.0, 20.0))


def test_seams_are_the_token_and_tile_boundaries_of_the_domain(predictor):
    config = predictor.config
    th, tw = config.fields[0].token_size[1:]
    _, h, w = config.data.box.shape
    plan = TilePlan.for_shape((2 * h, 3 * w), (h, w), 0.0, periodic=True)
    attrs = seam_attrs(plan, config)
    assert attrs["periodic"] is True
    assert attrs["seams_latitude"] == list(range(th, 2 * h, th))  # interior boundaries only
    assert attrs["seams_longitude"] == list(range(0, 3 * w, tw))  # the 0/360 seam counts on a globe
    regional = seam_attrs(TilePlan.for_shape((2 * h, 3 * w), (h, w), 0.0, periodic=False), config)
    assert regional["periodic"] is False and regional["seams_longitude"] == list(range(tw, 3 * w, tw))
