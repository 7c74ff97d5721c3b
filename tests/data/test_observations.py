"""Observations at sites: exact values without noise, the noise and gaps asked for, the errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from atmorep.cli import app
from atmorep.data.observations import OBSERVATIONS_ATTR, ObservationSpec, draw_sites, observe
from atmorep.errors import DataError

LATITUDE = np.linspace(-87.5, 87.5, 36)
LONGITUDE = np.arange(0.0, 360.0, 5.0)


@pytest.fixture(scope="module")
def nature(tmp_path_factory):
    """A gridded store with t on two sigma levels and a surface field, values known at every point."""
    path = tmp_path_factory.mktemp("nature") / "nature.zarr"
    times = np.arange("2000-01-01T00", "2000-01-09T00", np.timedelta64(1, "h"), dtype="datetime64[h]")
    rng = np.random.default_rng(7)
    t = rng.normal(270.0, 10.0, (times.size, 2, LATITUDE.size, LONGITUDE.size)).astype(np.float32)
    sp = rng.normal(1e5, 500.0, (times.size, LATITUDE.size, LONGITUDE.size)).astype(np.float32)
    xr.Dataset({"t": (("time", "level", "latitude", "longitude"), t, {"units": "K"}),
                "sp": (("time", "latitude", "longitude"), sp, {"units": "Pa"})},
               coords={"time": times.astype("datetime64[ns]"), "level": [0.51, 0.95],
                       "latitude": LATITUDE, "longitude": LONGITUDE}).to_zarr(path, consolidated=True)
    return path


def _open(path) -> xr.Dataset:
    return xr.open_zarr(path).load()


def test_without_noise_or_gaps_a_site_reports_the_grid_value(nature, tmp_path):
    spec = ObservationSpec(sites=50, fields=("t", "sp"), noise={"t": 0.0, "sp": 0.0}, missing=0.0)
    observed = _open(observe(nature, tmp_path / "obs.zarr", spec))
    truth = xr.open_zarr(nature).load()
    assert observed["t"].dims == ("time", "station") and observed.sizes["station"] == 50
    expected = truth["t"].sel(level=0.95).sel(latitude=observed["latitude"], longitude=observed["longitude"])
    np.testing.assert_array_equal(observed["t"].values, expected.transpose("time", "station").values)
    surface = truth["sp"].sel(latitude=observed["latitude"], longitude=observed["longitude"])
    np.testing.assert_array_equal(observed["sp"].values, surface.transpose("time", "station").values)
    pairs = set(zip(observed["latitude"].values, observed["longitude"].values))
    assert len(pairs) == 50  # distinct sites
    record = json.loads(observed.attrs[OBSERVATIONS_ATTR])
    assert record["level"] == 0.95 and record["sites"] == 50 and observed.attrs["source"] == str(nature)


def test_noise_and_gaps_have_the_asked_size(nature, tmp_path):
    spec = ObservationSpec(sites=400, fields=("t",), level=0.51, noise={"t": 2.0}, missing=0.3, seed=3)
    observed = _open(observe(nature, tmp_path / "obs.zarr", spec))
    truth = xr.open_zarr(nature)["t"].sel(level=0.51).load()
    exact = truth.sel(latitude=observed["latitude"], longitude=observed["longitude"])
    exact = exact.transpose("time", "station")
    error = (observed["t"] - exact).values
    gaps = np.isnan(error)
    n = gaps.size
    assert abs(gaps.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / n)  # binomial: within 4 standard errors
    assert abs(np.std(error[~gaps]) - 2.0) < 0.02 and abs(np.mean(error[~gaps])) < 0.02
    again = _open(observe(nature, tmp_path / "again.zarr", spec))
    np.testing.assert_array_equal(again["t"].values, observed["t"].values)  # the seed decides


def test_sites_are_uniform_over_the_sphere():
    latitude = np.linspace(-89.0, 89.0, 90)
    sites = draw_sites(latitude, np.arange(0.0, 360.0, 2.0), 4000, np.random.default_rng(0))
    sine = np.sin(np.deg2rad(latitude[sites[:, 0]]))
    assert abs(np.mean(np.abs(sine)) - 0.5) < 0.02  # uniform on the sphere: |sin(lat)| is uniform on [0, 1]
    assert len({tuple(s) for s in sites.tolist()}) == 4000


@pytest.mark.parametrize("spec, message", [
    (dict(sites=0), "sites must be a positive integer"),
    (dict(missing=1.0), r"missing must be a fraction in \[0, 1\)"),
    (dict(fields=("t", "t")), "fields must be distinct"),
    (dict(noise={"u": 1.0}), r"noise given for \['u'\], which are not observed"),
    (dict(fields=("tp",)), "no default noise for field 'tp'; give it, e.g. --noise tp=0.1"),
    (dict(noise={"t": -1.0}), "noise of 't' must be >= 0"),
])
def test_bad_specs_are_one_line_errors(spec, message):
    with pytest.raises(DataError, match=message):
        ObservationSpec(**spec)


@pytest.mark.parametrize("spec, message", [
    (ObservationSpec(fields=("u",)), r"no field u; it has \['sp', 't'\]"),
    (ObservationSpec(level=0.3), r"no level 0.3; it has \[0.51, 0.95\]"),
    (ObservationSpec(sites=10**6), "the grid has only 2592 points off the poles"),
])
def test_what_the_store_cannot_give_is_named(nature, tmp_path, spec, message):
    with pytest.raises(DataError, match=message):
        observe(nature, tmp_path / "obs.zarr", spec)
    assert not (tmp_path / "obs.zarr").exists()


def test_a_store_without_coordinates_is_refused(tmp_path):
    times = np.array(["2000-01-01", "2000-01-02"], "datetime64[ns]")
    xr.Dataset({"t": (("time", "x"), np.zeros((2, 3)))}, coords={"time": times}).to_zarr(tmp_path / "a.zarr")
    with pytest.raises(DataError, match="no coordinate 'latitude'"):
        observe(tmp_path / "a.zarr", tmp_path / "obs.zarr", ObservationSpec())


def test_command_line(nature, tmp_path):
    out = tmp_path / "obs.zarr"
    result = CliRunner().invoke(app, ["data", "observe", str(nature), str(out), "--sites", "20", "--fields",
                                      "t,sp", "--noise", "t=0.2", "--missing", "0.25"])
    assert result.exit_code == 0, result.output
    assert _open(out).sizes["station"] == 20
    again = CliRunner().invoke(app, ["data", "observe", str(nature), str(out)])
    assert again.exit_code != 0 and "already exists" in again.output and "Traceback" not in again.output
    bad = CliRunner().invoke(app, ["data", "observe", str(nature), str(tmp_path / "b"), "--noise", "t=x"])
    assert bad.exit_code != 0 and "--noise t=x: the standard deviation must be a number" in bad.output
