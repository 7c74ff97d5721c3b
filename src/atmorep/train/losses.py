"""Ensemble losses: scores of the ensemble tail's predictions for the masked tokens of a field.

Every loss takes the E ensemble members predicted for the M target tokens of one field:

    members  ``[M, E, D]``  E members of the D values of each target token,
    target   ``[M, D]``     the true (normalised) values,
    weights  ``[M]`` or None, per-token weights (e.g. the latitude weights of the token centres,
             :func:`atmorep.numerics.latitude.latitude_weights`),

computes a score ``s[m, d]`` per value and reduces it to the weighted mean
``sum_m w_m sum_d s[m, d] / (D sum_m w_m)``, so uniform weights give the plain mean. Weights must be
non-negative with a positive sum (not checked, to avoid a device sync). Half-precision inputs are
promoted to float32. A field without target tokens (M = 0) gives a zero that still joins the graph.

Ensemble spread: :func:`ensemble_mean_spread` uses the unbiased standard deviation (divisor E - 1,
as ``torch.std`` and the original AtmoRep), zero for E = 1. The Gaussian losses guard it as
``sigma = sqrt(var + SIGMA_EPS**2)``, smooth everywhere, so a collapsed ensemble gives finite values
and gradients.

The ensemble CRPS uses the sorted (O(E log E)) form: for members sorted ``x_(1) <= ... <= x_(E)``,
``sum_{i,j} |x_i - x_j| = 2 sum_{k=1}^{E-1} k (E - k) (x_(k+1) - x_(k))``. Its terms are gaps between
neighbours times positive weights, so no cancellation occurs (unlike ``sum (2k - E - 1) x_(k)``), and
the gradient flows through the spread term (through the sort's permutation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
from torch import Tensor

from atmorep.config import ConfigError
from atmorep.errors import DataError
from atmorep.numerics.crps import crps

SIGMA_EPS = 1e-4  # floor of the ensemble std in the Gaussian losses (normalised units)
SPREAD_PENALTY = 1.0  # weight of mean(sigma) in the stats loss, as in the original AtmoRep
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)

Loss = Callable[..., Tensor]  # (members [M, E, D], target [M, D], weights [M] | None) -> scalar


def _check(members: Tensor, target: Tensor,
           weights: Tensor | None) -> tuple[Tensor, Tensor]:
    """Validate shapes and promote to at least float32."""
    if (members.ndim != 3 or target.ndim != 2 or members.shape[0] != target.shape[0]
            or members.shape[2] != target.shape[1]):
        raise DataError(f"loss inputs must be members [M, E, D] and target [M, D], "
                        f"got {tuple(members.shape)} and {tuple(target.shape)}")
    if members.shape[1] < 1 or members.shape[2] < 1:
        raise DataError(f"loss members need E >= 1 members and D >= 1 values, got {tuple(members.shape)}")
    if weights is not None and (weights.ndim != 1 or weights.shape[0] != members.shape[0]):
        raise DataError(f"loss weights must be [M={members.shape[0]}], got {tuple(weights.shape)}")
    dtype = torch.promote_types(members.dtype, torch.float32)
    return members.to(dtype), target.to(dtype)


def _reduce(score: Tensor, weights: Tensor | None, members: Tensor) -> Tensor:
    """Weighted mean of a per-value score ``[M, D]`` over tokens and values."""
    if score.shape[0] == 0:
        return members.sum() * 0.0  # no target token: zero, attached to the graph
    if weights is None:
        return score.mean()
    w = weights.to(score.dtype)
    return (w[:, None] * score).sum() / (w.sum() * score.shape[1])


def ensemble_mean_spread(members: Tensor, eps: float = 0.0,
                         dim: int = 1) -> tuple[Tensor, Tensor]:
    """Ensemble mean and unbiased standard deviation.

    Args:
        members: ensemble values with the members along ``dim``, e.g. ``[M, E, D]``.
        eps: the std is ``sqrt(var + eps**2)``; 0 gives the plain std.
        dim: the member axis.

    Returns:
        ``(mean, std)``, each of the shape of ``members`` without ``dim`` (``[M, D]``); the variance
        has divisor E - 1 and is zero for a single member.
    """
    mean = members.mean(dim)
    if members.shape[dim] > 1 and members.numel() > 0:
        var = members.var(dim, correction=1)
    else:
        var = torch.zeros_like(mean)
    return mean, torch.sqrt(var + eps * eps)


def mse_mean(members: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean squared error of the ensemble mean: ``(mean_i x_i - y)^2``."""
    x, y = _check(members, target, weights)
    return _reduce((x.mean(1) - y).square(), weights, x)


