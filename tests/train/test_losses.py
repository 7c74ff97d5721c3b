"""Tests of the ensemble losses against hand-made cases, closed forms and reference libraries."""

from __future__ import annotations

import math

import numpy as np
import properscoring as ps
import pytest
import scoringrules as sr
import torch

from atmorep.config import ConfigError
from atmorep.errors import DataError
from atmorep.train import losses
from atmorep.train.losses import (
    LOSSES,
    SIGMA_EPS,
    SPREAD_PENALTY,
    FieldLoss,
    combine_losses,
    crps_ensemble,
    crps_fair,
    crps_gaussian,
    ensemble_mean_spread,
    get_loss,
    mse_mean,
    mse_member,
    stats,
)

SQRT_PI = math.sqrt(math.pi)


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _random(m: int, e: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    members = torch.randn(m, e, d, generator=g, dtype=torch.float64) * 1.3 + 0.2
    target = torch.randn(m, d, generator=g, dtype=torch.float64)
    weights = torch.rand(m, generator=g, dtype=torch.float64) + 0.1
    return members, target, weights


def _normal_crps(y: float, mu: float, sigma: float) -> float:
    """Closed-form Gaussian CRPS written with math only (independent of the module)."""
    z = (y - mu) / sigma
    cdf = 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
    pdf = math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return sigma * (z * (2.0 * cdf - 1.0) + 2.0 * pdf - 1.0 / SQRT_PI)


def _pairwise_crps(members: torch.Tensor, target: torch.Tensor, fair: bool) -> torch.Tensor:
    """The O(E^2) kernel form, ``[M, D]``."""
    e = members.shape[1]
    skill = (members - target[:, None]).abs().mean(1)
    pairs = (members[:, :, None] - members[:, None, :]).abs().sum((1, 2))  # [M, D]
    return skill - pairs / (2 * e * (e - 1) if fair else 2 * e * e)


# ---------------------------------------------------------------- hand-made cases


def test_mse_by_hand():
    members = _t([[[1.0], [3.0]]])  # M=1, E=2, D=1
    target = _t([[0.0]])
    assert mse_mean(members, target).item() == pytest.approx(4.0)  # mean 2
    assert mse_member(members, target).item() == pytest.approx(5.0)  # (1 + 9) / 2


def test_mse_member_is_mse_mean_plus_biased_variance():
    members, target, _ = _random(6, 5, 3)
    variance = members.var(1, correction=0).mean()
    assert mse_member(members, target).item() == pytest.approx((mse_mean(members, target) + variance).item())


def test_crps_fair_two_members_by_hand():
    members = _t([[[0.0], [2.0]]])
    # y = 3: mean |x - y| = (3 + 1) / 2 = 2; sum_{i,j} |x_i - x_j| = 4
    assert crps_fair(members, _t([[3.0]])).item() == pytest.approx(2.0 - 4.0 / (2 * 2 * 1))
    assert crps_ensemble(members, _t([[3.0]])).item() == pytest.approx(2.0 - 4.0 / (2 * 4))
    # y between the members: (0.5 + 1.5) / 2 - 1 = 0
    assert crps_fair(members, _t([[0.5]])).item() == pytest.approx(0.0, abs=1e-15)


def test_crps_single_member_is_absolute_error():
    members = _t([[[1.0, -2.0]], [[0.5, 4.0]]])  # M=2, E=1, D=2
    target = _t([[0.0, 0.0], [1.0, 1.0]])
    expected = (1.0 + 2.0 + 0.5 + 3.0) / 4
    assert crps_fair(members, target).item() == pytest.approx(expected)
    assert crps_ensemble(members, target).item() == pytest.approx(expected)


@pytest.mark.parametrize("e", [1, 2, 3, 7, 16])
def test_crps_sorted_form_matches_pairwise_form(e):
    members, target, _ = _random(9, e, 4, seed=e)
    assert crps_ensemble(members, target).item() == pytest.approx(
        _pairwise_crps(members, target, fair=False).mean().item(), rel=1e-12)
    if e > 1:
        assert crps_fair(members, target).item() == pytest.approx(
            _pairwise_crps(members, target, fair=True).mean().item(), rel=1e-12)


def test_crps_gaussian_at_the_mean():
    a = 0.7
    members = _t([[[2.0 - a], [2.0 + a]]])  # mean 2, unbiased std a * sqrt(2)
    sigma = math.sqrt(2 * a * a + SIGMA_EPS**2)
    expected = sigma * (math.sqrt(2.0 / math.pi) - 1.0 / SQRT_PI)
    assert crps_gaussian(members, _t([[2.0]])).item() == pytest.approx(expected, rel=1e-12)


def test_crps_normal_known_values():
    mu, sigma = _t([0.5, 0.5, -1.0]), _t([2.0, 2.0, 1e-3])
    y = _t([2.5, 0.5, 3.0])  # z = 1, z = 0, z = 4000 (CRPS -> |y - mu|)
    phi1, cdf1 = math.exp(-0.5) / math.sqrt(2 * math.pi), 0.8413447460685429
    expected = [2.0 * (2 * cdf1 - 1 + 2 * phi1 - 1 / SQRT_PI),
                2.0 * (2 / math.sqrt(2 * math.pi) - 1 / SQRT_PI), 4.0 - 1e-3 / SQRT_PI]
    assert losses.crps_normal(mu, sigma, y).tolist() == pytest.approx(expected, rel=1e-12)


def test_stats_loss_by_hand():
    members = _t([[[1.0, -1.0], [3.0, 1.0]]])  # mean (2, 0), unbiased std sqrt(2) for both values
    sigma = math.sqrt(2.0 + SIGMA_EPS**2)
    # y = mu: only the spread penalty remains
    assert stats(members, _t([[2.0, 0.0]])).item() == pytest.approx(SPREAD_PENALTY * sigma, rel=1e-12)
    # y - mu = sigma in the first value: (1 - exp(-1/2))^2 / 2 added
    expected = (1 - math.exp(-0.5)) ** 2 / 2 + SPREAD_PENALTY * sigma
    assert stats(members, _t([[2.0 + sigma, 0.0]])).item() == pytest.approx(expected, rel=1e-12)


def test_ensemble_mean_spread():
    members = _t([[[1.0], [2.0], [6.0]]])
    mean, std = ensemble_mean_spread(members)
    assert mean.item() == pytest.approx(3.0)
    assert std.item() == pytest.approx(math.sqrt((4 + 1 + 9) / 2))  # divisor E - 1
    mean, std = ensemble_mean_spread(members[:, :1])
    assert (mean.item(), std.item()) == (1.0, 0.0)


# ---------------------------------------------------------------- reference libraries


@pytest.mark.parametrize("e", [2, 5, 16])
def test_ensemble_crps_matches_scoringrules_and_properscoring(e):
    members, target, weights = _random(11, e, 3, seed=10 + e)
    fct, obs = members.numpy(), target.numpy()  # fct [M, E, D], obs [M, D]
    fair = sr.crps_ensemble(obs, fct, m_axis=1, estimator="fair", backend="numpy")
    pwm = sr.crps_ensemble(obs, fct, m_axis=1, estimator="pwm", backend="numpy")
    nrg = sr.crps_ensemble(obs, fct, m_axis=1, estimator="nrg", backend="numpy")
    reference = ps.crps_ensemble(obs, fct, axis=1)
    np.testing.assert_allclose(pwm, fair, rtol=1e-10, atol=1e-12)  # E=2: 0 when y lies between
    np.testing.assert_allclose(reference, nrg, rtol=1e-10, atol=1e-12)
    w = weights.numpy()[:, None]
    for function, expected in ((crps_fair, fair), (crps_ensemble, nrg)):
        assert function(members, target).item() == pytest.approx(expected.mean(), rel=1e-10)
        weighted = (w * expected).sum() / (w.sum() * expected.shape[1])
        assert function(members, target, weights).item() == pytest.approx(weighted, rel=1e-10)


def test_crps_gaussian_matches_scoringrules_and_properscoring():
    members, target, weights = _random(13, 6, 4, seed=3)
    mu = members.mean(1).numpy()
    sigma = np.sqrt(members.var(1, correction=1).numpy() + SIGMA_EPS**2)
    expected = sr.crps_normal(target.numpy(), mu, sigma, backend="numpy")
    np.testing.assert_allclose(ps.crps_gaussian(target.numpy(), mu, sigma), expected, rtol=1e-10)
    assert crps_gaussian(members, target).item() == pytest.approx(expected.mean(), rel=1e-10)
    w = weights.numpy()[:, None]
    weighted = (w * expected).sum() / (w.sum() * expected.shape[1])
    assert crps_gaussian(members, target, weights).item() == pytest.approx(weighted, rel=1e-10)


# ---------------------------------------------------------------- statistical properties


def test_fair_crps_is_unbiased_and_plain_crps_is_biased_high():
    """Ensembles of E=4 drawn from F = N(0.3, 1.5^2), five fixed observations y.

    E over ensembles of the fair CRPS equals CRPS(F, y) for every y; the plain ensemble CRPS is
    higher by E|X - X'| / (2E) = 2 sigma / sqrt(pi) / (2E). Tolerance: 5 standard errors of the
    sample mean (estimated from the 40000 draws; about 0.003 here).
    """
    e, draws, mu, sigma = 4, 40_000, 0.3, 1.5
    y = torch.tensor([-2.0, -0.5, 0.3, 1.0, 3.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(1234)
    members = mu + sigma * torch.randn(draws, e, y.numel(), generator=g, dtype=torch.float64)
    target = y.expand(draws, -1)
    fair = _pairwise_crps(members, target, fair=True)  # [draws, D]
    plain = _pairwise_crps(members, target, fair=False)
    truth = torch.tensor([_normal_crps(v, mu, sigma) for v in y.tolist()], dtype=torch.float64)
    bias = sigma / SQRT_PI / e
    stderr = fair.std(0) / math.sqrt(draws)
    assert bool(((fair.mean(0) - truth).abs() < 5 * stderr).all())
    assert bool(((plain.mean(0) - truth - bias).abs() < 5 * plain.std(0) / math.sqrt(draws)).all())
    assert bool((plain.mean(0) - truth > bias / 2).all())  # bias 0.21 >> 5 stderr
    # the module's reduction agrees with the per-value reference
    assert crps_fair(members, target).item() == pytest.approx(fair.mean().item(), rel=1e-10)


# ---------------------------------------------------------------- gradients


def test_fair_crps_gradient_flows_through_the_spread_term():
    members = _t([[[-3.0], [-1.0], [1.0], [3.0]]]).requires_grad_()  # symmetric around y = 0
    crps_fair(members, _t([[0.0]])).backward()
    # d mean|x - y| = sign(x) / 4; d spread = (2k - E - 1) / (E (E - 1)) for the k-th smallest
    expected = [-1 / 4 + 3 / 12, -1 / 4 + 1 / 12, 1 / 4 - 1 / 12, 1 / 4 - 3 / 12]
    assert members.grad.flatten().tolist() == pytest.approx(expected, abs=1e-15)
    skill_only = [-0.25, -0.25, 0.25, 0.25]
    assert members.grad.flatten().tolist() != pytest.approx(skill_only)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradcheck(name):
    members, target, weights = _random(3, 5, 2, seed=7)
    members.requires_grad_()
    function = get_loss(name)
    assert torch.autograd.gradcheck(lambda x: function(x, target, weights), (members,))


@pytest.mark.parametrize("name", ["stats", "crps_gaussian"])
def test_collapsed_ensemble_is_finite(name):
    members = torch.full((4, 3, 2), 0.5, requires_grad=True)
    value = get_loss(name)(members, torch.zeros(4, 2))
    value.backward()
    assert torch.isfinite(value) and bool(torch.isfinite(members.grad).all())


def test_float32_agrees_with_float64_at_large_offset():
    members, target, _ = _random(20, 8, 5, seed=2)
    members, target = members * 0.1 + 1000.0, target * 0.1 + 1000.0
    for name, function in LOSSES.items():
        exact = function(members, target).item()
        single = function(members.float(), target.float())
        assert single.dtype == torch.float32
        assert single.item() == pytest.approx(exact, rel=1e-3, abs=1e-4), name


def test_half_precision_is_promoted():
    members, target, _ = _random(4, 3, 2)
    value = crps_fair(members.bfloat16(), target.bfloat16())
    assert value.dtype == torch.float32


# ---------------------------------------------------------------- weights


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_uniform_and_zero_weights(name):
    members, target, _ = _random(6, 4, 3, seed=5)
    function = get_loss(name)
    plain = function(members, target).item()
    uniform = torch.full((6,), 3.7, dtype=torch.float64)
    assert function(members, target, uniform).item() == pytest.approx(plain)
    mask = _t([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    subset = function(members[mask > 0], target[mask > 0]).item()
    assert function(members, target, mask).item() == pytest.approx(subset)


# ---------------------------------------------------------------- registry, combination, errors


def test_registry():
    assert set(LOSSES) == {"mse_mean", "mse_member", "stats", "crps_gaussian", "crps_fair", "crps_ensemble"}
    assert get_loss("crps_fair") is crps_fair
    with pytest.raises(ConfigError, match="unknown loss 'crps'.*crps_ensemble, crps_fair"):
        get_loss("crps")


def test_combine_losses():
    t, q = _random(5, 4, 3, seed=1), _random(2, 4, 6, seed=2)
    per_field = {"t": FieldLoss(*t), "q": (q[0], q[1], None)}
    total, components = combine_losses(per_field, {"crps_fair": 1.0, "mse_member": 0.1}, {"t": 2.0})
    assert set(components) == {"t/crps_fair", "t/mse_member", "q/crps_fair", "q/mse_member"}
    expected = (2.0 * (crps_fair(*t) + 0.1 * mse_member(*t))
                + 1.0 * (crps_fair(q[0], q[1]) + 0.1 * mse_member(q[0], q[1])))
    assert total.item() == pytest.approx(expected.item())
    assert components["q/mse_member"].item() == pytest.approx(mse_member(q[0], q[1]).item())
    assert not components["t/crps_fair"].requires_grad
    with pytest.raises(ConfigError, match="unknown loss"):
        combine_losses(per_field, {"nope": 1.0})
    with pytest.raises(DataError):
        combine_losses({}, {"crps_fair": 1.0})


def test_no_target_tokens_gives_attached_zero():
    members = torch.zeros(0, 4, 3, requires_grad=True)
    for function in LOSSES.values():
        value = function(members, torch.zeros(0, 3), torch.zeros(0))
        value.backward()
        assert value.item() == 0.0


@pytest.mark.parametrize("shapes", [((4, 3), (4, 3), None), ((4, 3, 2), (4, 3), None),
                                    ((4, 3, 2), (5, 2), None), ((4, 0, 2), (4, 2), None),
                                    ((4, 3, 2), (4, 2), (3,))])
def test_bad_shapes_raise(shapes):
    members_shape, target_shape, weights_shape = shapes
    weights = None if weights_shape is None else torch.ones(weights_shape)
    with pytest.raises(DataError):
        crps_fair(torch.zeros(members_shape), torch.zeros(target_shape), weights)


def _fitted_spread(loss_weights: dict[str, float], steps: int = 150) -> float:
    """The spread an ensemble reaches when its width is fitted to N(0, 1) truth under the given losses."""
    generator = torch.Generator().manual_seed(0)
    truth = torch.randn(4096, 1, generator=generator, dtype=torch.float64)  # [M, D]
    shape = torch.randn(4096, 8, 1, generator=generator, dtype=torch.float64)  # [M, E, D] iid N(0, 1) draws
    log_spread = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.Adam([log_spread], lr=0.02)
    for _ in range(steps):
        optimiser.zero_grad()
        members = log_spread.exp() * shape  # mean 0: the truth's mean is known, only the width is fitted
        total, _ = losses.combine_losses({"x": (members, truth, None)}, loss_weights)
        total.backward()
        optimiser.step()
    return float(log_spread.exp())


def test_squared_error_terms_shrink_the_spread():
    """Fair CRPS alone is minimised by the truth's spread. Adding w * mse_member (mse_mean plus the ensemble
    variance) pulls it to about 0.65 for w = 0.1 (analytically, for Gaussians: the root of
    sqrt(2/pi) (s / sqrt(1 + s^2) - 1 / sqrt(2)) + 2 w s); adding w * mse_mean much less, since the mean
    of E members varies by s^2 / E (about 0.93 for E = 8)."""
    crps = _fitted_spread({"crps_fair": 1.0})
    with_member = _fitted_spread({"crps_fair": 1.0, "mse_member": 0.1})
    with_mean = _fitted_spread({"crps_fair": 1.0, "mse_mean": 0.1})
    assert crps == pytest.approx(1.0, abs=0.05)
    assert with_member == pytest.approx(0.65, abs=0.07)
    assert with_member < with_mean - 0.15 and with_mean < crps


def test_fair_crps_ignores_a_runaway_member_and_the_plain_crps_does_not():
    """The fair CRPS's degenerate direction: one member moved off by D adds D / E to the error term and
    takes D / E back through the spread term, so an ensemble with a runaway member scores as well as one
    without. The plain ensemble CRPS charges D / E^2, and any blend with weight on it (the "almost fair"
    CRPS, ``crps_fair: 0.95, crps_ensemble: 0.05``) charges that share."""
    members = torch.tensor([[[-1.0], [-0.5], [0.5], [1.0]]], dtype=torch.float64)  # [M=1, E=4, D=1]
    target = torch.zeros(1, 1, dtype=torch.float64)
    runaway = members.clone()
    runaway[0, 3, 0] += 100.0
    assert float(crps_fair(runaway, target)) == pytest.approx(float(crps_fair(members, target)), abs=1e-9)
    extra = float(crps_ensemble(runaway, target) - crps_ensemble(members, target))
    assert extra == pytest.approx(100.0 / 4**2, rel=1e-9)
