"""Checks of a run configuration that need the registries of losses and tasks, before training starts.

``atmorep.config`` validates types and ranges; here the names chosen from registries (losses,
masking tasks) and the combinations that only fail once data flows (a forecast needs more time
tokens than it masks) are checked, each failure a :class:`~atmorep.config.ConfigError` naming
the key.
"""

from __future__ import annotations

from collections.abc import Mapping

from atmorep.config import ConfigError, RunConfig
from atmorep.model.multiformer import check_model_config
from atmorep.tasks import TASKS, MaskingError, training_task
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
    names = [f.name for f in config.fields]
    if train.init_fields is not None and train.init is None:
        raise ConfigError("train.init_fields: given without train.init (the checkpoint to take them from)")
    for key, chosen in (("train.init_fields", train.init_fields or []), ("train.freeze", train.freeze)):
        unknown = [name for name in chosen if name not in names]
        if unknown:
            raise ConfigError(f"{key}: {unknown} are not fields of the run ({names})")
    check_model_config(config)
    for name in train.task_options:
        if name not in train.tasks:
            raise ConfigError(f"train.task_options.{name}: '{name}' is not one of train.tasks "
                              f"({', '.join(train.tasks)})")
    for name, weight in train.tasks.items():
        try:
            task = training_task(name, config)
        except MaskingError as error:
            raise ConfigError(str(error)) from error
        reason = task.misfit(config) if weight > 0 else None
        if reason is not None:
            raise ConfigError(reason)


def with_levels(config: RunConfig, levels: Mapping[str, tuple[float, ...]]) -> RunConfig:
    """The configuration with every field's ``levels`` set to the level values actually used."""
    data = config.model_dump(mode="json")
    for field in data["fields"]:
        field["levels"] = [float(v) for v in levels[field["name"]]]
    return RunConfig.model_validate(data)