def mse_member(members: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean over members of each member's squared error: ``mean_i (x_i - y)^2``."""
    x, y = _check(members, target, weights)
    return _reduce((x - y[:, None]).square().mean(1), weights, x)


def stats(members: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """The Gaussian likelihood-type "stats" loss of AtmoRep.

    ``(1 - exp(-(y - mu)^2 / (2 sigma^2)))^2 + SPREAD_PENALTY * sigma`` with ``mu``, ``sigma`` the
    ensemble mean and guarded unbiased std. The first term is 0 when the mean hits the target and
    tends to 1 as sigma collapses onto a wrong mean (against collapse); it also tends to 0 as sigma
    grows, which the ``sigma`` term penalises (against blow-up). Not a proper score.
    """
    x, y = _check(members, target, weights)
    mu, sigma = ensemble_mean_spread(x, eps=SIGMA_EPS)
    miss = -torch.expm1(-(y - mu).square() / (2.0 * sigma.square()))  # 1 - exp(-r), accurate near 0
    return _reduce(miss.square() + SPREAD_PENALTY * sigma, weights, x)


def crps_normal(mu: Tensor, sigma: Tensor, target: Tensor) -> Tensor:
    """Closed-form CRPS of N(mu, sigma^2) at y, elementwise.

    ``sigma * [z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi)]`` with ``z = (y - mu) / sigma``, Phi and phi
    the standard normal cdf and pdf (``2 Phi(z) - 1 = erf(z / sqrt(2))``). ``sigma`` must be positive.
    """
    z = (target - mu) / sigma
    pdf = torch.exp(-0.5 * z.square()) * _INV_SQRT_2PI
    return sigma * (z * torch.erf(z * _INV_SQRT_2) + 2.0 * pdf - _INV_SQRT_PI)


def crps_gaussian(members: Tensor, target: Tensor,
                  weights: Tensor | None = None) -> Tensor:
    """CRPS of the Gaussian N(mu, sigma^2) fitted to the ensemble (mean, guarded unbiased std)."""
    x, y = _check(members, target, weights)
    mu, sigma = ensemble_mean_spread(x, eps=SIGMA_EPS)
    return _reduce(crps_normal(mu, sigma, y), weights, x)


def crps_fair(members: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """Fair (unbiased) ensemble CRPS.

    ``mean_i |x_i - y| - 1 / (2 E (E - 1)) sum_{i,j} |x_i - x_j|``: its expectation over ensembles
    drawn from F equals the CRPS of F. For E = 1 the spread term is undefined and dropped, leaving the
    mean absolute error. Gradients flow through both terms.
    """
    x, y = _check(members, target, weights)
    return _reduce(crps(x, y, member_axis=1, fair=True), weights, x)


def crps_ensemble(members: Tensor, target: Tensor,
                  weights: Tensor | None = None) -> Tensor:
    """CRPS of the ensemble's empirical distribution: ``mean_i |x_i - y| - 1/(2 E^2) sum_{i,j} |x_i - x_j|``.

    Biased high by ``E|X - X'| / (2 E)`` for E members; meant for evaluation.
    """
    x, y = _check(members, target, weights)
    return _reduce(crps(x, y, member_axis=1, fair=False), weights, x)


LOSSES: dict[str, Loss] = {
    "mse_mean": mse_mean,
    "mse_member": mse_member,
    "stats": stats,
    "crps_gaussian": crps_gaussian,
    "crps_fair": crps_fair,
    "crps_ensemble": crps_ensemble,
}


def get_loss(name: str) -> Loss:
    """The loss registered under ``name``; raises ConfigError listing the known names."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ConfigError(f"unknown loss '{name}', expected one of: {', '.join(sorted(LOSSES))}") from None


class FieldLoss(NamedTuple):
    """The inputs of the losses for one field: members ``[M, E, D]``, target ``[M, D]``, weights ``[M]``."""

    members: Tensor
    target: Tensor
    weights: Tensor | None = None


def combine_losses(per_field: Mapping[str, FieldLoss | tuple], loss_weights: Mapping[str, float],
                   field_weights: Mapping[str, float] | None = None,
                   ) -> tuple[Tensor, dict[str, Tensor]]:
    """The total training loss ``sum_field field_weight * sum_loss loss_weight * loss(field)``.

    Args:
        per_field: field name -> ``(members, target, weights)``.
        loss_weights: loss name (a key of :data:`LOSSES`) -> weight.
        field_weights: field name -> weight; fields not listed weigh 1.

    Returns:
        ``(total, components)``: the scalar total, and each unweighted loss detached for logging,
        keyed ``"<field>/<loss>"`` (e.g. ``"t/crps_fair"``).
    """
    if not per_field:
        raise DataError("combine_losses needs at least one field, got none")
    if not loss_weights:
        raise ConfigError(f"no loss selected, expected weights for some of: {', '.join(sorted(LOSSES))}")
    functions = {name: get_loss(name) for name in loss_weights}
    field_weights = field_weights or {}
    total: Tensor | float = 0.0
    components: dict[str, Tensor] = {}
    for field, (members, target, weights) in per_field.items():
        field_total: Tensor | float = 0.0
        for name, function in functions.items():
            value = function(members, target, weights)
            components[f"{field}/{name}"] = value.detach()
            field_total = field_total + loss_weights[name] * value
        total = total + field_weights.get(field, 1.0) * field_total
    return total, components  # type: ignore[return-value]
