"""The embedded default corpus: spec validation, and short real SPEEDY runs (layout, physics, restarts).

All simulations share one model origin (start, spin-up, output interval), so the model is compiled
once per session and every further run costs a few seconds.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import xarray as xr

from atmorep.data import simulate as simulation
from atmorep.data.simulate import SIGMA_LEVELS, SimulationSpec, simulate
from atmorep.errors import DataError
from atmorep.fields import FIELD_SPECS

SHORT = SimulationSpec(start="2000-01-01", days=2.0, output_interval_hours=6, spinup_days=1.0, chunk_days=1.0)
EARTH_RADIUS = 6.371e6  # m, jcm's
GAS_CONSTANT = 287.04  # J kg-1 K-1, dry air


def _open(path) -> xr.Dataset:
    return xr.open_zarr(path, consolidated=True).load()


def _area_weights(ds: xr.Dataset) -> np.ndarray:
    """cos(latitude) weights, shape [H, W]."""
    return np.cos(np.deg2rad(ds.latitude.values))[:, None] * np.ones(ds.sizes["longitude"])


# ---------------------------------------------------------------- the spec (no simulation)

@pytest.mark.parametrize("changes, message", [
    ({"levels": (0.95, 0.5)}, "0.5 is not a model level"),
    ({"levels": (0.95, 0.95)}, "distinct sigma levels"),
    ({"days": 1.1}, "days: 1.1 days is not a positive whole number"),
    ({"chunk_days": 0}, "chunk_days"),
    ({"spinup_days": -1}, "spinup_days"),
    ({"output_interval_hours": 0}, "output_interval_hours"),
    ({"fields": ("t", "w")}, "fields"),
    ({"resolution": "T999"}, "resolution"),
    ({"start": "yesterday"}, "not an ISO date"),
    ({"perturbation": -1e-3}, "perturbation"),
    ({"seed": 1.5}, "seed"),
])
def test_spec_rejects_bad_values(changes, message):
    with pytest.raises(DataError, match=message):
        dataclasses.replace(SHORT, **changes)


def test_spec_round_trips_through_json_and_counts_times():
    spec = dataclasses.replace(SHORT, levels=(0.95, 0.025), fields=("t", "sp"), seed=np.int64(3))
    assert SimulationSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.frames == 8 and spec.level_indices == [0, 7]
    expected = np.array(["2000-01-01T06", "2000-01-01T12"], "datetime64[ns]")
    np.testing.assert_array_equal(spec.times(1, 2), expected)
    assert spec.origin() == np.datetime64("1999-12-30T18:00:00")  # one day of spin-up, one interval before
    with pytest.raises(DataError, match="unknown keys"):
        SimulationSpec.from_dict({**spec.to_dict(), "colour": "blue"})


def test_spec_differences_ignore_run_control_and_order():
    reordered = dataclasses.replace(SHORT, days=5.0, chunk_days=0.5, levels=tuple(reversed(SHORT.levels)))
    assert SHORT.differences(reordered) == []
    assert SHORT.differences(dataclasses.replace(SHORT, seed=3)) == ["seed=0 (requested 3)"]


def test_foreign_directory_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a store")
    with pytest.raises(DataError, match="is not a simulation store"):
        simulate(SHORT, tmp_path, progress=False)


# ---------------------------------------------------------------- short real runs

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A 2-day, 6-hourly run after 1 day of spin-up, in 1-day chunks (path of the store)."""
    pytest.importorskip("jcm")
    path = tmp_path_factory.mktemp("sim") / "reference.zarr"
    return simulate(SHORT, path, progress=False)


@pytest.mark.slow
@pytest.mark.sim
def test_store_follows_the_internal_convention(reference):
    ds = _open(reference)
    assert set(ds.data_vars) == set(SHORT.fields)
    assert ds.sizes == {"time": 8, "level": 8, "latitude": 48, "longitude": 96}
    np.testing.assert_array_equal(ds.time.values, SHORT.times(0, 8))
    assert ds.level.values.tolist() == sorted(SIGMA_LEVELS) and ds.level.dtype == np.float64
    assert ds.level.attrs == {"level_kind": "sigma", "units": "1"}
    lat, lon = ds.latitude.values, ds.longitude.values
    assert lat.dtype == lon.dtype == np.float64 and np.all(np.diff(lat) > 0) and -90 < lat[0] < -85
    assert lon[0] == 0.0 and lon[-1] < 360.0 and np.allclose(np.diff(lon), 3.75)
    assert ds.latitude.attrs["units"] == "degrees_north" and ds.longitude.attrs["units"] == "degrees_east"
    for name, var in ds.data_vars.items():
        spec = FIELD_SPECS[name]
        expected_dims = ("time", "latitude", "longitude") if spec.surface else ("time", "level", "latitude",
                                                                                "longitude")
        assert var.dims == expected_dims and var.dtype == np.float32 and np.isfinite(var.values).all()
        assert {key: var.attrs[key] for key in ("units", "long_name", "standard_name")} == {
            "units": spec.units, "long_name": spec.long_name, "standard_name": spec.standard_name}
    assert ds.attrs["complete"] is True
    assert SimulationSpec.from_dict(json.loads(ds.attrs["atmorep_simulation"])) == SHORT


