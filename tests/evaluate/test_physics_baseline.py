"""jcm's forecasts as a prediction store: the layout atmorep infer writes, the fields of a prepared store,
close to the truth at the first lead, scored by atmorep evaluate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from atmorep.data.physics_forecasts import CaseSpec
from atmorep.data.prepare import prepare
from atmorep.data.simulate import SimulationSpec, simulate
from atmorep.errors import DataError
from atmorep.evaluate.physics_baseline import ATTR, write_physics_forecasts
from atmorep.evaluate.scoring import score
from atmorep.prediction_store import open_prediction

SHORT = SimulationSpec(start="2000-01-01", days=2.0, output_interval_hours=6, spinup_days=1.0, chunk_days=1.0,
                       fields=("u", "v", "t", "sp"), levels=(0.2, 0.51, 0.835))
HOUR = np.timedelta64(1, "h")
STARTS = (np.datetime64("2000-01-01T06"), np.datetime64("2000-01-01T18"))


@pytest.mark.slow
@pytest.mark.sim
def test_jcm_forecasts_are_a_prediction_store_that_evaluate_scores(tmp_path):
    pytest.importorskip("jcm")
    raw = simulate(SHORT, tmp_path / "raw.zarr", progress=False)
    prepared = prepare([raw], tmp_path / "test.zarr", fields=["t", "sp"], levels=[0.51], box=(4, 48, 96))
    cases = CaseSpec(times=STARTS, lead_hours=24)
    out = write_physics_forecasts(raw, tmp_path / "jcm.zarr", cases, like=prepared, progress=False)
    ds = open_prediction(out)
    assert dict(ds.sizes) == {"time": 2, "prediction_timedelta": 4, "member": 1, "level": 1, "latitude": 48,
                              "longitude": 96}
    assert ds["t"].dims == ("time", "prediction_timedelta", "member", "level", "latitude", "longitude")
    assert ds["sp"].dims == ("time", "prediction_timedelta", "member", "latitude", "longitude")
    assert sorted(ds.data_vars) == ["sp", "t"] and ds["level"].values.tolist() == [0.51]
    np.testing.assert_array_equal(ds["time"].values, np.asarray(STARTS, "datetime64[ns]"))
    np.testing.assert_array_equal(ds["prediction_timedelta"].values / HOUR, [6, 12, 18, 24])
    assert ds.attrs["task"] == "forecast" and ds.attrs["time_step_hours"] == 6.0
    assert ds["level"].attrs["level_kind"] == "sigma"
    assert json.loads(ds.attrs[ATTR])["physics"][0] == ["surface_flux.cds", 0.003]
    truth = xr.open_zarr(prepared)
    for field, tolerance in (("t", 0.5), ("sp", 100.0)):
        first = ds[field].isel(prediction_timedelta=0, member=0)  # 6 h after each start
        expected = truth[field].sel(time=ds["time"].values + 6 * HOUR).values
        error = np.sqrt(np.mean((first.values - expected) ** 2))
        assert 0 < error < tolerance, (field, error)
    table = score(out, prepared, method="jcm").table
    assert {"jcm", "persistence"} <= set(table["method"])
    jcm, persistence = (table[(table["method"] == m) & (table["metric"] == "rmse") & (table["field"] == "t")]
                        for m in ("jcm", "persistence"))
    assert (jcm["value"].to_numpy() < persistence["value"].to_numpy()).all()  # the physics beats persistence
    with pytest.raises(DataError, match="jcm.zarr' already exists"):
        write_physics_forecasts(raw, out, cases, like=prepared, progress=False)
    with pytest.raises(DataError, match="store '.*test.zarr' has no field 'u'"):
        write_physics_forecasts(raw, tmp_path / "other.zarr", CaseSpec(times=STARTS, lead_hours=24,
                                                                      fields=("u",)), like=prepared)
