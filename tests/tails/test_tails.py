"""Tails on a tiny backbone: index arithmetic, the masked loss, a known bias recovered, the commands and
their errors."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from atmorep.cli import app
from atmorep.config import ConfigError
from atmorep.errors import DataError
from atmorep.evaluate.tails import score_sites, small_scale_band
from atmorep.tails.backbone import Backbone
from atmorep.tails.base import TailBatch, spread_factors, tail_loss
from atmorep.tails.coarse import CoarsePeriod
from atmorep.tails.config import Target, resolve_finetune_config
from atmorep.tails.finetune import finetune
from atmorep.tails.grid import FinePeriod, GridPairs, upsample
from atmorep.tails.registry import get_tail
from atmorep.tails.sites import SitePeriod, site_indices
from tests.tails.conftest import OFFSET, SLOPE, grid_config, site_config, write_observations

START, END = np.datetime64("2001-03-01T00", "s"), np.datetime64("2001-03-03", "s")
TARGETS = (Target(field="t", level=500.0), Target(field="sp"))


@pytest.fixture(scope="module")
def model(backbone) -> Backbone:
    return Backbone(backbone)


@pytest.fixture(scope="module")
def period(model, coarse) -> CoarsePeriod:
    return CoarsePeriod(str(coarse), model, TARGETS, START, END)


def _grid_pairs(period, fine, truth=True) -> GridPairs:
    fine_period = FinePeriod(str(fine), period, TARGETS, truth=truth)
    return GridPairs(period, fine_period, mean=[250.0, 1e5], std=[10.0, 300.0], scale=[1.0, 30.0])


def test_the_first_guess_is_the_bicubic_upsampling_and_blocks_go_back_where_they_came_from(period, fine):
    pairs = _grid_pairs(period, fine)
    boxes = period.random_boxes(np.random.default_rng(0), 3) + period.tiling()[-1:]  # a box past 360
    batch = pairs.batch(boxes)
    grids = pairs.to_grid(batch.guess[:, None], boxes)  # [B, K, 1, T, f H, f W]
    lat, lon = pairs.fine.latitude, pairs.fine.longitude
    bicubic = upsample(period.products["sp"], (period.latitude, period.longitude), (lat, lon), 3, True)
    for box, grid in zip(boxes, grids, strict=True):
        columns = (2 * box.k0 + np.arange(grid.shape[-1])) % lon.size
        rows = slice(2 * box.i0, 2 * box.i0 + grid.shape[-2])
        expected = bicubic[box.t0:box.t0 + grid.shape[2], rows][..., columns]
        np.testing.assert_allclose(grid[1, 0], expected, rtol=1e-6)
    # the offsets' indices address the fine points whose truth the rows hold (first step of each box)
    nt, nh, nw = period.backbone.grid
    shape = (len(boxes), nt, nh, nw, 2, 2, -1)  # [B, nT, nH, nW, K, tt, f th * f tw]
    index = batch.extra["fine_index"].numpy().reshape(shape)[:, 0, :, :, :, 0]  # [B, nH, nW, K, Q']
    held = batch.truth.numpy().reshape(shape)[:, 0, :, :, :, 0]
    points = pairs.fine.latitude.size * pairs.fine.longitude.size
    target, point = np.divmod(index, points)
    t0 = np.array([box.t0 for box in boxes])[:, None, None, None, None]
    truth = pairs.fine.truth.reshape(2, pairs.fine.truth.shape[1], points)[target, t0, point]
    expected = (truth - pairs.mean[target]) / pairs.std[target]
    np.testing.assert_allclose(held, expected, rtol=1e-5, atol=1e-5)


def test_a_cubic_along_both_axes_is_upsampled_exactly():
    lat, lon = np.linspace(-60, 60, 7), np.arange(0, 360, 30.0)
    fine_lat = np.linspace(-55, 55, 14)
    values = (0.001 * lat[:, None] ** 3 - lat[:, None]) * np.ones(lon.size)[None]
    result = upsample(values[None], (lat, lon), (fine_lat, lon), 3, True)[0]
    np.testing.assert_allclose(result, (0.001 * fine_lat[:, None] ** 3 - fine_lat[:, None])
                               * np.ones(lon.size)[None], atol=1e-9)


def test_the_masked_loss_ignores_missing_observations_exactly(model, period, coarse, tmp_path):
    recipe = get_tail("sites")
    spec = resolve_finetune_config(site_config(model.directory, coarse, tmp_path / "none", tmp_path)).tail
    complete = write_observations(tmp_path / "complete.zarr", coarse, missing=0.0)
    holey = write_observations(tmp_path / "holey.zarr", coarse, missing=0.3)
    setup = {"mean": [1e5], "std": [300.0], "scale": [30.0], "stations": list(range(40)),
             "site_latitude": [0.0] * 40, "site_longitude": [0.0] * 40}
    full = recipe.pairs(spec, period, setup, target=str(complete))
    partial = recipe.pairs(spec, period, setup, target=str(holey))
    boxes = period.tiling()
    rows_full, rows_partial = full.rows(boxes), partial.rows(boxes)
    observed = partial.sites.observed
    expected = sum(np.isfinite(observed[0, b.t0:b.t0 + 6]).sum(0)[np.isin(
        np.arange(40), rows_full["site"][rows_full["box"] == n])].sum() for n, b in enumerate(boxes))
    assert rows_partial["site"].size == expected < rows_full["site"].size
    key = lambda rows: set(zip(rows["box"], rows["time"], rows["site"], strict=True))  # noqa: E731
    assert key(rows_partial) <= key(rows_full)
    a, b = full.batch(boxes), partial.batch(boxes)
    assert torch.isfinite(b.truth).all()
    keep = torch.from_numpy(np.array([k in key(rows_partial) for k in zip(rows_full["box"], rows_full["time"],
                                                                          rows_full["site"], strict=True)]))
    residual = torch.randn(a.guess.shape[0], 4, 1, generator=torch.Generator().manual_seed(0))
    subset = TailBatch(a.guess[keep], a.scale[keep], a.target[keep], a.truth[keep])
    weights = {"crps_fair": 1.0, "mse_member": 0.1}
    assert float(tail_loss(residual[keep], subset, weights)) == float(tail_loss(residual[keep], b, weights))


def test_the_observation_tail_recovers_a_known_linear_bias(backbone, coarse, observations, tmp_path):
    config = resolve_finetune_config(site_config(backbone, coarse, observations, tmp_path / "run",
                                                 options={"offsets": False, "holdout_sites": 0.25},
                                                 max_steps=200, validate_every=200, boxes_per_batch=8,
                                                 optim={"lr": 3e-3, "warmup_steps": 20}))
    result = finetune(config)
    scores = result.validation
    assert scores["rmse_guess_sp"] > 100.0  # the bias: OFFSET + (SLOPE - 1) * ~1e5 Pa = 350 Pa
    assert scores["rmse_sp"] < 0.1 * scores["rmse_guess_sp"], scores
    output = tmp_path / "sites.zarr"
    run = CliRunner().invoke(app, ["infer", "--checkpoint", str(result.checkpoint), "--data", str(coarse),
                                   "--target", str(observations), "--start", "2001-03-02T06",
                                   "--end", "2001-03-02T23", "-o", str(output)])
    assert run.exit_code == 0, run.output
    scored = CliRunner().invoke(app, ["evaluate", str(output), "--coarse", str(coarse), "--observations",
                                      str(observations), "-o", str(tmp_path / "scores")])
    assert scored.exit_code == 0, scored.output
    table = pd.read_csv(tmp_path / "scores" / "tail_scores.csv")
    pd.testing.assert_frame_equal(table, score_sites(str(output), str(observations), str(coarse)), rtol=1e-4)
    held = table[(table["sites"] == "held-out sites")].set_index("method")["rmse"]
    assert held["tail"] < 0.1 * held["uncorrected"]
    assert held["linear (pooled)"] < 1.0  # the pooled fit recovers the exact linear bias
    assert abs(SLOPE - 1.0) * 1e5 + OFFSET > 300.0


def test_finetune_infer_and_evaluate_a_downscaling_tail(backbone, coarse, fine, tmp_path):
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(grid_config(backbone, coarse, fine, tmp_path / "run")))
    runner = CliRunner()
    trained = runner.invoke(app, ["finetune", "--config", str(config)])
    assert trained.exit_code == 0, trained.output
    checkpoint = tmp_path / "run" / "tail"
    assert (checkpoint / "tail.json").is_file() and not (checkpoint / "backbone").exists()
    resolved = yaml.safe_load((tmp_path / "run" / "finetune.yaml").read_text())
    assert resolved["tail"]["fields"] == [{"field": "t", "level": 500.0}, {"field": "sp", "level": None}]
    output = tmp_path / "fine-prediction.zarr"
    infer = ["infer", "--checkpoint", str(checkpoint), "--data", str(coarse), "--target", str(fine),
             "--start", "2001-03-02T06", "--end", "2001-03-02T23", "-o", str(output)]
    run = runner.invoke(app, infer)
    assert run.exit_code == 0, run.output
    scored = runner.invoke(app, ["evaluate", str(output), "--coarse", str(coarse), "--truth", str(fine),
                                 "-o", str(tmp_path / "scores")])
    assert scored.exit_code == 0, scored.output
    table = (tmp_path / "scores" / "tail_scores.csv").read_text()
    for method in ("bilinear", "bicubic", "tail"):
        assert method in table
    assert (tmp_path / "scores" / "tail_spectra.png").is_file()
    spectra = pd.read_csv(tmp_path / "scores" / "tail_spectra.csv")
    assert {"truth", "bicubic", "tail member", "tail mean"} <= set(spectra["method"])
    summary = pd.read_csv(tmp_path / "scores" / "tail_site_summary.csv")
    assert sorted(summary["target"]) == ["sp", "t@500"] and (summary["wasserstein"] > 0).all()
    sites = pd.read_csv(tmp_path / "scores" / "tail_sites.csv")
    assert set(sites["source"]) == {"truth", "member", "mean"}
    assert (sites.loc[sites.source != "truth", "wasserstein"] > 0).all()
    again = runner.invoke(app, infer)
    assert again.exit_code == 2 and "already exists" in again.output


def test_a_backbone_trained_with_the_tail_is_kept_with_it(backbone, coarse, fine, tmp_path):
    config = resolve_finetune_config(grid_config(backbone, coarse, fine, tmp_path / "run", max_steps=2,
                                                 backbone_lr_ratio=0.1))
    result = finetune(config)
    assert (result.checkpoint / "backbone" / "meta.json").is_file()
    from atmorep.tails.saved import load_tail

    loaded = load_tail(result.checkpoint)  # the kept backbone, whose digest the tail recorded
    assert loaded.backbone.directory == result.checkpoint / "backbone"


def test_a_tail_refuses_another_backbone(backbone, other_backbone, coarse, fine, tmp_path):
    config = grid_config(backbone, coarse, fine, tmp_path / "run", max_steps=1)
    result = finetune(resolve_finetune_config(config))
    out = str(tmp_path / "out.zarr")
    run = CliRunner().invoke(app, ["infer", "--checkpoint", str(result.checkpoint), "--data", str(coarse),
                                   "--target", str(fine), "--backbone", str(other_backbone), "--start",
                                   "2001-03-02T06", "--end", "2001-03-02T23", "-o", out])
    assert run.exit_code == 2 and "Traceback" not in run.output
    assert "was fine-tuned on the backbone" in run.output and "sha256" in run.output
    assert not (tmp_path / "out.zarr").exists()
    missing = CliRunner().invoke(app, ["infer", "--checkpoint", str(result.checkpoint), "--data", str(coarse),
                                       "-o", str(tmp_path / "out.zarr")])
    assert missing.exit_code == 2 and "--target" in missing.output


def test_observations_without_coordinates_are_refused(model, period, coarse, tmp_path):
    path = write_observations(tmp_path / "bare.zarr", coarse, coordinates=False)
    with pytest.raises(DataError, match="no coordinate 'latitude\\(station\\)'"):
        SitePeriod(str(path), period, (Target(field="sp"),))


def test_sites_outside_the_domain_are_refused():
    regional = types.SimpleNamespace(latitude=np.linspace(30, 60, 7), longitude=np.arange(0, 50, 5.0),
                                     global_longitude=False)
    with pytest.raises(DataError, match="2 of 3 sites lie outside the coarse grid"):
        site_indices(regional, np.array([45.0, 10.0, 45.0]), np.array([20.0, 20.0, 200.0]), "obs.zarr")
    row, column = site_indices(regional, np.array([45.0]), np.array([22.5]), "obs.zarr")
    assert row[0] == pytest.approx(3.0) and column[0] == pytest.approx(4.5)


def test_an_empty_set_of_valid_observations_is_refused(model, period, coarse, tmp_path):
    path = write_observations(tmp_path / "empty.zarr", coarse, missing=1.0)
    with pytest.raises(DataError, match="no valid observation"):
        SitePeriod(str(path), period, (Target(field="sp"),))


def test_spread_factors_match_the_spread_to_the_error():
    generator = torch.Generator().manual_seed(0)
    truth = torch.randn(20000, 1, generator=generator)
    members = 2.0 * torch.randn(20000, 8, 1, generator=generator)  # twice too wide
    zeros = torch.zeros(20000, 1)
    batch = TailBatch(zeros, zeros + 1.0, zeros.long(), truth)
    factor = spread_factors([members], [batch], 1)
    # the mean's squared error is 1 + 4 / 8; the unbiased member variance times (1 + 1 / 8) is 4 * 9 / 8
    assert factor[0] == pytest.approx(np.sqrt(1.5 / 4.5), rel=0.03)


def test_config_errors_name_the_key(backbone, coarse, fine, tmp_path):
    data = grid_config(backbone, coarse, fine, tmp_path)
    data["tail"]["options"] = {"hiden": 3}
    with pytest.raises(ConfigError, match="no option 'hiden'"):
        finetune(resolve_finetune_config(data))
    data["tail"]["fields"] = ["t@x"]
    with pytest.raises(ConfigError, match="tail.fields"):
        resolve_finetune_config(data)
    data = grid_config(backbone, coarse, fine, tmp_path)
    data["tail"]["name"] = "perceiver"
    with pytest.raises(ConfigError, match="no tail 'perceiver'"):
        finetune(resolve_finetune_config(data))


def test_the_site_offsets_and_gains_start_at_each_sites_exact_linear_fit(model, period, coarse, observations):
    recipe = get_tail("sites")
    spec = resolve_finetune_config(site_config(model.directory, coarse, observations, model.directory)).tail
    pairs, setup = recipe.fit(spec, period)
    offset, gain = pairs.linear_fit()  # observed = OFFSET + SLOPE * guess at every site, a quarter missing
    mean, std, scale = setup["mean"][0], setup["std"][0], setup["scale"][0]
    # to float32 rounding of the stored observations (0.008 Pa of a 1 Pa signal per site)
    np.testing.assert_allclose(gain.numpy(), (SLOPE - 1.0) * std / scale, rtol=1e-2)
    np.testing.assert_allclose(offset.numpy(), (OFFSET + (SLOPE - 1.0) * mean) / scale, rtol=1e-2)
    assert offset.shape == (len(setup["stations"]), 1)


def test_the_small_scales_are_those_the_fine_truncation_holds_and_the_coarse_does_not():
    assert small_scale_band(96, 192) == (32, 63)  # T31 -> T63
    assert small_scale_band(64, 128) == (21, 41)  # T21 -> T42


def test_unseen_sites_get_their_own_spread_factor(backbone, coarse, observations, tmp_path):
    result = finetune(resolve_finetune_config(site_config(backbone, coarse, observations, tmp_path / "run",
                                                          max_steps=2)))
    from atmorep.tails.saved import load_tail

    loaded = load_tail(result.checkpoint)
    assert loaded.tail.spread.shape == (2, 1)  # [known, unseen] x targets
    assert (loaded.tail.spread > 0).all() and not torch.equal(loaded.tail.spread[0], loaded.tail.spread[1])
