"""Checks of a run configuration that need the registries of losses and tasks, before training starts.

``atmorep.config`` validates types and ranges; here the names chosen from registries (losses,
masking tasks) and the combinations that only fail once data flows (a forecast needs more time
tokens than it masks) are checked, each failure a :class:`~atmorep.config.ConfigError` naming
the key.
"""

from __future__ import annotations

from collections.abc import Mapping

from atmorep.config import ConfigError, RunConfig
from atmorep.data.masking import TASKS
from atmorep.model.multiformer import check_model_config
from atmorep.numerics.tokens import token_grid
from atmorep.train.losses import LOSSES


def _check_weights(key: str, weights: Mapping[str, float], registry: Mapping, what: str) -> None:
    for name, weight in weights.items():
        if name not in registry:
            raise ConfigError(f"{key}.{name}: unknown {what} '{name}' (known: {', '.join(sorted(registry))})")
        if weight < 0:
            raise ConfigError(f"{key}.{name}: weight must be non-negative, got {weight}")
    if not weights or sum(weights.values()) <= 0:
        raise ConfigError(f"{key}: give at least one {what} with a positive weight "
                          f"(known: {', '.join(sorted(registry))})")


def check_train_config(config: RunConfig) -> None:
    """Raise ConfigError, naming the key, for a configuration that cannot train."""
    train = config.train
    if not config.data.train:
        raise ConfigError("data.train: no training store given (a list of prepared stores)")
    if train.seed < 0:
        raise ConfigError(f"train.seed: must be non-negative, got {train.seed}")
    _check_weights("train.losses", train.losses, LOSSES, "loss")
    _check_weights("train.tasks", train.tasks, TASKS, "masking task")
    check_model_config(config)
    for f in config.fields:
        time_tokens = token_grid(config.data.box.shape, f.token_size, f.name)[0]
        if train.tasks.get("forecast", 0) > 0 and train.forecast_tokens >= time_tokens:
            raise ConfigError(f"train.forecast_tokens: {train.forecast_tokens} must be smaller than the "
                              f"{time_tokens} time tokens of field '{f.name}'")
        if train.tasks.get("interpolate", 0) > 0 and time_tokens < 3:
            raise ConfigError(f"train.tasks.interpolate: field '{f.name}' has {time_tokens} time tokens, "
                              f"interpolation needs at least 3")


def with_levels(config: RunConfig, levels: Mapping[str, tuple[float, ...]]) -> RunConfig:
    """The configuration with every field's ``levels`` set to the level values actually used."""
    data = config.model_dump(mode="json")
    for field in data["fields"]:
        field["levels"] = [float(v) for v in levels[field["name"]]]
    return RunConfig.model_validate(data)
