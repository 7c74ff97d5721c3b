"""Console output (rich): the console commands print to, and one progress bar for the command line,
training and the simulator.

:func:`command_console` is the console of what commands print: where the output is not a terminal
(a log, a pipe) rich would assume 80 columns and cut wide tables to ``0.0…``; it is made wide enough
there that tables keep their natural width.

:class:`ProgressBar` draws a description, the bar, the amount done (``done/total`` or a format of
its own), elapsed and remaining time and optional live numbers; :func:`progress_bar` turns it into
the plain ``update(done, total)`` callback that library functions take.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# The width of output that is not a terminal: tables render at their natural width up to this.
LOG_WIDTH = 240


def command_console(stderr: bool = False) -> Console:
    """Rich's console for a command's output, on standard output (or error).

    At a terminal it takes the terminal's width; elsewhere ``COLUMNS`` when set, else
    :data:`LOG_WIDTH`, so that a table printed into a log is not cut to 80 columns.
    """
    console = Console(stderr=stderr)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = LOG_WIDTH
    return console


class ProgressBar:
    """A progress bar.

    Args:
        description: the text before the bar.
        total: the amount of work (None: unknown until the first update).
        completed: the amount already done.
        console: where to draw (default: rich's console).
        show: draw at all.
        amount: a format of the amount done, e.g. ``"{task.completed:.1f}/{task.total:.1f} d"``
            (default: ``done/total`` as integers).
        numbers: a format of live numbers after the times, e.g. ``"loss {task.fields[loss]:.4f}"``,
            whose fields start as ``fields``.
    """

    def __init__(self, description: str, total: float | None = None, completed: float = 0, *,
                 console: Console | None = None, show: bool = True, amount: str | None = None,
                 numbers: str | None = None, **fields: float) -> None:
        columns: list[ProgressColumn] = [TextColumn(description), BarColumn(),
                                         TextColumn(amount) if amount else MofNCompleteColumn(),
                                         TimeElapsedColumn(), TimeRemainingColumn()]
        if numbers:
            columns.append(TextColumn(numbers))
        self._progress = Progress(*columns, console=console, disable=not show)
        self._task = self._progress.add_task(description, total=total, completed=completed, **fields)
        self._started = False

    def update(self, completed: float | None = None, total: float | None = None, **fields: float) -> None:
        """Move the bar to ``completed`` (and ``total``), set live numbers; the first call shows it."""
        if not self._started:
            self._progress.start()
            self._started = True
        self._progress.update(self._task, completed=completed, total=total, **fields)

    def advance(self, amount: float) -> None:
        """Add ``amount`` to what is done."""
        self.update(completed=self._progress.tasks[0].completed + amount)

    def close(self) -> None:
        self._progress.stop()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def progress_bar(description: str, console: Console | None = None,
                 show: bool = True) -> Iterator[Callable[[int, int], None]]:
    """Yield ``update(done, total)``, which moves a bar of ``total`` items to ``done``.

    The bar appears at the first update, so an error raised before any work prints alone.
    """
    with ProgressBar(description, console=console, show=show) as bar:
        yield lambda done, total: bar.update(done, total)
