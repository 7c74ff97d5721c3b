"""The downscaling tail: from a coarse box's decoder states to its values on a finer grid.

The fine grid is ``f`` times finer along latitude and longitude (T31 -> T63: f = 2); coarse point
``(i, k)`` owns the fine points ``(f i .. f i + f - 1, f k .. f k + f - 1)``, so a coarse token of
``tt x th x tw`` points owns a fine block of ``tt x (f th) x (f tw)`` points. The first guess is the
tensor-product cubic spline of the *whole* coarse field (not of the box), so that it equals the bicubic
baseline exactly and the tail can only add to it. Per token position the tail reads the decoder states
``C`` and the first guess of its fine block, and predicts E members of the block's correction:

    h = MLP([states, guess])                  hidden width ``hidden``
    r_e = h @ W_e + b_e + offset[fine points]  per target and fine point (``offsets``)

``offset`` is a learned map per target on the fine grid, the part of the correction that depends only
on where a point is (the small-scale orography and coastlines the coarse grid smooths away).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from atmorep.data.store import Store
from atmorep.errors import DataError
from atmorep.model.tail import EnsembleTail
from atmorep.numerics.interpolation import spline_weights
from atmorep.numerics.tokens import tokenise, untokenise
from atmorep.tails.base import Tail, TailBatch
from atmorep.tails.coarse import BoxAt, CoarsePeriod, read_target, time_indices
from atmorep.tails.config import Target


def upsample(values: np.ndarray, source: tuple[np.ndarray, np.ndarray], target: tuple[np.ndarray, np.ndarray],
             order: int, periodic: bool) -> np.ndarray:
    """``[..., H, W] -> [..., Hf, Wf]``: the tensor-product spline of ``order`` from the ``(latitude,
    longitude)`` grid ``source`` to ``target`` (periodic in longitude when the grid closes the circle)."""
    rows = spline_weights(source[0], target[0], order)  # [Hf, H]
    columns = spline_weights(source[1], target[1], order, periodic=periodic)  # [Wf, W]
    return np.einsum("yi,...ij,xj->...yx", rows, values, columns, optimize=True).astype(np.float32)


class FinePeriod:
    """The fine store's values of the targets at the coarse period's times, and their first guesses.

    Attributes:
        factor: f, how much finer the grid is.
        truth, guess: ``[K, T, Hf, Wf]`` physical values (guess: the bicubic upsampling of the coarse
            products).
        latitude, longitude: the fine grid.
    """

    def __init__(self, path: str, coarse: CoarsePeriod, targets: Sequence[Target],
                 truth: bool = True) -> None:
        store = Store(path)
        self.latitude = np.asarray(store.latitude, np.float64)
        self.longitude = np.asarray(store.longitude, np.float64)
        self.factor = fine_factor(coarse.shape[1:], (self.latitude.size, self.longitude.size), path)
        source = (coarse.latitude, coarse.longitude)
        self.guess = np.stack([upsample(coarse.products[t.label], source, (self.latitude, self.longitude), 3,
                                        coarse.global_longitude) for t in targets])
        self.truth = None
        if truth:
            index = time_indices(store.time, coarse.time, f"store '{path}'")
            self.truth = np.stack([read_target(store, t, index) for t in targets])
            if not np.isfinite(self.truth).all():
                raise DataError(f"store '{path}': the targets hold NaN in the period")


def fine_factor(coarse: tuple[int, int], fine: tuple[int, int], path: str) -> int:
    """The integer refinement ``f`` with ``fine == f * coarse`` along both axes; DataError otherwise."""
    factor = fine[0] // coarse[0]
    if factor < 2 or fine != (factor * coarse[0], factor * coarse[1]):
        raise DataError(f"store '{path}': its grid {fine[0]} x {fine[1]} is not 2, 3, ... times the "
                        f"coarse grid {coarse[0]} x {coarse[1]} along both axes")
    return factor


class GridPairs:
    """Batches of the downscaling tail: first guesses, truths and fine-grid indices per token position.

    Args:
        coarse: the coarse period.
        fine: its fine counterpart.
        mean, std, scale: ``[K]`` tail units and residual scales (from the fine-tuning period).
    """

    def __init__(self, coarse: CoarsePeriod, fine: FinePeriod, mean: np.ndarray, std: np.ndarray,
                 scale: np.ndarray) -> None:
        self.coarse, self.fine = coarse, fine
        self.mean, self.std, self.scale = (np.asarray(v, np.float32) for v in (mean, std, scale))
        tt, th, tw = coarse.backbone.token_size
        f = fine.factor
        self.token = (tt, f * th, f * tw)
        self.targets = len(self.mean)
        hf, wf = fine.latitude.size, fine.longitude.size
        points = np.arange(self.targets * hf * wf, dtype=np.int64).reshape(self.targets, 1, hf, wf)
        self._points = np.repeat(points, coarse.backbone.box[0], axis=1)  # [K, bt, Hf, Wf]

    @property
    def values(self) -> int:
        """P, the values per token position: every target's fine block."""
        return self.targets * int(np.prod(self.token))

    def _blocks(self, array: np.ndarray, boxes: Sequence[BoxAt], steady: bool = False) -> Tensor:
        """``[K, T, Hf, Wf]`` -> ``[M, K * Q]`` the fine blocks of every token position of the boxes
        (``steady``: ``array`` holds one box length of steps, the same for every box)."""
        bt, bh, bw = self.coarse.backbone.box
        f, wf = self.fine.factor, self.fine.longitude.size
        parts = []
        for b in boxes:
            columns = (f * b.k0 + np.arange(f * bw)) % wf
            t0 = 0 if steady else b.t0
            parts.append(array[:, t0:t0 + bt, f * b.i0:f * (b.i0 + bh)][..., columns])
        blocks = tokenise(torch.from_numpy(np.stack(parts)), self.token)  # [B, K, nT, nH, nW, Q]
        return blocks.permute(0, 2, 3, 4, 1, 5).flatten(4).flatten(0, 3)  # [M, K * Q]

    def _units(self, array: np.ndarray) -> np.ndarray:
        return (array - self.mean[:, None, None, None]) / self.std[:, None, None, None]

    def batch(self, boxes: Sequence[BoxAt], with_truth: bool = True) -> TailBatch:
        k, q = self.targets, int(np.prod(self.token))
        guess = self._blocks(self._units(self.fine.guess), boxes)
        index = self._blocks(self._points, boxes, steady=True)
        target = torch.arange(k).repeat_interleave(q).expand_as(guess)
        scale = torch.from_numpy(self.scale / self.std)[target]
        truth = self._blocks(self._units(self.fine.truth), boxes) if with_truth else None
        return TailBatch(guess.float(), scale.float(), target, truth, {"fine_index": index})

    def mean_residual(self) -> Tensor:
        """``[K * Hf * Wf]`` the mean over the period of ``(truth - guess) / scale`` at every fine point
        (what the offsets start from)."""
        error = (self.fine.truth - self.fine.guess).mean(axis=1) / self.scale[:, None, None]  # [K, Hf, Wf]
        return torch.from_numpy(error.reshape(-1).astype(np.float32))

    def boxes(self, members: Tensor, count: int) -> Tensor:
        """Members ``[M, E, K * Q]`` of ``count`` boxes -> ``[B, K, E, T, f H, f W]``, in the same units
        (differentiable; a truth ``[M, K * Q]`` goes in as ``truth[:, None]``)."""
        nt, nh, nw = self.coarse.backbone.grid
        e = members.shape[1]
        tokens = members.reshape(count, nt, nh, nw, e, self.targets, -1).permute(0, 5, 4, 1, 2, 3, 6)
        values = untokenise(tokens.reshape(count, self.targets * e, nt, nh, nw, -1), self.token)
        return values.reshape(count, self.targets, e, *values.shape[2:])

    def to_grid(self, members: Tensor, boxes: Sequence[BoxAt]) -> np.ndarray:
        """Members ``[M, E, K * Q]`` in tail units -> ``[B, K, E, T, f H, f W]`` physical boxes."""
        values = self.boxes(members, len(boxes)).numpy()
        return values * self.std[None, :, None, None, None, None] + self.mean[None, :, None, None, None, None]


