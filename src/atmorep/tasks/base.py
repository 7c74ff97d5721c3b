"""What a task is: one object that says which tokens are targets in training, where its window lies at
inference, what its targets are first guessed from, which baselines it is scored against and which
options and output attributes it has.

Training masks a box with :meth:`Task.select` (a bool over the tokens, see :mod:`atmorep.tasks.masking`);
inference places the task's window around a reference time with :meth:`Task.layout` and hides
:meth:`Task.target_points` of the domain; evaluation scores a prediction store against the baselines
named in :attr:`Task.baselines` (built in :mod:`atmorep.evaluate.task_baselines`). Every task is one
module of this package, registered by name in :mod:`atmorep.tasks.registry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import Tensor

from atmorep.config import FieldConfig, RunConfig
from atmorep.errors import AtmorepError, DataError
from atmorep.numerics.modes import MASKED
from atmorep.numerics.tokens import token_grid

if TYPE_CHECKING:  # pragma: no cover
    from atmorep.tasks.masking import MaskedField

Shape5 = tuple[int, int, int, int, int]  # (B, L, nT, nH, nW)


class MaskingError(AtmorepError, ValueError):
    """A masking task, its options or the tokens given to it are invalid."""


@dataclass(frozen=True)
class CaseLayout:
    """How a task places its box window around a reference time.

    Attributes:
        task: the task name.
        window: ``T``, box steps.
        reference: the window step of the reference time.
        predicted: the window steps written out (their offsets from ``reference`` are the output's
            ``prediction_timedelta`` in box steps).
        mode: the token mode of targets (``MASKED``, or ``COARSENED`` for downscaling).
        read_steps: the window steps read from the store (a forecast reads up to its reference only,
            it never sees its targets; other tasks read the whole window).
        with_mask: whether the task hides points of given steps, so that its output comes with the
            point mask of what was predicted.
    """

    task: str
    window: int
    reference: int
    predicted: tuple[int, ...]
    mode: int = MASKED
    read_steps: int | None = None
    with_mask: bool = False

    def __post_init__(self) -> None:
        if self.read_steps is None:
            object.__setattr__(self, "read_steps", self.window)

    @property
    def offsets(self) -> np.ndarray:
        """``[P]`` int64: offsets of the predicted steps from the reference, in box steps."""
        return np.asarray(self.predicted, dtype=np.int64) - self.reference

    @property
    def steps_per_pass(self) -> int:
        """Steps predicted by one model pass (a rollout advances by as many)."""
        return len(self.predicted)

    def time_targets(self) -> np.ndarray:
        """``[T]`` bool: the steps whose points are all targets."""
        steps = np.zeros(self.window, dtype=bool)
        steps[list(self.predicted)] = True
        return steps


def time_tokens(config: RunConfig) -> int:
    """The fewest time tokens any field has in a box."""
    return min(token_grid(config.data.box.shape, f.token_size, f.name)[0] for f in config.fields)


def time_token_size(config: RunConfig) -> int:
    """The time token length ``tt`` shared by all fields (DataError if they differ)."""
    sizes = {f.token_size[0] for f in config.fields}
    if len(sizes) != 1:
        raise DataError(f"inference needs one time token length for all fields, the checkpoint's fields have "
                        f"{ {f.name: f.token_size[0] for f in config.fields} }")
    return sizes.pop()


def time_selection(shape: Shape5, times, device: torch.device) -> Tensor:
    """``[B, L, nT, nH, nW]`` bool, True at the time tokens ``times``."""
    chosen = torch.zeros(shape, dtype=torch.bool, device=device)
    chosen[:, :, list(times)] = True
    return chosen


class Task(ABC):
    """A task. Subclasses are frozen dataclasses whose fields are the task's training options.

    Class attributes:
        name: the registry name.
        mode: the mode of target tokens (``None``: drawn per token from the field's rates, BERT).
        guess_kind: the kind of first guess its targets get (:mod:`atmorep.numerics.first_guess`),
            whose spread factors it calibrates; None for tasks that are not calibrated.
        baselines: the reference methods its predictions are scored against, by builder name.
        history: those of ``baselines`` that need truth at steps besides the cases' own.
        required_attrs: the prediction attributes its baselines need.
        options: the inference options it takes (``lead_hours``, ``infill_region``, ...).
        required_options: the inference options it cannot do without.
        output_attrs: the resolved options written as attributes of its predictions.
        with_mask: its predictions hide points of given steps and carry the point mask.
        rolls_out: leads past the box are reached by feeding predictions back (forecast).
        inference: whether it exists at inference (BERT is a training task only).
        finer_grids: it may run on a grid finer than the model's (zero-shot downscaling).
        validated_when_trained: validation scores it whenever training draws it (tasks that only make
            sense with their own data, model correction), beside the fixed validation tasks.
    """

    name: ClassVar[str]
    mode: ClassVar[int | None] = MASKED
    guess_kind: ClassVar[int | None] = None
    baselines: ClassVar[tuple[str, ...]] = ()
    history: ClassVar[tuple[str, ...]] = ()
    required_attrs: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[tuple[str, ...]] = ()
    required_options: ClassVar[tuple[str, ...]] = ()
    output_attrs: ClassVar[tuple[str, ...]] = ()
    with_mask: ClassVar[bool] = False
    rolls_out: ClassVar[bool] = False
    inference: ClassVar[bool] = True
    finer_grids: ClassVar[bool] = False
    validated_when_trained: ClassVar[bool] = False

    # ------------------------------------------------------------------------------------ training

    @abstractmethod
    def select(self, shape: Shape5, generator: torch.Generator, field: FieldConfig) -> Tensor:
        """``[B, L, nT, nH, nW]`` bool of the tokens to predict."""

    def misfit(self, config: RunConfig) -> str | None:
        """Why a box of ``config`` cannot hold the task, or None when it can."""
        return None

    def validation_references(self, field: MaskedField, time_token: int) -> dict[str, Tensor]:
        """Task-specific reference predictions ``[M, D]`` of the target tokens, scored in validation."""
        return {}

    # ----------------------------------------------------------------------------------- inference

    def layout(self, config: RunConfig) -> CaseLayout:
        """The window layout for the model of ``config``: by default every step is predicted, the
        reference time is the window start."""
        window = config.data.box.shape[0]
        mode = MASKED if self.mode is None else self.mode
        return CaseLayout(self.name, window, 0, tuple(range(window)), mode, with_mask=self.with_mask)

    def target_points(self, layout: CaseLayout, grid: tuple[int, int], *, region: np.ndarray | None = None,
                      ratio: float = 0.5, token_size: tuple[int, int, int] = (1, 1, 1),
                      generator: torch.Generator | None = None) -> Tensor:
        """The point mask ``[T, H, W]`` bool of one case on a domain of ``grid = (H, W)`` points; by
        default every point of the predicted steps.

        Args:
            layout: the task's window layout.
            grid: the domain's shape.
            region: ``[H, W]`` bool, a hidden region (infill).
            ratio: a hidden fraction of blocks (reconstruct).
            token_size: ``(tt, th, tw)``, the size of the blocks reconstruct hides (a token).
            generator: a random stream (reconstruct).
        """
        h, w = grid
        steps = torch.as_tensor(layout.time_targets())
        return steps[:, None, None].expand(layout.window, h, w).clone()

    def model_input(self, window: Tensor, coarsen_factor: int) -> Tensor:
        """What the model is given of a window ``[..., H, W]`` (the window itself by default)."""
        return window

    def pick(self, options: dict) -> dict:
        """The entries of ``options`` that this task takes (the others dropped)."""
        return {key: value for key, value in options.items() if key in self.options}
