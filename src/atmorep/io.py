"""Atomic writes: nothing already written is corrupted by an interrupted write.

Files and directories are written to a temporary sibling path and renamed into place once
complete, so a reader sees either the old complete object or the new complete one. A directory is
written by one process at a time: a second writer of the same path gets a DataError instead of
deleting the first one's work in progress.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from atmorep.errors import DataError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes to ``path`` via a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def temporary_sibling(path: Path, tag: str = "partial") -> Path:
    """The temporary path used while ``path`` is being written (hidden, same directory)."""
    path = Path(path)
    return path.parent / f".{path.name}.{tag}"


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold the advisory lock ``.<name>.lock`` beside ``path`` while the block writes it.

    Raises:
        DataError: another process holds it (is writing ``path``).
    """
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform
        yield
        return
    lock = temporary_sibling(path, "lock")
    busy = DataError(f"'{path}' is being written by another process; wait for it to finish or write "
                     "elsewhere")
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        try:
            if not lock.exists() or os.stat(lock).st_ino != os.fstat(handle.fileno()).st_ino:
                raise busy  # the holder removed the file between our open and our lock
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_directory(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` when the block completes.

    On an exception the temporary directory is removed and ``path`` is left untouched. The block
    holds :func:`exclusive` on ``path``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"'{path}' already exists (pass overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(path):
        tmp = temporary_sibling(path)
        if tmp.exists():  # left by a killed writer: nobody holds the lock
            shutil.rmtree(tmp)
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if path.exists():
            old = temporary_sibling(path, "old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
