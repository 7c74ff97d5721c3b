"""Spread factors per lead time for rolled-out ensembles, fitted on held-out data and kept in the checkpoint.

The tail's spread factors (:mod:`atmorep.train.calibration`) calibrate one forecast pass. Rolled out
member by member, each member continues on its own output and the spread grows at the rate the
members' trajectories diverge, which a one-pass factor does not control: on the default corpus it
reached three times the ensemble mean's error by 48 h. ``atmorep calibrate --lead-hours H`` therefore
also fits, on the validation period, one factor ``c[field, level, lead]`` per lead up to ``H``
(:func:`atmorep.calibrate.calibrate`) and stores it in the checkpoint's ``meta.json``; a member rollout
multiplies every member's deviation from the ensemble mean at that lead by ``c``. That changes the
spread only: the ensemble mean (and so the RMSE) stays as it was. Leads past the fitted ones keep the
factor of the last fitted lead. Factors are fitted for one rollout mode and applied only to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from atmorep.errors import DataError

LEAD_SPREAD = "lead_spread"  # meta.json key


@dataclass(frozen=True)
class LeadSpread:
    """Spread factors against lead time.

    Attributes:
        lead_hours: ``[P]`` the fitted leads, increasing.
        factors: field -> ``[L, P]`` factor per level and lead.
        rollout: the rollout mode they were fitted for (``"members"``).
    """

    lead_hours: tuple[float, ...]
    factors: Mapping[str, np.ndarray]
    rollout: str = "members"

    def __post_init__(self) -> None:
        leads = np.asarray(self.lead_hours, dtype=np.float64)
        if leads.ndim != 1 or leads.size == 0 or not (np.diff(leads) > 0).all():
            raise DataError(f"lead spread: lead_hours must increase, got {list(self.lead_hours)}")
        for name, values in self.factors.items():
            values = np.asarray(values, dtype=np.float64)
            usable = bool((np.isfinite(values) & (values > 0)).all())
            if values.ndim != 2 or values.shape[1] != leads.size or not usable:
                raise DataError(f"lead spread: field '{name}' needs positive finite factors [levels, "
                                f"{leads.size}], got shape {values.shape}")

    @classmethod
    def from_meta(cls, meta: Mapping) -> LeadSpread | None:
        """The factors a checkpoint's ``meta.json`` holds, or None."""
        record = meta.get(LEAD_SPREAD)
        if not record:
            return None
        return cls(tuple(record["lead_hours"]), {name: np.asarray(value, dtype=np.float64)
                                                 for name, value in record["factors"].items()},
                   record.get("rollout", "members"))

    def to_meta(self) -> dict:
        return {"lead_hours": [float(v) for v in self.lead_hours], "rollout": self.rollout,
                "factors": {name: np.asarray(v, dtype=np.float64).round(6).tolist()
                            for name, v in self.factors.items()}}

    def table(self, names: Sequence[str], levels: Mapping[str, int], lead_hours: np.ndarray) -> Tensor:
        """``[C, P]`` float32 factors for the channels of ``names`` (``levels[name]`` each, in order) at
        ``lead_hours`` (the last fitted lead's factor past it; 1 for a field without factors)."""
        fitted = np.asarray(self.lead_hours, dtype=np.float64)
        index = np.minimum(np.searchsorted(fitted, np.asarray(lead_hours, dtype=np.float64) - 1e-6),
                           fitted.size - 1)
        rows = []
        for name in names:
            values = self.factors.get(name)
            if values is None:
                rows.append(np.ones((levels[name], index.size)))
            elif values.shape[0] != levels[name]:
                raise DataError(f"lead spread: field '{name}' has factors for {values.shape[0]} levels, the "
                                f"model predicts {levels[name]}; calibrate the checkpoint again")
            else:
                rows.append(np.asarray(values)[:, index])
        return torch.as_tensor(np.concatenate(rows, axis=0), dtype=torch.float32)  # [C, P]


def apply_lead_spread(members: Tensor, factors: Tensor) -> Tensor:
    """Scale each member's deviation from the ensemble mean.

    Args:
        members: ``[E, C, P, H, W]``.
        factors: ``[C, P]``.

    Returns:
        ``mean + factors * (members - mean)``, the same shape and dtype.
    """
    mean = members.mean(dim=0, keepdim=True)  # [1, C, P, H, W]
    return mean + factors[None, :, :, None, None].to(members.dtype) * (members - mean)


def smoothed_factors(ratios: np.ndarray, width: int = 7,
                     limits: tuple[float, float] = (0.1, 10.0)) -> np.ndarray:
    """Factors ``1 / ratio`` from spread/skill ratios ``[L, P]`` against lead, their logarithm smoothed by a
    running mean of ``width`` leads so that few cases do not make them jump from lead to lead; non-finite
    ratios give factor 1.

    The window is centred on its lead and shrinks symmetrically at the ends (the first lead is its own
    mean): a ratio that changes steadily with lead, as it does over the first hours of a rollout, is
    kept, where a one-sided window at the start would pull the first leads towards later ones.
    """
    log = np.where(np.isfinite(ratios) & (ratios > 0), -np.log(np.where(ratios > 0, ratios, 1.0)), 0.0)
    count = log.shape[-1]
    halves = [min(width // 2, p, count - 1 - p) for p in range(count)]
    smooth = np.stack([log[..., p - h: p + h + 1].mean(axis=-1) for p, h in enumerate(halves)], axis=-1)
    return np.clip(np.exp(smooth), *limits)
