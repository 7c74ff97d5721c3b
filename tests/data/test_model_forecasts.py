"""Another model's forecasts of a simulated truth: started from the truth's states, checked against it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import xarray as xr
import zarr

from atmorep.data.model_forecasts import LEAD, ForecastSpec, simulate_forecasts
from atmorep.data.simulate import SimulationSpec, simulate
from atmorep.errors import DataError

SHORT = SimulationSpec(start="2000-01-01", days=2.0, output_interval_hours=6, spinup_days=1.0, chunk_days=1.0,
                       fields=("u", "v", "t", "sp"))


@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    pytest.importorskip("jcm")
    return simulate(SHORT, tmp_path_factory.mktemp("truth") / "truth.zarr", progress=False)


def _open(path) -> xr.Dataset:
    return xr.open_zarr(path, consolidated=True).load()


def test_forecast_spec_is_checked():
    with pytest.raises(DataError, match="'convection.nothing' is not one of jcm's SPEEDY parameters"):
        ForecastSpec(physics=(("convection.nothing", 1.0),))
    with pytest.raises(DataError, match="at least one parameter"):
        ForecastSpec(physics=())
    with pytest.raises(DataError, match="positive integer"):
        ForecastSpec(every_hours=0)


@pytest.mark.slow
@pytest.mark.sim
def test_forecasts_cover_the_truth_times_once_and_differ_by_their_physics(truth, tmp_path):
    out = simulate_forecasts(truth, tmp_path / "fc.zarr", ForecastSpec(every_hours=12), progress=False)
    ds, reference = _open(out), _open(truth)
    assert list(ds.data_vars) == list(reference.data_vars)
    np.testing.assert_array_equal(ds.time.values, reference.time.values)
    np.testing.assert_array_equal(ds[LEAD].values, [0, 6, 12, 6, 12, 6, 12, 6])
    for name in ("u", "v", "t"):
        np.testing.assert_array_equal(ds[name].values[0], reference[name].values[0])  # lead 0: the truth
        error = np.sqrt(((ds[name] - reference[name]) ** 2).mean(("level", "latitude", "longitude"))).values
        assert (error[1:] > 0).all() and (error[1:] < 3.0).all(), (name, error)
        assert error[2] > error[1]  # 12 h from the same start is further off than 6 h
    assert "atmorep_simulation" not in ds.attrs and ds.attrs["complete"] is True
    with pytest.raises(DataError, match="already exists"):
        simulate_forecasts(truth, out, ForecastSpec(every_hours=12), progress=False)
    with pytest.raises(DataError, match="not a store of 'atmorep data simulate'"):
        simulate_forecasts(out, tmp_path / "again.zarr", ForecastSpec(every_hours=12), progress=False)
    with pytest.raises(DataError, match="9 h is not a multiple of the truth's output interval"):
        simulate_forecasts(truth, tmp_path / "nine.zarr", ForecastSpec(every_hours=9), progress=False)


@pytest.mark.slow
@pytest.mark.sim
def test_unchanged_physics_forecasts_the_truth_exactly_and_a_changed_truth_is_found(truth, tmp_path):
    same = ForecastSpec(every_hours=12, physics=(("convection.trcnv", 6.0),))  # SPEEDY's default value
    ds = _open(simulate_forecasts(truth, tmp_path / "same.zarr", same, progress=False))
    reference = _open(truth)
    for name in ("u", "v", "t", "sp"):
        np.testing.assert_array_equal(ds[name].values, reference[name].values)
    changed = shutil.copytree(truth, tmp_path / "changed.zarr")
    array = zarr.open_group(changed, mode="r+")["t"]
    array[3] = array[3] + 0.5
    with pytest.raises(DataError, match="does not reproduce its 't' at 2000-01-01T18"):
        simulate_forecasts(changed, tmp_path / "fc.zarr", same, progress=False)
    assert not (tmp_path / "fc.zarr").exists()


def test_the_command_line_refuses_options_that_the_truth_decides(tmp_path):
    from typer.testing import CliRunner

    from atmorep.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["data", "simulate", str(tmp_path / "fc.zarr"), "--forecast-of",
                                 str(tmp_path / "truth.zarr"), "--days", "3"])
    assert result.exit_code == 2 and "--days: a forecast takes the simulation spec" in result.output
    result = runner.invoke(app, ["data", "simulate", str(tmp_path / "fc.zarr"), "--forecast-of",
                                 str(tmp_path / "truth.zarr"), "--physics", "convection.trcnv=fast"])
    assert result.exit_code == 2 and "the value must be a number" in result.output
    result = runner.invoke(app, ["data", "simulate", str(tmp_path / "fc.zarr"), "--forecast-of",
                                 str(tmp_path / "truth.zarr")])
    assert result.exit_code == 2 and "not a store of 'atmorep data simulate'" in result.output
    assert not (tmp_path / "fc.zarr").exists()
