"""The pre-trained multiformer a tail sits on: loaded, identified, and run with every token visible.

:meth:`Backbone.features` turns boxes of physical values into one feature vector per token position
``[B, nT, nH, nW, C]``: the decoder states of every predicted field at every level side by side
(``C = sum_f L_f * D``). The backbone's identity is the SHA-256 of its weights file, recorded in a
tail's checkpoint so that a tail is never run on another backbone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from atmorep.batch import Batch, BatchMetadata
from atmorep.checkpoint import WEIGHTS, CheckpointError, load_model, read_meta, resolve_checkpoint
from atmorep.numerics.modes import VISIBLE
from atmorep.numerics.tokens import token_grid, tokenise_batch


def weights_digest(directory: str | Path) -> str:
    """SHA-256 (hex) of a checkpoint's weights file."""
    path = Path(directory) / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"checkpoint file '{path}' is missing")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class Backbone:
    """A multiformer checkpoint ready to give decoder states.

    Args:
        directory: the checkpoint (or a run directory holding one).
        device: where it runs.

    Attributes:
        model, config, statistics: as :func:`atmorep.checkpoint.load_model` returns them.
        digest: SHA-256 of the weights file.
        token_size: ``(tt, th, tw)``, shared by every field (a tail needs one token grid).
    """

    def __init__(self, directory: str | Path, device: torch.device | str = "cpu") -> None:
        self.directory = resolve_checkpoint(directory)
        self.device = torch.device(device)
        self.model, self.config, self.statistics = load_model(self.directory, self.device)
        self.meta = read_meta(self.directory)
        self.digest = weights_digest(self.directory)
        sizes = {tuple(f.token_size) for f in self.config.fields}
        if len(sizes) != 1:
            raise CheckpointError(f"backbone '{self.directory}': a tail needs every field on one token grid, "
                                  f"got token sizes {sorted(sizes)}")
        self.token_size: tuple[int, int, int] = sizes.pop()
        self.box: tuple[int, int, int] = tuple(self.config.data.box.shape)
        self.grid = token_grid(self.box, self.token_size, "backbone")  # (nT, nH, nW)

    @property
    def levels(self) -> dict[str, tuple[float, ...]]:
        return {name: tuple(values) for name, values in self.meta["levels"].items()}

    @property
    def channels(self) -> int:
        """C, the width of a token position's features."""
        dim = self.config.model.dim
        return sum(len(self.levels[name]) * dim for name in self.model.predicted)

    def identity(self) -> dict:
        """What a tail's checkpoint records of its backbone."""
        return {"path": str(self.directory.resolve()), "sha256": self.digest, "levels": self.meta["levels"],
                "box": list(self.box), "token_size": list(self.token_size)}

    def check_identity(self, recorded: Mapping, where: str) -> None:
        """Raise CheckpointError unless ``recorded`` (a tail checkpoint's) names this backbone."""
        if recorded.get("sha256") != self.digest:
            raise CheckpointError(
                f"tail checkpoint '{where}' was fine-tuned on the backbone '{recorded.get('path')}' "
                f"(weights sha256 {str(recorded.get('sha256'))[:12]}), but '{self.directory}' has weights "
                f"sha256 {self.digest[:12]}: give the backbone it was fine-tuned on")

    def normalise(self, values: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
        """Physical ``[B, L, T, H, W]`` per field -> normalised float32 tensors on the device."""
        out = {}
        for name, value in values.items():
            mean, std = self.statistics[name].select(self.levels[name], name)
            scaled = (value - mean[None, :, None, None, None]) / std[None, :, None, None, None]
            out[name] = torch.as_tensor(scaled, dtype=torch.float32, device=self.device)
        return out

    def features(self, values: Mapping[str, np.ndarray], metadata: BatchMetadata) -> Tensor:
        """Decoder states of every token position.

        Args:
            values: backbone field -> ``[B, L, T, H, W]`` physical values.
            metadata: where and when the boxes lie.

        Returns:
            ``[B, nT, nH, nW, C]`` float32 (gradients flow when the backbone is being trained).
        """
        fields = self.normalise(values)
        tokens, alpha = tokenise_batch(Batch(fields, metadata), self.config.fields)
        modes = {name: torch.full(t.shape[:5], VISIBLE, dtype=torch.int8, device=self.device)
                 for name, t in tokens.items()}
        model = self.model
        guesses, kinds = model.guess(tokens, modes)  # every token visible: the inputs, kind "visible"
        decoded = model.decode(model.encode(model.embed(guesses, modes, alpha, kinds)))
        parts = []
        for name in model.predicted:
            state = decoded[name].float()  # [B, N, D], N in (L, nT, nH, nW) order
            b, _, d = state.shape
            state = state.reshape(b, len(self.levels[name]), *self.grid, d)  # [B, L, nT, nH, nW, D]
            parts.append(state.permute(0, 2, 3, 4, 1, 5).reshape(b, *self.grid, -1))  # [B, nT, nH, nW, L*D]
        return torch.cat(parts, dim=-1)
