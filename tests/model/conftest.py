"""Inputs for model tests: a small two-field configuration and random tokens, modes and alpha."""

from __future__ import annotations

import math

import pytest
import torch

from atmorep.batch import BatchMetadata
from atmorep.config import RunConfig, resolve_config
from atmorep.numerics.tokens import token_alpha, token_grid

LEVELS = {"t": (850.0, 500.0), "u": (850.0,)}


def make_config(preset: str = "tiny", fields: list[dict] | None = None, **model: object) -> RunConfig:
    """Two fields on a (4, 8, 8) box: t (2 levels, token (2, 2, 2)) and u (1 level, token (2, 4, 4))."""
    fields = fields or [
        {"name": "t", "levels": list(LEVELS["t"]), "token_size": [2, 2, 2], "coupled_with": ["u"]},
        {"name": "u", "levels": list(LEVELS["u"]), "token_size": [2, 4, 4], "coupled_with": ["t"]},
    ]
    data = {"fields": fields, "data": {"box": {"time": 4, "latitude": 8, "longitude": 8}},
            "model": {"preset": preset, **model}}
    return resolve_config(data)


def make_metadata(config: RunConfig, batch: int, generator: torch.Generator) -> BatchMetadata:
    """Random boxes: hourly times in 2000-2030, 1-degree spacing, longitudes that may wrap past 360."""
    t, h, w = config.data.box.shape
    start = torch.randint(946_684_800, 1_893_456_000, (batch, 1), generator=generator)  # [B, 1]
    time = start + 3600 * torch.arange(t)  # [B, T]
    lat0 = torch.rand(batch, 1, generator=generator, dtype=torch.float64) * 160 - 80
    lon0 = torch.rand(batch, 1, generator=generator, dtype=torch.float64) * 360
    latitude = lat0 + torch.arange(h, dtype=torch.float64)  # [B, H]
    longitude = torch.remainder(lon0 + torch.arange(w, dtype=torch.float64), 360.0)  # [B, W]
    levels = {f.name: tuple(f.levels) for f in config.fields}
    return BatchMetadata(time=time, latitude=latitude, longitude=longitude, levels=levels, resolution=1.0)


def make_inputs(config: RunConfig, batch: int = 2, seed: int = 0, dtype: torch.dtype = torch.float32,
                target_rate: float = 0.5) -> tuple[dict, dict, dict]:
    """Random ``(tokens, modes, alpha)`` per field; each token is a target with ``target_rate``.

    Targets get modes 1, 2 or 3 with equal probability; non-predicted fields stay visible.
    """
    generator = torch.Generator().manual_seed(seed)
    metadata = make_metadata(config, batch, generator)
    tokens, modes, alpha = {}, {}, {}
    for f in config.fields:
        shape = (batch, len(f.levels), *token_grid(config.data.box.shape, f.token_size))
        tokens[f.name] = torch.randn(*shape, math.prod(f.token_size), generator=generator, dtype=dtype)
        target = torch.rand(shape, generator=generator) < target_rate
        kind = torch.randint(1, 4, shape, generator=generator)
        modes[f.name] = torch.where(target & f.predicted, kind, 0).to(torch.int8)
        alpha[f.name] = token_alpha(metadata, f.name, f.token_size)
    return tokens, modes, alpha


@pytest.fixture
def config() -> RunConfig:
    return make_config()


@pytest.fixture
def inputs(config: RunConfig) -> tuple[dict, dict, dict]:
    return make_inputs(config)
