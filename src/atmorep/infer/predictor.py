"""Run a trained multiformer on boxes whose targets are given as a pattern of points.

Every inference task (docs/inference.md) is a masking pattern: which tokens the model predicts
and how their input is given. :class:`BoxPredictor` takes boxes of normalised fields ``[b, L, T, H, W]``
and a target pattern per field (token modes ``[b, L, nT, nH, nW]``), builds the model input exactly as
in training (zeros for ``MASKED`` tokens, the given values for ``COARSENED`` ones, the values for
visible ones), and returns the full boxes ``[b, E, L, T, H, W]`` of every predicted field: the E
ensemble members at target tokens, the input at visible tokens (identical in every member).

Targets are usually given per grid point (a global mask cut into tiles); :func:`token_modes` turns a
point mask into token modes: a token is a target when any of its points is.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from atmorep.batch import Batch, BatchMetadata
from atmorep.config import FieldConfig, RunConfig
from atmorep.data.statistics import Statistics
from atmorep.numerics.modes import COARSENED, MASKED, VISIBLE
from atmorep.numerics.tokens import tokenise, tokenise_batch, untokenise
from atmorep.tasks.masking import apply_target_mask

logger = logging.getLogger(__name__)


def token_modes(points: Tensor, token_size: tuple[int, int, int], levels: int, mode: int) -> Tensor:
    """Token modes from a point mask: ``mode`` where any point of the token is a target.

    Args:
        points: ``[b, T, H, W]`` bool, True at target points (shared by all levels).
        token_size: ``(tt, th, tw)``.
        levels: ``L``, the field's number of levels.
        mode: the mode of target tokens (``MASKED`` or ``COARSENED``).

    Returns:
        ``[b, L, nT, nH, nW]`` int8.
    """
    tokens = tokenise(points[:, None].to(torch.uint8), token_size)  # [b, 1, nT, nH, nW, D]
    chosen = tokens.amax(dim=-1).bool()  # [b, 1, nT, nH, nW]
    modes = torch.where(chosen, mode, VISIBLE).to(torch.int8)
    return modes.expand(-1, levels, -1, -1, -1).contiguous()  # [b, L, nT, nH, nW]


class BoxPredictor:
    """A trained model with its configuration and normalisation statistics, ready for inference.

    Args:
        model: the multiformer (put in eval mode here).
        config: its run configuration (fields, token sizes, box).
        statistics: the normalisation statistics it was trained with.
        device: where the model runs.
        autocast_dtype: autocast dtype on CUDA (``torch.bfloat16``), None for full precision.
    """

    def __init__(self, model: nn.Module, config: RunConfig, statistics: Statistics,
                 device: torch.device | str = "cpu", autocast_dtype: torch.dtype | None = None):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.statistics = statistics
        self.autocast_dtype = autocast_dtype

    @classmethod
    def from_checkpoint(cls, directory: str | Path, device: str = "auto",
                        precision: str = "auto") -> BoxPredictor:
        """Load a checkpoint directory; ``device`` and ``precision`` as in ``train.device/precision``."""
        from atmorep.checkpoint import load_model
        from atmorep.runtime import compute_dtype, detect_device

        torch_device = detect_device(device)
        model, config, statistics = load_model(directory, torch_device)
        dtype, _ = compute_dtype(torch_device, precision)
        return cls(model, config, statistics, torch_device,
                   dtype if dtype != torch.float32 and torch_device.type == "cuda" else None)

    @property
    def fields(self) -> tuple[FieldConfig, ...]:
        return tuple(self.config.fields)

    @property
    def predicted(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.config.fields if f.predicted)

    @property
    def members(self) -> int:
        return int(self.config.model.ensemble_members)

    @property
    def levels(self) -> dict[str, tuple[float, ...]]:
        """The levels of every field, as the model was trained on them."""
        return {f.name: tuple(f.levels) if f.levels is not None else (0.0,) for f in self.config.fields}

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @torch.inference_mode()
    def predict(self, inputs: Mapping[str, Tensor], modes: Mapping[str, Tensor],
                metadata: BatchMetadata, coarsen_factor: int | None = None,
                member: Tensor | None = None) -> dict[str, Tensor]:
        """Predict the target tokens of a batch of boxes.

        Args:
            inputs: field -> ``[b, L, T, H, W]`` normalised values (coarsened where the mode is
                ``COARSENED``; the values at ``MASKED`` tokens are ignored).
            modes: field -> ``[b, L, nT, nH, nW]`` int8 token modes.
            metadata: where and when the boxes lie.
            coarsen_factor: the block length of ``COARSENED`` inputs (default: the fields' training
                factor); the model's first guess of those tokens upsamples their block means.
            member: ``[b]`` int64, the one member to return of each box (a member rollout keeps member
                ``e`` of the window that continues member ``e``); default every member. The model
                still predicts all of them: the tail's spread calibration needs their mean.

        Returns:
            Predicted field -> ``[b, E, L, T, H, W]`` float32, normalised (``E = 1`` with ``member``).
        """
        kept = self.members if member is None else 1
        if not any(bool((m != VISIBLE).any()) for m in modes.values()):
            return self._unchanged(inputs, kept)
        values = {f.name: inputs[f.name].to(self.device, torch.float32) for f in self.fields}
        visible, alpha = tokenise_batch(Batch(values, metadata), self.fields)  # [b, L, nT, nH, nW, D]
        modes = {name: mode.to(self.device) for name, mode in modes.items()}
        tokens = {f.name: torch.where((modes[f.name] == MASKED)[..., None], 0.0, visible[f.name])
                  for f in self.fields}
        with self._autocast():
            output = self.model(tokens, modes, alpha, coarsen_factor=coarsen_factor)
        result = {}
        for name, prediction in output.fields.items():
            f = self.config.field(name)
            full = visible[name][:, None].repeat(1, kept, *([1] * 5))  # [b, E, L, nT, nH, nW, D]
            target = apply_target_mask(modes[name])  # row-major, as the predictions
            members = prediction.members.to(torch.float32)  # [M, E, D]
            if member is not None:  # [M, 1, D]: each target token's member of its box
                chosen = member.to(members.device)[target[0]]
                members = members[torch.arange(members.shape[0], device=members.device), chosen][:, None]
            full[target[0], :, target[1], target[2], target[3], target[4]] = members
            result[name] = untokenise(full, f.token_size)  # [b, E, L, T, H, W]
        return result

    def _unchanged(self, inputs: Mapping[str, Tensor], members: int) -> dict[str, Tensor]:
        """Boxes without targets: the inputs, as ``members`` members ``[b, E, L, T, H, W]``."""
        return {name: inputs[name].to(self.device, torch.float32)[:, None].repeat(1, members, 1, 1, 1, 1)
                for name in self.predicted}


__all__ = ["BoxPredictor", "COARSENED", "MASKED", "token_modes"]
