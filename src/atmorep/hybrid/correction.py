"""The learned correction and the hybrid step it makes with the core.

One hybrid step from the physical fields ``x_n`` (``[B, C, H, W]``, see :mod:`atmorep.hybrid.state`):

    c_n     = core(x_n)                                   the core's forecast one interval ahead
    x_{n+1} = c_n + s * f([(x_n - mu) / sigma, (c_n - x_n) / d, geometry, solar time])

``mu, sigma`` are the truth's mean and spread per channel, ``d`` the spread of the core's own
increments and ``s`` the spread of its errors (truth minus core step), all measured on the training
period (:class:`Normaliser`). ``f`` is a small convolutional network on the core's grid, periodic in
longitude, whose last layer starts at zero: an untrained hybrid is the raw core exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from atmorep.hybrid.core import DynamicalCore
from atmorep.hybrid.state import StateConverter

FEATURES = 8  # sin/cos latitude, sin/cos longitude, sin/cos local solar hour, orography, land height > 0


@dataclass
class Normaliser:
    """Per-channel scales ``[C]`` measured on the training period (see the module docstring)."""

    mean: torch.Tensor
    std: torch.Tensor
    increment: torch.Tensor
    error: torch.Tensor

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"normaliser.{name}": getattr(self, name) for name in ("mean", "std", "increment", "error")}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> Normaliser:
        return cls(**{name: tensors[f"normaliser.{name}"] for name in ("mean", "std", "increment", "error")})


RESOLUTION = {"u": 1e-2, "v": 1e-2, "t": 1e-2, "lnsp": 1e-5}  # m/s, m/s, K, ln(Pa): the smallest spread


def channel_spread(values: torch.Tensor) -> torch.Tensor:
    """The root mean square ``[C]`` of ``[N, C, H, W]`` over all but the channel, at least
    :data:`RESOLUTION` of its field: a channel that barely varies (a calm level, a core that hardly
    moves it) is not blown up into huge network inputs or corrections."""
    layers = (values.shape[1] - 1) // 3
    floor = torch.tensor([RESOLUTION[name] for name in ("u", "v", "t") for _ in range(layers)]
                         + [RESOLUTION["lnsp"]], dtype=torch.float64)
    return torch.maximum(values.double().pow(2).mean(dim=(0, 2, 3)).sqrt(), floor).float()


class Correction(nn.Module):
    """The network ``f``: input channels to corrections of every physical channel.

    Args:
        channels: physical channels ``C = 3L + 1``.
        width: hidden channels.
        depth: 3 x 3 convolutions (each followed by GELU) before the 1 x 1 output layer.
    """

    def __init__(self, channels: int, width: int = 64, depth: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        inputs = 2 * channels + FEATURES
        for _ in range(depth):
            layers += [nn.Conv2d(inputs, width, 3, padding=0), nn.GELU()]
            inputs = width
        self.hidden = nn.ModuleList(layers)
        self.out = nn.Conv2d(width, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        for layer in self.hidden:
            if isinstance(layer, nn.Conv2d):  # [B, C, H, W]: periodic in longitude, edge rows at the poles
                x = nn.functional.pad(x, (1, 1, 0, 0), mode="circular")
                x = nn.functional.pad(x, (0, 0, 1, 1), mode="replicate")
            x = layer(x)
        return self.out(x)


class HybridModel(nn.Module):
    """Core plus correction, stepping physical fields; ``correction=None`` is the raw core.

    Args:
        core: the dynamical core.
        normaliser: the training period's scales.
        latitudes, longitudes: the core grid (degrees), for the geometry inputs.
        orography: metres ``[H, W]``.
        correction: the network, or None.
    """

    def __init__(self, core: DynamicalCore, normaliser: Normaliser, latitudes: np.ndarray,
                 longitudes: np.ndarray, orography: np.ndarray, correction: Correction | None) -> None:
        super().__init__()
        self.core = core
        self.converter = StateConverter(core)
        self.normaliser = normaliser
        self.correction = correction
        self.latitudes, self.longitudes, self.orography = latitudes, longitudes, orography
        lat, lon = np.meshgrid(np.deg2rad(latitudes), np.deg2rad(longitudes), indexing="ij")  # [H, W]
        height = orography / 1000.0
        geometry = np.stack([np.sin(lat), np.cos(lat), np.sin(lon), np.cos(lon), height, height > 0.05])
        self.register_buffer("geometry", torch.as_tensor(geometry, dtype=torch.float32), persistent=False)
        self.register_buffer("longitude", torch.as_tensor(lon, dtype=torch.float32), persistent=False)

    def without_correction(self) -> HybridModel:
        """The same core and scales without a correction: the raw core."""
        return HybridModel(self.core, self.normaliser, self.latitudes, self.longitudes, self.orography, None)

    def core_step(self, fields: torch.Tensor) -> torch.Tensor:
        """The raw core's fields one interval ahead, ``[B, C, H, W]``."""
        return self.converter.to_fields(self.core(self.converter.to_state(fields)))

    def inputs(self, fields: torch.Tensor, core: torch.Tensor, hours: torch.Tensor) -> torch.Tensor:
        """The network's inputs ``[B, 2C + FEATURES, H, W]`` at UTC hours ``[B]``."""
        n = self.normaliser
        scale = lambda x: x[None, :, None, None]  # noqa: E731 - [C] against [B, C, H, W]
        solar = self.longitude[None] + 2 * np.pi * hours[:, None, None] / 24.0  # local solar hour angle
        geometry = self.geometry[None].expand(fields.shape[0], -1, -1, -1)
        return torch.cat([(fields - scale(n.mean)) / scale(n.std), (core - fields) / scale(n.increment),
                          geometry[:, :4], torch.sin(solar)[:, None], torch.cos(solar)[:, None],
                          geometry[:, 4:]], dim=1)

    def correct(self, fields: torch.Tensor, core: torch.Tensor, hours: torch.Tensor) -> torch.Tensor:
        """The correction ``[B, C, H, W]`` (physical units) of a core step from ``fields``."""
        if self.correction is None:
            return torch.zeros_like(core)
        return self.correction(self.inputs(fields, core, hours)) * self.normaliser.error[None, :, None, None]

    def forward(self, fields: torch.Tensor, hours: torch.Tensor) -> torch.Tensor:
        """The hybrid's fields one interval ahead of ``fields [B, C, H, W]`` valid at UTC ``hours [B]``."""
        core = self.core_step(fields)
        return core + self.correct(fields, core, hours)
