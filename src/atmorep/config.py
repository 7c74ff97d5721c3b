"""Validated configuration: one source of truth for data, model and training.

Configurations are pydantic models loaded from YAML. Unknown keys are rejected with a message
that names them; ``key.sub=value`` overrides from the command line are applied before
validation; the resolved configuration is saved with every run and checkpoint.
Components (losses, tasks, sources, presets) are chosen by registry name, never by import path.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from atmorep.errors import AtmorepError


class ConfigError(AtmorepError, ValueError):
    """A configuration file or override is invalid; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MaskingConfig(_Strict):
    """BERT-style masking of one field's tokens.

    Per sample a ratio is drawn uniformly in ``[min_ratio, max_ratio]``; each chosen token is
    replaced by the mask value, blended with noise, or coarsened, with the given relative rates.
    """

    min_ratio: float = Field(0.1, ge=0.0, le=1.0)
    max_ratio: float = Field(0.75, ge=0.0, le=1.0)
    rate_mask: float = Field(0.8, ge=0.0)
    rate_noise: float = Field(0.1, ge=0.0)
    rate_coarsen: float = Field(0.1, ge=0.0)
    noise_std: float = Field(0.5, gt=0.0)
    coarsen_factor: int = Field(2, ge=2)

    @model_validator(mode="after")
    def _check(self) -> MaskingConfig:
        if self.min_ratio > self.max_ratio:
            raise ValueError(f"min_ratio ({self.min_ratio}) must not exceed max_ratio ({self.max_ratio})")
        if self.rate_mask + self.rate_noise + self.rate_coarsen <= 0:
            raise ValueError("rate_mask + rate_noise + rate_coarsen must be positive")
        return self


class FieldConfig(_Strict):
    """One field of the model: what it reads, how it is tokenised, masked and weighted."""

    name: str
    levels: list[float] | None = None  # None: all levels of the store
    token_size: tuple[int, int, int] = (3, 9, 9)  # (time, latitude, longitude) grid points
    coupled_with: list[str] = []
    predicted: bool = True
    loss_weight: float = Field(1.0, ge=0.0)
    masking: MaskingConfig = MaskingConfig()

    @field_validator("token_size")
    @classmethod
    def _positive(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(v < 1 for v in value):
            raise ValueError(f"token sizes must be positive, got {value}")
        return value


class BoxConfig(_Strict):
    """A local space-time box in grid points (paper: 36 h x 54 x 108 at 0.25 deg)."""

    time: int = Field(36, ge=1)
    latitude: int = Field(54, ge=1)
    longitude: int = Field(108, ge=1)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.time, self.latitude, self.longitude)


class FieldStores(_Strict):
    """The stores one field is read from instead of ``data.train`` / ``data.validation``: one per store
    of those lists, in the same order, with the same time steps and grid (e.g. another model's output,
    a field prepared on its own)."""

    train: list[str] = []
    validation: list[str] = []


class DataConfig(_Strict):
    """Where the data comes from and how boxes are drawn."""

    train: list[str] = []  # prepared stores (paths or fsspec URLs)
    validation: list[str] = []
    field_stores: dict[str, FieldStores] = {}  # field name -> its own stores (default: train / validation)
    guide: FieldStores = FieldStores()  # another model's values of all fields, paired with train / validation
    box: BoxConfig = BoxConfig()
    boxes_per_window: int = Field(4, ge=1)  # boxes drawn from one time window
    windows_per_batch: int = Field(1, ge=1)
    time_step: int = Field(1, ge=1)  # stride along the store's time axis inside a box
    num_workers: int = Field(0, ge=0)
    nan_policy: Literal["skip", "error"] = "skip"
    max_redraws: int = Field(100, ge=1)
    batches_per_epoch: int = Field(1000, ge=1)

    @property
    def batch_size(self) -> int:
        return self.boxes_per_window * self.windows_per_batch

    def stores(self, split: Literal["train", "validation"]) -> tuple[list[str], dict[str, list[str]]]:
        """The stores of a split and, per field that has its own, that field's stores."""
        own = {name: getattr(stores, split) for name, stores in self.field_stores.items()
               if getattr(stores, split)}
        return getattr(self, split), own

    def guide_stores(self, split: Literal["train", "validation"]) -> list[str]:
        """Another model's stores paired with the split's (model correction), or none."""
        return list(getattr(self.guide, split))


