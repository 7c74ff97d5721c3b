"""The differentiable core: closed-form steady states, exact zero correction, gradients through k steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("dinosaur_torch")

from atmorep.errors import DataError  # noqa: E402
from atmorep.hybrid.core import CoreSpec, DynamicalCore, gaussian_truncation, grid_spec, sigma_boundaries  # noqa: E402
from atmorep.hybrid.correction import Correction, HybridModel, Normaliser  # noqa: E402
from atmorep.hybrid.state import StateConverter, channel_names  # noqa: E402

SIGMA = np.array([0.1, 0.3, 0.5, 0.7, 0.9])  # midpoints of five equal layers
GAS, OMEGA, RADIUS = 286.85714285714283, 7.292e-5, 6.37122e6


def _core(forcing: str = "none", interval: float = 2.0, truncation: int = 21,
          dtype: torch.dtype = torch.float64) -> DynamicalCore:
    spec = CoreSpec(truncation=truncation, time_step_minutes=60, interval_hours=interval, forcing=forcing)
    lat, lon = _grid(truncation)
    return DynamicalCore(SIGMA, np.zeros((lat.size, lon.size)), spec, dtype=dtype)


def _grid(truncation: int = 21) -> tuple[np.ndarray, np.ndarray]:
    spec = grid_spec(truncation)
    return np.rad2deg(spec.latitudes), np.rad2deg(spec.longitudes)


def _fields(u: np.ndarray, t: np.ndarray, lnsp: np.ndarray, v: np.ndarray | None = None) -> torch.Tensor:
    """Physical fields [1, 3L + 1, H, W] from [L, H, W] winds and temperature and [H, W] ln(sp)."""
    v = np.zeros_like(u) if v is None else v
    return torch.as_tensor(np.concatenate([u, v, t, lnsp[None]])[None], dtype=torch.float64)


def _solid_body(speed: float, temperature: float = 288.0) -> torch.Tensor:
    """``u = U cos(lat)`` over an isothermal atmosphere in balance: the analytic steady state."""
    lat, lon = np.meshgrid(np.deg2rad(_grid()[0]), np.deg2rad(_grid()[1]), indexing="ij")
    u = np.broadcast_to(speed * np.cos(lat), (SIGMA.size, *lat.shape))
    t = np.full_like(u, temperature)
    lnsp = np.log(1e5) - (2 * OMEGA * RADIUS * speed + speed**2) / (2 * GAS * temperature) * np.sin(lat) ** 2
    return _fields(u, t, lnsp)


def test_a_resting_isothermal_atmosphere_stays_at_rest():
    core = _core()
    converter = StateConverter(core)
    rest = _solid_body(0.0)
    after = converter.to_fields(core(converter.to_state(rest)))
    np.testing.assert_allclose(after.numpy(), rest.numpy(), atol=1e-7)  # m/s, K: round-off only


def test_solid_body_rotation_in_balance_is_steady():
    core = _core(interval=6.0)
    converter = StateConverter(core)
    start = _solid_body(20.0)
    after = converter.to_fields(core(converter.to_state(start)))
    layers = SIGMA.size
    jet = float(start[:, :layers].abs().max())  # 20 m/s times cos of the grid's latitude nearest the equator
    assert float(after[:, :layers].abs().max()) == pytest.approx(jet, rel=1e-5)  # the jet is still there
    np.testing.assert_allclose(after[:, :2 * layers].numpy(), start[:, :2 * layers].numpy(), atol=2e-4)
    np.testing.assert_allclose(after[:, 2 * layers:].numpy(), start[:, 2 * layers:].numpy(), atol=2e-5)
    unbalanced = _solid_body(20.0)
    unbalanced[:, -1] = np.log(1e5)  # the same jet without its pressure gradient accelerates
    moved = converter.to_fields(core(converter.to_state(unbalanced)))
    assert float((moved[:, layers:2 * layers]).abs().max()) > 0.5  # a meridional wind develops


def test_held_suarez_relaxes_temperature_towards_its_equilibrium():
    core = _core(forcing="held-suarez", interval=24.0)
    converter = StateConverter(core)
    start = _solid_body(0.0, temperature=288.0)
    after = converter.to_fields(core(converter.to_state(start)))
    t = after[0, 2 * SIGMA.size:3 * SIGMA.size]
    layers = SIGMA.size
    assert float(t[:, 0].mean()) < 287.5  # the poles cool
    assert 285.0 < float(t[0].mean()) < 287.0  # sigma 0.1 cools towards 200 K at 1/40 per day: ~2 K a day
    equator = t.shape[1] // 2
    assert float(t[layers - 1, equator].mean()) > 289.0  # the tropical boundary layer warms towards 305 K
    assert float(t[layers - 1, 0].mean()) < 287.5  # the polar one cools towards 247 K, at 1/40 per day


def test_the_converter_round_trips_fields_of_the_cores_modes():
    core = _core()
    converter = StateConverter(core)
    fields = _solid_body(15.0)
    lat = np.deg2rad(_grid()[0])[:, None]
    fields[0, 2 * SIGMA.size] += torch.as_tensor(5 * np.sin(lat) ** 2 * np.ones((1, 64)))  # smooth modes
    np.testing.assert_allclose(converter.to_fields(converter.to_state(fields)).numpy(), fields.numpy(),
                               atol=1e-8)


def _hybrid(core: DynamicalCore, width: int = 4, depth: int = 1, seed: int = 0) -> HybridModel:
    torch.manual_seed(seed)
    channels = 3 * SIGMA.size + 1
    ones = torch.ones(channels, dtype=torch.float64)
    mean = torch.cat([torch.zeros(2 * SIGMA.size), torch.full((SIGMA.size,), 250.0), torch.tensor([11.5])])
    normaliser = Normaliser(mean=mean.double(), std=ones * 10, increment=ones, error=ones * 0.1)
    lat, lon = _grid()
    return HybridModel(core, normaliser, lat, lon, np.zeros((lat.size, lon.size)),
                       Correction(channels, width, depth).double())


def test_an_untrained_correction_reproduces_the_raw_core_exactly():
    core = _core(forcing="held-suarez")
    model = _hybrid(core)
    fields = _solid_body(10.0)
    hours = torch.zeros(1, dtype=torch.float64)
    raw = HybridModel(core, model.normaliser, *_grid(), np.zeros((32, 64)), None)
    assert torch.equal(model(fields, hours), raw(fields, hours))
    assert torch.equal(model(fields, hours), model.core_step(fields))
    assert torch.equal(model.without_correction()(fields, hours), raw(fields, hours))


def test_gradients_through_k_steps_match_finite_differences():
    core = _core(forcing="held-suarez", interval=1.0)
    model = _hybrid(core, seed=1)
    torch.nn.init.normal_(model.correction.out.weight, std=0.05)  # a live correction
    fields = _solid_body(10.0)
    hours = torch.zeros(1, dtype=torch.float64)

    def loss() -> torch.Tensor:
        x = fields
        for _ in range(3):  # k = 3 hybrid steps, gradients through the core between them
            x = model(x, hours)
        change = x - fields  # small numbers, so that the finite difference is not lost in round-off
        return change[:, 2 * SIGMA.size:3 * SIGMA.size].pow(2).mean() + change[:, :SIGMA.size].pow(2).mean()

    parameter = model.correction.out.weight
    model.zero_grad()
    loss().backward()
    analytic = parameter.grad[3, 0, 0, 0].item()
    epsilon = 1e-3  # central differences: truncation error ~1e-8 relative here, round-off grows below
    with torch.no_grad():
        parameter[3, 0, 0, 0] += epsilon
        plus = loss().item()
        parameter[3, 0, 0, 0] -= 2 * epsilon
        minus = loss().item()
        parameter[3, 0, 0, 0] += epsilon
    numeric = (plus - minus) / (2 * epsilon)
    assert abs(analytic) > 1e-6
    assert analytic == pytest.approx(numeric, rel=1e-6)


def test_the_core_refuses_what_it_cannot_integrate():
    with pytest.raises(DataError, match=r"sigma levels \[0.1, 0.2, 0.9\] are not the midpoints of layers"):
        sigma_boundaries([0.1, 0.2, 0.9])
    with pytest.raises(DataError, match="must ascend within"):
        sigma_boundaries([0.5, 0.3])
    with pytest.raises(ValueError, match="whole number of time steps"):
        CoreSpec(time_step_minutes=50, interval_hours=6)
    with pytest.raises(DataError, match=r"not a Gaussian grid .*regrid the truth"):
        gaussian_truncation(np.linspace(-87.5, 87.5, 36), np.arange(0, 360, 5.0))
    assert gaussian_truncation(*_grid(31)) == 31 and gaussian_truncation(*_grid(21)) == 21
    with pytest.raises(DataError, match=r"orography of shape \(3, 4\) must be finite on the core's grid"):
        DynamicalCore(SIGMA, np.zeros((3, 4)), CoreSpec())
    assert channel_names(np.array([0.5]))[-1] == "lnsp"