@pytest.mark.slow
@pytest.mark.sim
def test_values_are_physically_plausible(reference):
    ds = _open(reference)
    assert 150 < ds.t.min() and ds.t.max() < 330
    assert np.abs(ds.u).max() < 150 and np.abs(ds.v).max() < 150
    assert ds.q.min() >= 0 and ds.q.max() < 0.05 and ds.q.max() > 5e-3  # kg/kg, not g/kg
    assert 40000 < ds.sp.min() and ds.sp.max() < 110000  # Pa
    assert (ds.z.diff("level") < 0).all()  # geopotential decreases downwards (sigma ascending)


@pytest.mark.slow
@pytest.mark.sim
def test_geopotential_and_surface_pressure_obey_hydrostatics_and_mass_conservation(reference):
    ds = _open(reference)
    weights = _area_weights(ds)  # [H, W]
    # hypsometric equation between sigma 0.95 and 0.51: dz = R T_mean ln(0.95 / 0.51), z in m2 s-2
    thickness = ds.z.sel(level=0.51).values - ds.z.sel(level=0.95).values  # [T, H, W]
    layer_temperature = ds.t.sel(level=[0.95, 0.835, 0.685, 0.51]).values.mean(1)  # [T, H, W]
    expected = GAS_CONSTANT * layer_temperature * np.log(0.95 / 0.51)
    assert (thickness * weights).sum() / (expected * weights).sum() == pytest.approx(1.0, abs=0.02)
    mean_pressure = (ds.sp.values * weights).sum((1, 2)) / weights.sum()  # [T] Pa
    assert 95000 < mean_pressure[0] < 103000
    assert np.abs(mean_pressure / mean_pressure[0] - 1).max() < 1e-3  # the atmosphere keeps its mass


@pytest.mark.slow
@pytest.mark.sim
def test_vorticity_and_divergence_are_those_of_the_winds(reference):
    import jax.numpy as jnp
    from dinosaur.spherical_harmonic import vor_div_to_uv_nodal
    from jcm.physics.speedy.speedy_coords import get_speedy_coords

    ds = _open(reference).isel(time=-1)
    grid = get_speedy_coords(layers=8, spectral_truncation=31).horizontal
    as_model = {name: jnp.asarray(ds[name].values.transpose(0, 2, 1))  # [L, H, W] -> [L, W, H]
                for name in ("u", "v", "vo", "d")}
    # exact: the stored vo, d give the stored u, v through the model's spectral relation
    u, v = vor_div_to_uv_nodal(grid, grid.to_modal(as_model["vo"]), grid.to_modal(as_model["d"]))
    scale = float(np.abs(ds.u).max())
    assert float(jnp.abs(u - as_model["u"]).max()) < 1e-5 * scale
    assert float(jnp.abs(v - as_model["v"]).max()) < 1e-5 * scale
    # independent: centred finite differences of u, v on the sphere, away from the poles
    lat, lon = np.deg2rad(ds.latitude.values), np.deg2rad(ds.longitude.values)
    cos = np.cos(lat)[:, None]
    step = 2 * (lon[1] - lon[0])
    d_dlon = {name: (np.roll(ds[name].values, -1, -1) - np.roll(ds[name].values, 1, -1)) / step
              for name in ("u", "v")}
    d_dlat = {name: np.gradient(ds[name].values * cos, lat, axis=-2) for name in ("u", "v")}
    estimates = {"vo": (d_dlon["v"] - d_dlat["u"]) / (EARTH_RADIUS * cos),
                 "d": (d_dlon["u"] + d_dlat["v"]) / (EARTH_RADIUS * cos)}
    band = np.abs(ds.latitude.values) < 70
    for name, least in (("vo", 0.95), ("d", 0.85)):
        estimate, stored = estimates[name][:, band].ravel(), ds[name].values[:, band].ravel()
        assert np.corrcoef(estimate, stored)[0, 1] > least, name
        assert np.std(stored) == pytest.approx(np.std(estimate), rel=0.3), name


@pytest.mark.slow
@pytest.mark.sim
def test_same_spec_gives_the_same_bits_and_subsets_select(reference, tmp_path):
    subset = dataclasses.replace(SHORT, fields=("t", "vo", "sp"), levels=(0.51, 0.95))
    ds, full = _open(simulate(subset, tmp_path / "subset.zarr", progress=False)), _open(reference)
    assert ds.level.values.tolist() == [0.51, 0.95]
    for name in subset.fields:
        xr.testing.assert_identical(ds[name], full[name].sel(level=[0.51, 0.95]) if "level" in ds[name].dims
                                    else full[name])


@pytest.mark.slow
@pytest.mark.sim
def test_other_seed_gives_a_slightly_perturbed_trajectory(reference, tmp_path):
    other = dataclasses.replace(SHORT, seed=1, fields=("t",))
    t, reference_t = _open(simulate(other, tmp_path / "seed1.zarr", progress=False)).t, _open(reference).t
    first = float(np.sqrt(((t - reference_t).isel(time=0) ** 2).mean()))
    assert 0.01 < first < 1.0  # K: 1e-3 of ~270 K white noise, smoothed by the truncation and one interval