class ModelConfig(_Strict):
    """The multiformer's size; ``preset`` names a registered size, explicit keys override it."""

    preset: str = "tiny"
    dim: int = Field(64, ge=8)
    encoder_layers: int = Field(2, ge=1)
    decoder_layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)  # self-attention heads per field and layer
    cross_heads: int = Field(1, ge=0)  # heads per coupled field
    mlp_ratio: float = Field(2.0, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    qk_norm: bool = False
    ensemble_members: int = Field(8, ge=1)
    embedding: Literal["linear", "transformer"] = "linear"
    alpha_embedding: bool = True
    checkpoint_activations: bool = False
    # Hidden tokens start from a first guess and the tail predicts its scaled correction
    # (docs/training.md, atmorep.numerics.first_guess); false: a mask vector, absolute values (ablation).
    first_guess: bool = True


class OptimConfig(_Strict):
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = Field(100, ge=0)
    decay: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    grad_clip: float = Field(1.0, ge=0)  # 0 disables clipping
    accumulate: int = Field(1, ge=1)


class RolloutConfig(_Strict):
    """Training through rollouts of the forecast (docs/training.md): a box long enough for ``steps``
    forecast passes, each pass given the previous passes' predictions of one ensemble member."""

    steps: int = Field(1, ge=1)  # forecast passes per sample (1: the one-box forecast)
    # gradients flow back through at most this many passes (truncated backpropagation; None: all)
    backprop_steps: int | None = Field(None, ge=1)


class TrainConfig(_Strict):
    """The training run."""

    run_dir: str = "runs/default"
    seed: int = 0
    max_steps: int = Field(2000, ge=1)
    max_minutes: float | None = Field(None, gt=0)  # wall-clock bound; stops cleanly when reached
    tasks: dict[str, float] = {"bert": 0.5, "forecast": 0.3, "interpolate": 0.1, "infill": 0.1}
    forecast_tokens: int = Field(1, ge=1)  # time tokens masked at the end of the box
    rollout: RolloutConfig = RolloutConfig()  # forecast draws roll out this many passes
    # options of a task by name, e.g. {infill: {max_fraction: 1.0, regions: 2}} (docs/training.md)
    task_options: dict[str, dict[str, Any]] = {}
    losses: dict[str, float] = {"crps_fair": 1.0, "mse_member": 0.1}
    latitude_weighting: bool = True
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # auto: CUDA > MPS > CPU (atmorep.runtime)
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    compile: bool = False
    distributed: Literal["auto", "none", "ddp", "fsdp"] = "auto"
    optim: OptimConfig = OptimConfig()
    log_every: int = Field(10, ge=1)
    validate_every: int = Field(200, ge=1)
    validation_batches: int = Field(8, ge=1)
    calibrate_spread: bool = True  # fit the ensemble's spread factors on the validation batches at the end
    checkpoint_every: int = Field(200, ge=1)
    init: str | None = None  # a checkpoint (or run directory) whose fields' weights a fresh run starts from
    init_fields: list[str] | None = None  # the fields taken from ``init`` (default: every field both have)
    freeze: list[str] = []  # fields whose weights are not trained (e.g. pre-trained ones)


class RunConfig(_Strict):
    """Everything a run needs: fields, data, model and training."""

    fields: list[FieldConfig]
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _check_fields(self) -> RunConfig:
        names = [f.name for f in self.fields]
        if not names:
            raise ValueError("fields: at least one field is required")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"fields: duplicated field names {duplicates}")
        for f in self.fields:
            unknown = [c for c in f.coupled_with if c not in names]
            if unknown:
                raise ValueError(f"fields.{f.name}.coupled_with names unknown fields {unknown}")
            for axis, box, token in zip(("time", "latitude", "longitude"), self.data.box.shape, f.token_size):
                if box % token:
                    raise ValueError(
                        f"fields.{f.name}.token_size: box {axis} size {box} is not a multiple of "
                        f"the token size {token}"
                    )
        if not any(f.predicted for f in self.fields):
            raise ValueError("fields: at least one field must have predicted: true")
        return self

    def field(self, name: str) -> FieldConfig:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"no field '{name}' in the configuration")


