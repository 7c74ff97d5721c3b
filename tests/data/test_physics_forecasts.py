"""jcm forecasts branched off a re-run truth at reference times: exact with the truth's physics, checked
requests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from atmorep.data.physics_forecasts import CaseSpec, forecast_cases, plan
from atmorep.data.simulate import COMPLETE_ATTR, SPEC_ATTR, SimulationSpec, simulate
from atmorep.errors import DataError

SHORT = SimulationSpec(start="2000-01-01", days=2.0, output_interval_hours=6, spinup_days=1.0, chunk_days=1.0,
                       fields=("u", "v", "t", "sp"), levels=(0.2, 0.51, 0.835))
HOURS = np.timedelta64(1, "h")
STARTS = tuple(np.datetime64("2000-01-01T06") + np.arange(4) * 12 * HOURS)  # output times 1, 3, 5, 7


@pytest.fixture
def recorded(tmp_path):
    """A store that records SHORT's spec, without data: enough to plan forecasts of it."""
    group = zarr.open_group(tmp_path / "truth.zarr", mode="w")
    group.attrs.update({SPEC_ATTR: json.dumps(SHORT.to_dict()), COMPLETE_ATTR: True})
    return tmp_path / "truth.zarr"


@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    pytest.importorskip("jcm")
    return simulate(SHORT, tmp_path_factory.mktemp("truth") / "truth.zarr", progress=False)


def test_a_plan_resolves_leads_fields_and_levels(recorded):
    resolved = plan(recorded, CaseSpec(times=STARTS[:2], lead_hours=24, fields=("t", "sp"), levels=(0.51,)))
    np.testing.assert_array_equal(resolved.indices, [1, 3])
    np.testing.assert_array_equal(resolved.leads / np.timedelta64(1, "h"), [6, 12, 18, 24])
    assert resolved.fields == ("t", "sp") and resolved.level_values == (0.51,)
    assert plan(recorded, CaseSpec(times=STARTS[:1], lead_hours=24, step_hours=12)).steps == 2


@pytest.mark.parametrize(("cases", "message"), [
    (dict(times=(np.datetime64("2000-01-01T03"),)),
     "forecast time 2000-01-01T03:00:00 is not an output time"),
    (dict(times=(np.datetime64("2000-01-03T00"),)),
     "not an output time of the truth \\(2000-01-01T00:00:00 .. 2000-01-02T18:00:00 every 6 h\\)"),
    (dict(step_hours=4), "step_hours: 4 h is not a multiple of the truth's output interval \\(6 h\\)"),
    (dict(lead_hours=15), "lead_hours: 15 h is not a multiple of the lead step \\(6 h\\)"),
    (dict(fields=("t", "q")), "forecast fields: \\['q'\\] are not distinct fields of the truth"),
    (dict(levels=(0.95,)), "forecast levels: \\[0.95\\] are not levels of the truth"),
])
def test_requests_that_do_not_fit_the_truth_are_refused(recorded, cases, message):
    with pytest.raises(DataError, match=message):
        plan(recorded, CaseSpec(**{"times": STARTS, "lead_hours": 12, **cases}))


def test_a_case_spec_is_checked():
    with pytest.raises(DataError, match="strictly increasing reference times"):
        CaseSpec(times=STARTS[::-1], lead_hours=12)
    with pytest.raises(DataError, match="lead_hours: expected a positive whole number of hours, got 0"):
        CaseSpec(times=STARTS, lead_hours=0)
    with pytest.raises(DataError, match="'convection.nothing' is not one of jcm's SPEEDY parameters"):
        CaseSpec(times=STARTS, lead_hours=12, physics=(("convection.nothing", 1.0),))
    with pytest.raises(DataError, match="not a store of 'atmorep data simulate'"):
        plan(Path("/nonexistent.zarr"), CaseSpec(times=STARTS, lead_hours=12))


@pytest.mark.slow
@pytest.mark.sim
def test_forecasts_with_the_truths_physics_are_the_truth_and_others_drift_from_it(truth):
    reference = xr.open_zarr(truth, consolidated=True).load()
    same = CaseSpec(times=STARTS, lead_hours=12, physics=(("convection.trcnv", 6.0),))  # SPEEDY's default
    cases = list(forecast_cases(truth, same, progress=False))
    assert [time for time, _ in cases] == list(STARTS)
    for time, forecast in cases:
        assert dict(forecast.sizes) == {"prediction_timedelta": 2, "level": 3, "latitude": 48,
                                        "longitude": 96}
        valid = time + forecast["prediction_timedelta"].values
        inside = valid <= reference["time"].values[-1]  # the last case runs past the truth's period
        for name in ("u", "v", "t", "sp"):
            expected = reference[name].sel(time=valid[inside]).values
            np.testing.assert_array_equal(forecast[name].values[inside], expected)
    assert not inside.all()  # the last case's 12 h lead lies past the end of the truth
    other = CaseSpec(times=STARTS[:2], lead_hours=12)  # stronger drag, faster convection
    for time, forecast in forecast_cases(truth, other, progress=False):
        valid = time + forecast["prediction_timedelta"].values
        error = np.sqrt(((forecast["t"] - reference["t"].sel(time=valid).values) ** 2).mean(
            ("level", "latitude", "longitude"))).values  # [P] K
        assert 0 < error[0] < 0.5 and error[1] > error[0], error  # close to the truth at 6 h, then drifting
