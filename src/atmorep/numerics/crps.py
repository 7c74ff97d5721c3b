"""The continuous ranked probability score of an ensemble: one implementation for the training loss
(torch, differentiable) and the evaluation metric (numpy, inside xarray), by ``scoringrules``.

* fair (``fair=True``): ``mean_i |x_i - y| - 1 / (2 E (E - 1)) sum_{i,j} |x_i - x_j|``, whose expectation
  over ensembles of E members drawn from F is the CRPS of F (scoringrules' ``pwm`` estimator);
* empirical (``fair=False``): the CRPS of the ensemble's empirical distribution,
  ``mean_i |x_i - y| - 1 / (2 E^2) sum_{i,j} |x_i - x_j|`` (its ``qd`` estimator), biased high by
  ``E|X - X'| / (2 E)``.

A single member gives the absolute error (the fair spread term is undefined for E = 1 and dropped).
NaN in the truth or the members gives NaN.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import scoringrules
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def crps(members: Array, truth: Array, member_axis: int = -1, *, fair: bool = True) -> Array:
    """Pointwise CRPS of an ensemble.

    Args:
        members: the ensemble, members along ``member_axis`` (torch tensor or numpy array).
        truth: the truth, the shape of ``members`` without ``member_axis``.
        member_axis: the members' axis of ``members``.
        fair: the fair estimator (default) or the empirical distribution's CRPS.

    Returns:
        The score at every point of ``truth``, of its type (gradients flow through a tensor).
    """
    is_tensor = isinstance(members, torch.Tensor)
    if members.shape[member_axis] == 1:
        single = members.squeeze(member_axis) if is_tensor else np.squeeze(members, axis=member_axis)
        return abs(single - truth)
    return scoringrules.crps_ensemble(truth, members, m_axis=member_axis, estimator="pwm" if fair else "qd",
                                      backend="torch" if is_tensor else "numpy")
