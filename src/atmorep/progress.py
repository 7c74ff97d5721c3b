"""Progress bars of the command line (rich), as plain callbacks for library functions."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextlib.contextmanager
def progress_bar(description: str, console: Console | None = None,
                 show: bool = True) -> Iterator[Callable[[int, int], None]]:
    """Yield ``update(done, total)``, which moves a bar of ``total`` items to ``done``.

    The bar appears at the first update, so an error raised before any work prints alone.
    """
    columns = (TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    bar = Progress(*columns, console=console, disable=not show)
    task = None

    def update(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task(description, total=total)
        bar.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        bar.stop()