@pytest.mark.slow
@pytest.mark.sim
def test_longer_days_extend_a_store_to_the_same_bits(reference, tmp_path):
    path = tmp_path / "extended.zarr"
    simulate(dataclasses.replace(SHORT, days=1.0), path, progress=False)
    assert _open(path).sizes["time"] == 4 and _open(path).attrs["complete"] is True
    xr.testing.assert_identical(_open(simulate(SHORT, path, progress=False)), _open(reference))
    with pytest.raises(DataError, match="more than the 4 requested"):
        simulate(dataclasses.replace(SHORT, days=1.0), path, progress=False)


class _Killed(Exception):
    pass


@pytest.mark.slow
@pytest.mark.sim
def test_interrupted_run_resumes_to_the_same_bits(reference, tmp_path, monkeypatch):
    path, save, calls = tmp_path / "interrupted.zarr", simulation._Integration.save, []

    def save_then_die(self, where):  # dies after writing the second chunk, before saving its state
        calls.append(where)
        if len(calls) == 2:
            raise _Killed
        save(self, where)

    monkeypatch.setattr(simulation._Integration, "save", save_then_die)
    with pytest.raises(_Killed):
        simulate(SHORT, path, progress=False)
    monkeypatch.undo()
    half = xr.open_zarr(path, consolidated=True)
    assert half.sizes["time"] == 8 and half.attrs["complete"] is False
    xr.testing.assert_identical(_open(simulate(SHORT, path, progress=False)), _open(reference))


@pytest.mark.slow
@pytest.mark.sim
def test_complete_store_is_left_alone_and_other_specs_refused(reference, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a complete store must not start the model")

    monkeypatch.setattr(simulation, "_Integration", no_model)
    assert simulate(SHORT, reference, progress=False) == reference
    with pytest.raises(DataError, match=r"another spec: seed=0 \(requested 7\)"):
        simulate(dataclasses.replace(SHORT, seed=7), reference, progress=False)


@pytest.mark.slow
@pytest.mark.sim
def test_sst_offset_warms_the_air_above_the_ocean_from_below(reference, tmp_path):
    warmer = dataclasses.replace(SHORT, sst_offset=4.0, fields=("t",))
    t, reference_t = _open(simulate(warmer, tmp_path / "warm.zarr", progress=False)).t, _open(reference).t
    weights = _area_weights(reference_t)
    shift = ((t - reference_t).isel(time=-1) * weights).mean(("latitude", "longitude")) / weights.mean()
    bottom, top = float(shift.sel(level=0.95)), float(shift.sel(level=0.025))
    assert 0.3 < bottom < 4.0  # K after 3 days: the lowest level follows the ocean below it
    assert abs(top) < bottom / 3  # the stratosphere has not felt it yet
    assert json.loads(xr.open_zarr(tmp_path / "warm.zarr").attrs["atmorep_simulation"])["sst_offset"] == 4.0


def test_sst_offset_is_bounded():
    with pytest.raises(DataError, match="sst_offset: expected kelvin within"):
        dataclasses.replace(SHORT, sst_offset=25.0)


@pytest.mark.slow
@pytest.mark.sim
def test_a_t63_nature_run_coarse_grains_onto_the_t31_grid(reference, tmp_path):
    """T63 runs on jcm's own T63 boundary data; averaged onto T31 it lands on the default corpus's grid."""
    from atmorep.data.regrid import coarse_grain, gaussian_grid

    fine_spec = dataclasses.replace(SHORT, resolution="T63", days=1.0, output_interval_hours=12,
                                    spinup_days=0.5, fields=("t", "sp", "t2m"))
    fine = _open(simulate(fine_spec, tmp_path / "t63.zarr", progress=False))
    assert fine.sizes == {"time": 2, "level": 8, "latitude": 96, "longitude": 192}
    assert fine.t2m.dims == ("time", "latitude", "longitude") and fine.t2m.attrs["units"] == "K"
    # the near-surface diagnostic sits close to the lowest model level (sigma 0.95, about 500 m up)
    offset = float((fine.t2m - fine.t.sel(level=0.95)).mean())
    assert 0.0 < offset < 6.0 and 180 < fine.t2m.min() and fine.t2m.max() < 330
    np.testing.assert_allclose(fine.latitude.values, gaussian_grid("T63").latitude.values, atol=1e-9)
    assert 150 < fine.t.min() and fine.t.max() < 330 and 40000 < fine.sp.min() and fine.sp.max() < 110000
    coarse = coarse_grain(fine, gaussian_grid("T31"))
    t31 = _open(reference)
    np.testing.assert_allclose(coarse.latitude.values, t31.latitude.values, atol=1e-9)
    np.testing.assert_allclose(coarse.longitude.values, t31.longitude.values, atol=1e-9)
    # the finer orography reaches higher: the lowest surface pressure of T63 is below its T31 average
    assert float(fine.sp.min()) < float(coarse.sp.min())
