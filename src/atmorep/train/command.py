"""What the ``atmorep train`` command runs: load the configuration, train, summarise the outcome."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from atmorep.config import load_config
from atmorep.train.loop import TrainResult, train

logger = logging.getLogger(__name__)


def train_command(config_path: str | Path, overrides: Sequence[str] = (),
                  resume: bool = False) -> TrainResult:
    """Load ``config_path`` with ``key=value`` overrides and train (or resume) the run it describes.

    Raises:
        ConfigError: the file, a key or a value is invalid (the message names it).
    """
    config = load_config(config_path, overrides)
    return train(config, resume=resume)


def summarise_result(result: TrainResult) -> str:
    """A few lines on the outcome of a run, for the command line."""
    lines = [f"trained to step {result.step} ({result.stop_reason}); run directory {result.run_dir}"]
    if result.losses:
        lines.append(f"loss: first {result.losses[0]:.4f}, last {result.losses[-1]:.4f} "
                     f"({len(result.losses)} steps in this run)")
    if result.validation:
        skills = [f"{key.removesuffix('/skill')} {value:+.3f}" for key, value in result.validation.items()
                  if key.endswith("/skill")]
        lines.append(f"validation loss {result.validation['loss']:.4f}; skill vs climatology: "
                     + ", ".join(skills))
    if result.checkpoint:
        lines.append(f"checkpoint: {result.checkpoint}")
    return "\n".join(lines)
