"""Reading the truth onto the core's grid: exact on its own grid, smooth fields kept, bad input named."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dinosaur_torch")

from atmorep.errors import DataError  # noqa: E402
from atmorep.hybrid.state import read_truth  # noqa: E402

from .conftest import SIGMA, sigma_run  # noqa: E402


def test_the_truth_on_its_own_grid_is_read_exactly(sigma_store):
    ds = sigma_run()
    truth = read_truth(sigma_store, None, None, truncation=21, interval_hours=6)
    layers = SIGMA.size
    assert truth.fields.shape == (ds.sizes["time"], 3 * layers + 1, 32, 64)
    np.testing.assert_array_equal(truth.sigma, SIGMA)
    np.testing.assert_allclose(truth.fields[:, :layers].numpy(), ds["u"].values, atol=1e-4)
    np.testing.assert_allclose(truth.fields[:, 2 * layers:3 * layers].numpy(), ds["t"].values, atol=1e-3)
    np.testing.assert_allclose(truth.fields[:, -1].numpy(), np.log(ds["sp"].values), atol=1e-6)
    np.testing.assert_allclose(truth.orography, 0.0, atol=0.5)  # metres: flat ground from z and t
    np.testing.assert_array_equal(truth.times, ds.time.values)


def test_a_finer_truth_keeps_its_large_scales_on_a_coarser_core(tmp_path):
    path = tmp_path / "t31.zarr"
    sigma_run(truncation=31).to_zarr(path)
    truth = read_truth(path, None, None, truncation=21, interval_hours=6)
    expected = sigma_run(truncation=21)  # the same smooth fields sampled on the T21 grid
    assert truth.fields.shape[-2:] == (32, 64)
    np.testing.assert_allclose(truth.fields[:, :SIGMA.size].numpy(), expected["u"].values, atol=1e-3)
    np.testing.assert_allclose(truth.fields[:, 2 * SIGMA.size:3 * SIGMA.size].numpy(), expected["t"].values,
                               atol=1e-3)


def test_period_and_interval_select_the_states(sigma_store):
    truth = read_truth(sigma_store, "2001-01-02", "2001-01-03", truncation=21, interval_hours=12)
    assert [str(t)[:13] for t in truth.times] == ["2001-01-02T00", "2001-01-02T12", "2001-01-03T00",
                                                  "2001-01-03T12"]  # an end date includes its whole day


def test_bad_truths_are_named(sigma_store, tmp_path):
    ds = sigma_run()
    with pytest.raises(DataError, match=r"a.zarr: field\(s\) sp not found"):
        ds.drop_vars("sp").to_zarr(tmp_path / "a.zarr")
        read_truth(tmp_path / "a.zarr", None, None, 21, 6)
    with pytest.raises(DataError, match="levels are pressure; the hybrid core needs sigma levels"):
        pressure = ds.assign_coords(level=("level", [100.0, 300, 500, 700, 900],
                                           {"level_kind": "pressure", "units": "hPa"}))
        pressure.to_zarr(tmp_path / "b.zarr")
        read_truth(tmp_path / "b.zarr", None, None, 21, 6)
    with pytest.raises(DataError, match="field 't' has NaNs"):
        holes = ds.copy(deep=True)
        holes["t"][2, 1, 3, 4] = np.nan
        holes.to_zarr(tmp_path / "c.zarr")
        read_truth(tmp_path / "c.zarr", None, None, 21, 6)
    with pytest.raises(DataError, match="times are 6 h apart; the hybrid step of 9 h must be a multiple"):
        read_truth(sigma_store, None, None, 21, 9)
    with pytest.raises(DataError, match="the period holds 0 time"):
        read_truth(sigma_store, "2005-01-01", "2005-02-01", 21, 6)
    with pytest.raises(DataError, match="core's truncation T31 is finer than the truth's T21"):
        read_truth(sigma_store, None, None, 31, 6)
    with pytest.raises(DataError, match=r"nothing.zarr: no such store; make a sigma-level run with: atmorep "
                                        r"data simulate .*nothing.zarr --interval 6 --fields u,v,t,z,sp"):
        read_truth(tmp_path / "nothing.zarr", None, None, 21, 6)
    with pytest.raises(DataError, match=r"times are not evenly 6 h apart: 12 h after 2001-01-01T12:00"):
        ds.drop_isel(time=3).to_zarr(tmp_path / "gap.zarr")
        read_truth(tmp_path / "gap.zarr", None, None, 21, 6)
    with pytest.raises(DataError, match="not a Gaussian grid"):
        ds.isel(latitude=slice(0, 30)).to_zarr(tmp_path / "d.zarr")
        read_truth(tmp_path / "d.zarr", None, None, 21, 6)