class GridTail(Tail):
    """The downscaling tail (module docstring).

    Args:
        channels: C, the width of the backbone's features.
        values: P = K * Q, the values of a token position's fine blocks.
        targets: K.
        points: ``K * Hf * Wf``, the size of the offset map (0: no offsets).
        members: E.
        hidden: the MLP's width.
    """

    name = "grid"

    def __init__(self, channels: int, values: int, targets: int, points: int, members: int = 8,
                 hidden: int = 256) -> None:
        super().__init__(targets)
        self.trunk = nn.Sequential(nn.Linear(channels + values, hidden), nn.GELU(),
                                   nn.Linear(hidden, hidden), nn.GELU())
        self.head = EnsembleTail(hidden, values, members)
        self.offset = nn.Parameter(torch.zeros(points)) if points else None

    @torch.no_grad()
    def initialise(self, pairs: GridPairs) -> None:
        """The offsets start at the mean correction of each fine point over the fine-tuning period."""
        if self.offset is not None:
            self.offset.copy_(pairs.mean_residual())

    def residuals(self, features: Tensor, batch: TailBatch) -> Tensor:
        states = features.flatten(0, 3)  # [M, C]
        residual = self.head(self.trunk(torch.cat([states, batch.guess], dim=-1)))  # [M, E, P]
        if self.offset is not None:
            residual = residual + self.offset[batch.extra["fine_index"]][:, None]
        return residual
