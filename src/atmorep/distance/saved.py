"""A saved distance model and the API that uses it: :func:`load_distance`, :func:`random_distance`,
:class:`DistanceModel`.

A distance model is a directory (``run_dir/model`` of ``atmorep distance train``):

=========================  ==============================================================================
``model.safetensors``      the lag classifier's weights (``encoder.*``: the encoder, ``head.*``: the head)
``config.yaml``            the resolved training configuration
``statistics.json``        the normalisation: per channel field, level, mean and scale (channel units)
``calibration.safetensors``  ``first`` and ``second`` ``[N, C, H, W]``: lag-1 pairs (physical units) on which
                           the distance's unit was measured (and a random control's is measured)
``meta.json``              format, version, channels, patch, lags, step hours, sizes, lag-1 distance,
                           validation scores; written last (a directory without it is incomplete)
=========================  ==============================================================================

The distance between two states ``a``, ``b`` (physical values ``[B, C, H, W]``) is

    d(a, b) = mean over (F, h, w) of (phi(a) - phi(b))^2 / d1

with ``phi`` the encoder's last-stage features of the log-normalised input and ``d1`` the mean of that
mean squared feature difference over the calibration pairs (states one lag step apart, 3 h by default):
a distance of 1 is the typical distance of two states one step apart, as in AtmoDist. It is
differentiable in ``a`` and ``b``; the weights are frozen (``requires_grad`` False, evaluation mode).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from atmorep.checkpoint import CheckpointError, load_weights
from atmorep.distance.network import EncoderSpec, LagClassifier, log_normalise
from atmorep.errors import DataError
from atmorep.io import atomic_directory

FORMAT, VERSION = "atmorep-distance", 1
WEIGHTS, CONFIG, STATISTICS, CALIBRATION, META = (
    "model.safetensors", "config.yaml", "statistics.json", "calibration.safetensors", "meta.json")
MODEL_DIR = "model"  # the distance model of a run: run_dir / MODEL_DIR


class DistanceModel:
    """A frozen encoder with its normalisation: features of and distances between atmospheric states.

    Args:
        classifier: the lag classifier (its encoder gives the features).
        channels: ``(field, level)`` of each input channel, in order.
        mean, scale: ``[C]`` normalisation constants in the channels' units.
        lag1_distance: d1, the mean raw distance of the calibration pairs.
        meta: the description (``meta.json``).
        calibration: ``(first, second)`` lag-1 pairs ``[N, C, H, W]`` in physical units.

    Attributes:
        encoder: the frozen encoder (``nn.Module``), normalised ``[B, C, H, W]`` -> ``[B, F, h, w]``.
        channels: list of ``(field, level)``.
        lag1_distance: d1, the unit of :meth:`distance` in raw mean squared feature differences.
        meta: the description of the model.
    """

    def __init__(self, classifier: LagClassifier, channels: list[tuple[str, float]], mean: torch.Tensor,
                 scale: torch.Tensor, lag1_distance: float, meta: dict,
                 calibration: tuple[torch.Tensor, torch.Tensor]):
        self.classifier = classifier.eval().requires_grad_(False)
        self.channels = [(str(field), float(level)) for field, level in channels]
        self.mean, self.scale = mean.detach().to(torch.float32), scale.detach().to(torch.float32)
        self.lag1_distance = float(lag1_distance)
        self.meta = meta
        self.calibration = calibration

    @property
    def encoder(self) -> torch.nn.Module:
        return self.classifier.encoder

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def to(self, device: torch.device | str) -> DistanceModel:
        """Move the model to ``device`` (in place); returns itself."""
        self.classifier.to(device)
        self.mean, self.scale = self.mean.to(device), self.scale.to(device)
        return self

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Physical values ``[B, C, H, W]`` -> ``sign(x - mean) log(1 + |x - mean| / scale)`` per channel."""
        self._check(x)
        return log_normalise(x, self.mean.to(x.dtype), self.scale.to(x.dtype))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Physical values ``[B, C, H, W]`` -> the encoder's last-stage features ``[B, F, h, w]``
        (``h = H / 2^(S-1)``, ``w = W / 2^(S-1)``, rounded up)."""
        return self.classifier.encoder(self.normalise(x))

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The learned distance ``[B]`` between physical states ``a``, ``b`` ``[B, C, H, W]``, in units of
        the mean distance of states one lag step apart (see the module docstring); symmetric, zero for
        identical inputs, differentiable in both."""
        if a.shape != b.shape:
            raise DataError(f"distance: the two states differ in shape ({tuple(a.shape)} and "
                            f"{tuple(b.shape)})")
        both = self.features(torch.cat([a, b]))  # one pass: [2B, F, h, w]
        first, second = both.chunk(2)
        return (first - second).pow(2).mean(dim=(1, 2, 3)) / self.lag1_distance

    def logits(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """The lag classifier's logits ``[B, K]`` for physical patches ``[B, C, H, W]`` at t and t + lag."""
        return self.classifier(self.normalise(first), self.normalise(second))

    def _check(self, x: torch.Tensor) -> None:
        reduction = self.classifier.encoder.spec.reduction
        if x.ndim != 4 or x.shape[1] != len(self.channels) or min(x.shape[2:]) < reduction:
            labels = ", ".join(f"{field}@{level:g}" for field, level in self.channels)
            raise DataError(f"distance model: expected states [B, {len(self.channels)}, H, W] (channels "
                            f"{labels}, H and W >= {reduction}), got shape {tuple(x.shape)}")


def raw_distance(classifier: LagClassifier, mean: torch.Tensor, scale: torch.Tensor, first: torch.Tensor,
                 second: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Mean squared feature difference ``[N]`` of physical pairs ``[N, C, H, W]`` (no unit applied)."""
    values = []
    with torch.no_grad():
        for start in range(0, first.shape[0], batch):
            a = log_normalise(first[start:start + batch], mean, scale)
            b = log_normalise(second[start:start + batch], mean, scale)
            fa, fb = classifier.encoder(a), classifier.encoder(b)
            values.append((fa - fb).pow(2).mean(dim=(1, 2, 3)))
    return torch.cat(values)


def write_distance(directory: str | Path, classifier: LagClassifier, config: dict, normalisation: dict,
                   calibration: tuple[torch.Tensor, torch.Tensor], meta: dict) -> Path:
    """Write (or atomically replace) a distance model directory.

    Args:
        directory: where.
        classifier: the trained classifier.
        config: the resolved configuration as a plain dict.
        normalisation: ``{"channels": [{"field", "level", "mean", "scale"}, ...]}``.
        calibration: lag-1 pairs ``(first, second)`` ``[N, C, H, W]`` in physical units.
        meta: the description; ``lag1_distance`` is measured here and added.
    """
    directory = Path(directory)
    mean, scale = _constants(normalisation)
    lag1 = float(raw_distance(classifier.eval(), mean, scale, *calibration).mean())
    weights = {name: value.detach().cpu().contiguous().clone()
               for name, value in classifier.state_dict().items()}
    meta = {"format": FORMAT, "version": VERSION, **meta, "lag1_distance": lag1,
            "distance_unit": "mean distance of the calibration pairs (one lag step apart)",
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    with atomic_directory(directory, overwrite=True) as tmp:
        tmp.mkdir(parents=True)
        save_file(weights, str(tmp / WEIGHTS), metadata={"format": FORMAT, "version": str(VERSION)})
        save_file({"first": calibration[0].contiguous(), "second": calibration[1].contiguous()},
                  str(tmp / CALIBRATION))
        (tmp / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
        (tmp / STATISTICS).write_text(json.dumps(normalisation, indent=1))
        (tmp / META).write_text(json.dumps(meta, indent=1))  # last: marks completeness
    return directory


def resolve_distance(path: str | Path) -> Path:
    """A distance model directory given itself or the run directory that holds one."""
    path = Path(path)
    for candidate in (path, path / MODEL_DIR):
        if (candidate / META).is_file():
            return candidate
    raise CheckpointError(f"'{path}' is neither a distance model nor a run directory holding one "
                          f"(no {META} in it or in its {MODEL_DIR}/)")


def load_distance(path: str | Path, device: torch.device | str = "cpu") -> DistanceModel:
    """The distance model saved at ``path`` (its directory, or the run directory holding ``model/``)."""
    directory = resolve_distance(path)
    meta = json.loads((directory / META).read_text())
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"'{directory / META}' does not describe a distance model "
                              f"(format {meta.get('format')!r}, expected {FORMAT!r})")
    if int(meta.get("version", 0)) > VERSION:
        raise CheckpointError(f"{directory}: distance model format version {meta['version']} is newer than "
                              f"this atmorep reads ({VERSION}); upgrade atmorep")
    tensors = {}
    for name in (WEIGHTS, CALIBRATION):
        try:
            tensors[name] = load_file(str(directory / name))
        except (FileNotFoundError, SafetensorError, OSError) as error:
            raise CheckpointError(f"cannot read '{directory / name}': {error}") from None
    normalisation = json.loads((directory / STATISTICS).read_text())
    classifier = _build(meta)
    load_weights(classifier, tensors[WEIGHTS],
                 f"distance model '{directory}': weights do not fit its meta.json")
    mean, scale = _constants(normalisation)
    calibration = (tensors[CALIBRATION]["first"], tensors[CALIBRATION]["second"])
    model = DistanceModel(classifier, _channels(normalisation), mean, scale, meta["lag1_distance"],
                          {**meta, "path": str(directory)}, calibration)
    return model.to(device)


def random_distance(like: DistanceModel, seed: int = 0) -> DistanceModel:
    """The control: ``like``'s architecture and normalisation with random weights.

    The convolutions and linear layers get PyTorch's default initialisation (drawn with ``seed``, the
    global random state untouched); batch norms get unit weights and their running statistics measured
    on ``like``'s calibration pairs, and the unit d1 of the distance is measured on the same pairs, so
    the random distance is on the same scale (1 = the mean distance of lag-1 pairs).
    """
    device = like.device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classifier = _build(like.meta)
    for module in classifier.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_parameters()  # unit weights (the trained blocks start from zero)
            module.momentum = None  # running statistics: the plain average over the calibration batches
    mean, scale = like.mean.cpu(), like.scale.cpu()
    first, second = like.calibration
    with torch.no_grad():
        classifier.train()
        for start in range(0, first.shape[0], 256):
            classifier.encoder(log_normalise(torch.cat([first[start:start + 256], second[start:start + 256]]),
                                             mean, scale))
    lag1 = float(raw_distance(classifier.eval(), mean, scale, first, second).mean())
    meta = {**like.meta, "random_seed": int(seed), "lag1_distance": lag1, "random_of": like.meta.get("path")}
    return DistanceModel(classifier, like.channels, mean, scale, lag1, meta, like.calibration).to(device)


def _build(meta: dict) -> LagClassifier:
    try:
        spec = EncoderSpec.model_validate(meta["network"])
        return LagClassifier(len(meta["channels"]), int(meta["lags"]), spec)
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"distance model meta.json lacks or mangles its sizes: {error}") from None


def _constants(normalisation: dict) -> tuple[torch.Tensor, torch.Tensor]:
    items = normalisation["channels"]
    return (torch.tensor([c["mean"] for c in items], dtype=torch.float32),
            torch.tensor([c["scale"] for c in items], dtype=torch.float32))


def _channels(normalisation: dict) -> list[tuple[str, float]]:
    return [(c["field"], float(c["level"])) for c in normalisation["channels"]]
