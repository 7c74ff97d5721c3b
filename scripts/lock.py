"""The tested lock of atmorep's environment: which file fits this interpreter, and its constraints.

A lock is a pip constraints file of exact versions, one per interpreter and platform, named
``lock/cpython3.11-linux-x86_64.txt`` (`lock_name`). `scripts/install.sh` passes it to pip as
``-c``, so an install resolves to exactly the versions the test suite passed with; `make lock`
(`scripts/make_lock.sh`) refreshes it.

A machine that already has a PyTorch (a GPU build, say) keeps it: `constraints` then leaves out
torch and every package that torch requires, since the machine's torch may need other versions of
them than the CPU build that was locked.

Usage (run by the interpreter that is installed into):
    python scripts/lock.py name                  print this interpreter's lock file name
    python scripts/lock.py constraints LOCK OUT  write LOCK's constraints for this machine to OUT
    python scripts/lock.py check LOCK            fail unless every line of LOCK is NAME==VERSION
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import platform
import re
import sys
import tempfile
from pathlib import Path

# What a CUDA build of torch brings along besides its declared requirements' names.
TORCH_COMPANIONS = re.compile(r"^(nvidia-.*|triton|pytorch-triton.*|cuda-.*)$")


def lock_name() -> str:
    """The lock file name for this interpreter: implementation, minor version, OS and machine."""
    implementation = sys.implementation.name
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return f"{implementation}{version}-{sys.platform}-{platform.machine().lower()}.txt"


def canonical(name: str) -> str:
    """A distribution name as pip compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> dict[str, str]:
    """The pins of a lock file: canonical name -> exact version; comments and blanks skipped."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if match is None:
            raise ValueError(f"line {number}: {raw!r} is not a pin NAME==VERSION")
        pins[canonical(match.group(1))] = match.group(2)
    return pins


def requirement_names(distribution: str) -> set[str]:
    """The installed distribution and all it requires, transitively (canonical names)."""
    seen: set[str] = set()
    todo = [canonical(distribution)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for requirement in requires:
            if "extra ==" in requirement:
                continue
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
            if match:
                todo.append(canonical(match.group(1)))
    return seen


def installed_torch() -> bool:
    try:
        metadata.version("torch")
    except metadata.PackageNotFoundError:
        return False
    return True


def constraints(lock_text: str, keep_installed_torch: bool) -> str:
    """The lock's lines for this machine: without torch and its requirements if torch is kept."""
    if not keep_installed_torch:
        return lock_text
    dropped = requirement_names("torch")
    lines = []
    for raw in lock_text.splitlines():
        line = raw.split("#", 1)[0].strip()
        name = canonical(line.split("==", 1)[0]) if line else ""
        if name and (name in dropped or TORCH_COMPANIONS.match(name)):
            continue
        lines.append(raw)
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temporary, path)


def main(argv: list[str]) -> int:
    if argv[:1] == ["name"] and len(argv) == 1:
        print(lock_name())
        return 0
    if (argv[:1] == ["constraints"] and len(argv) == 3) or (argv[:1] == ["check"] and len(argv) == 2):
        lock_path = Path(argv[1])
        text = lock_path.read_text()
        try:
            parse_lock(text)
        except ValueError as error:
            print(f"error: {lock_path}: {error}", file=sys.stderr)
            return 2
        if argv[0] == "constraints":
            write_atomic(Path(argv[2]), constraints(text, keep_installed_torch=installed_torch()))
        return 0
    print(__doc__.split("Usage", 1)[1].strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
