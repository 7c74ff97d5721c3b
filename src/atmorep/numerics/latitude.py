"""Area weights of latitudes: the one ``cos(latitude)`` that training, statistics and evaluation share."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

from atmorep.errors import DataError

Latitudes = TypeVar("Latitudes", np.ndarray, torch.Tensor)


def latitude_weights(latitude: Latitudes, what: str = "latitude") -> Latitudes:
    """Area weights ``cos(latitude)``, exactly 0 at the poles, normalised to mean 1 over all elements.

    Args:
        latitude: degrees north, any shape; a NumPy array or a torch tensor (then computed in at least
            float32, on its device).
        what: how error messages name the latitudes (a coordinate, the token centres).

    Returns:
        Weights of the same shape and kind, largest at the equator.

    Raises:
        DataError: no latitude, one outside [-90, 90], or only poles (the weights sum to zero).
    """
    if isinstance(latitude, torch.Tensor):
        values = latitude.to(torch.promote_types(latitude.dtype, torch.float32))
        module, radians = torch, torch.deg2rad
    else:
        values = np.asarray(latitude, dtype=np.float64)
        module, radians = np, np.deg2rad
    if values.numel() == 0 if module is torch else values.size == 0:
        raise DataError(f"{what}: no latitudes, got an empty array")
    if not bool((abs(values) <= 90.0).all()):
        raise DataError(f"{what} must hold degrees within [-90, 90]")
    weights = module.where(abs(values) < 90.0, module.cos(radians(values)), 0.0)
    total = weights.mean()
    if not bool(total > 0):
        raise DataError(f"{what} holds only the poles: the area weights sum to zero")
    return weights / total