# --------------------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a key path and a YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    return key.split("."), yaml.safe_load(raw) if raw else ""


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Apply dotted overrides to a nested dict; list items are addressed by index or field name."""
    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node: Any = data
        for i, key in enumerate(path[:-1]):
            node = _child(node, key, ".".join(path[: i + 1]), create=True)
        last = path[-1]
        if isinstance(node, list):
            index = _list_index(node, last, ".".join(path))
            node[index] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"override '{text}': '{'.'.join(path[:-1])}' is not a section")
    return data


def _list_index(node: list, key: str, where: str) -> int:
    if key.lstrip("-").isdigit():
        index = int(key)
        if -len(node) <= index < len(node):
            return index
        raise ConfigError(f"override key '{where}': index {index} out of range")
    for index, item in enumerate(node):
        if isinstance(item, dict) and item.get("name") == key:
            return index
    raise ConfigError(f"override key '{where}': no list item named '{key}'")


def _child(node: Any, key: str, where: str, create: bool) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, key, where)]
    if not isinstance(node, dict):
        raise ConfigError(f"override key '{where}': parent is not a section")
    if key not in node or node[key] is None:
        if not create:
            raise ConfigError(f"unknown key '{where}'")
        node[key] = {}
    return node[key]


def format_validation_error(error: ValidationError, source: str) -> str:
    """One readable line per problem, naming the dotted key."""
    lines = []
    for problem in error.errors():
        key = ".".join(str(p) for p in problem["loc"]) or "<root>"
        if problem["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'")
        else:
            lines.append(f"{source}: {key}: {problem['msg']}")
    return "; ".join(lines)


def resolve_config(data: Mapping, overrides: Sequence[str] = (), source: str = "config") -> RunConfig:
    """Validate a config dict after applying overrides (and the model preset)."""
    from atmorep.presets import apply_preset  # presets are model knowledge

    merged = apply_overrides(dict(data), overrides)
    try:
        merged = apply_preset(merged)
        return RunConfig.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None
    except (KeyError, ValueError) as error:
        raise ConfigError(f"{source}: {error}") from None


def read_config_file(path: str | Path) -> dict:
    """The mapping a YAML config file holds; ConfigError when it is missing, not YAML or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file '{path}' is not valid YAML: {error}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping at the top level")
    return data


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Load a YAML config file and apply ``key=value`` overrides."""
    return resolve_config(read_config_file(path), overrides, source=str(path))


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved configuration as YAML (atomically)."""
    from atmorep.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


# The paper's configuration: five coupled fields on five model levels at 0.25 degrees.
PAPER_LEVELS = [96.0, 105.0, 114.0, 123.0, 137.0]
PAPER_FIELDS = ["vo", "d", "w", "t", "q"]


def preset_config(name_or_path: str, overrides: Sequence[str] = ()) -> RunConfig:
    """A config from a YAML file, or the paper's field set with the model preset ``name``."""
    if Path(name_or_path).suffix in (".yaml", ".yml") or Path(name_or_path).is_file():
        return load_config(name_or_path, overrides)
    fields = [
        {
            "name": f,
            "levels": PAPER_LEVELS,
            "token_size": [3, 9, 9],
            "coupled_with": [o for o in PAPER_FIELDS if o != f],
        }
        for f in PAPER_FIELDS
    ]
    data = {
        "fields": fields,
        "data": {"box": {"time": 36, "latitude": 54, "longitude": 108}},
        "model": {"preset": name_or_path},
    }
    return resolve_config(data, overrides, source=f"preset '{name_or_path}'")
