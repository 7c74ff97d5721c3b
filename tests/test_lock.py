"""The tested lock (lock/*.txt): it pins every dependency pyproject.toml names, at a version inside
pyproject's bounds, and the install keeps a machine's own PyTorch out of it."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
LOCKS = sorted((ROOT / "lock").glob("*.txt"))


def _lock_module():
    spec = importlib.util.spec_from_file_location("lock_script", ROOT / "scripts" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


lock = _lock_module()


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].values()
    listed = [*project["dependencies"], *(text for group in extras for text in group)]
    return [Requirement(text) for text in listed]


def test_there_is_a_lock_for_the_interpreter_ci_runs():
    assert (ROOT / "lock" / "cpython3.11-linux-x86_64.txt") in LOCKS


@pytest.mark.parametrize("path", LOCKS, ids=lambda path: path.name)
def test_lock_pins_every_dependency_within_its_bounds(path):
    pins = lock.parse_lock(path.read_text())
    missing = sorted({r.name for r in _requirements() if lock.canonical(r.name) not in pins})
    assert not missing, f"{path.name} lacks {missing}: run make lock"
    outside = [f"{r.name}=={pins[lock.canonical(r.name)]} (wants {r.specifier})" for r in _requirements()
               if not r.specifier.contains(Version(pins[lock.canonical(r.name)]), prereleases=True)]
    assert not outside, f"{path.name} pins versions pyproject.toml excludes: {outside}; run make lock"


@pytest.mark.parametrize("path", LOCKS, ids=lambda path: path.name)
def test_lock_names_each_package_once_and_torch_as_the_cpu_build(path):
    names = [re.split("==", line)[0] for line in path.read_text().splitlines() if line and line[0] != "#"]
    canonical = [lock.canonical(name) for name in names]
    assert len(canonical) == len(set(canonical))
    pins = lock.parse_lock(path.read_text())
    assert pins["torch"].endswith("+cpu")
    assert not any(lock.TORCH_COMPANIONS.match(name) for name in pins)  # no CUDA runtime packages


def test_lock_name_describes_this_interpreter():
    name = lock.lock_name()
    assert name == f"cpython{sys.version_info.major}.{sys.version_info.minor}-{sys.platform}-" \
                   f"{name.rsplit('-', 1)[1]}"
    assert name.endswith(".txt")


def test_parse_lock_rejects_lines_that_are_not_exact_pins():
    assert lock.parse_lock("# header\n\nNumPy==2.4.6  # comment\nzarr_python==3.1\n") == {
        "numpy": "2.4.6", "zarr-python": "3.1"}
    for line in ("numpy>=2", "numpy", "-e .", "torch @ file:///wheels/torch.whl"):
        with pytest.raises(ValueError, match="line 1: .* is not a pin NAME==VERSION"):
            lock.parse_lock(line)


def test_constraints_keep_the_lock_whole_without_a_torch():
    text = "numpy==2.4.6\ntorch==2.13.0+cpu\nsympy==1.14.0\n"
    assert lock.constraints(text, keep_installed_torch=False) == text


def test_constraints_leave_out_an_installed_torch_and_what_it_requires(monkeypatch):
    requires = {"torch": ["sympy>=1.13", "filelock", "nvidia-cublas-cu12==12.8; platform_system == 'Linux'",
                          "opt-einsum>=3.3; extra == 'opt-einsum'"],
                "sympy": ["mpmath<1.4,>=1.1.0"], "mpmath": [], "filelock": []}

    def fake_requires(name):
        if name not in requires:
            raise lock.metadata.PackageNotFoundError(name)
        return requires[name]

    monkeypatch.setattr(lock.metadata, "requires", fake_requires)
    text = ("# header\nfilelock==3.0\nmpmath==1.3.0\nnumpy==2.4.6\nopt-einsum==3.4\nsympy==1.14.0\n"
            "torch==2.13.0+cpu\ntriton==3.1\n")
    assert lock.constraints(text, keep_installed_torch=True) == "# header\nnumpy==2.4.6\nopt-einsum==3.4\n"


def test_constraints_command_writes_the_filtered_lock(tmp_path):
    source = tmp_path / "lock.txt"
    source.write_text("numpy==2.4.6\n")
    out = tmp_path / "constraints.txt"
    assert lock.main(["constraints", str(source), str(out)]) == 0
    assert lock.parse_lock(out.read_text())["numpy"] == "2.4.6"
    source.write_text("numpy>=2\n")
    assert lock.main(["check", str(source)]) == 2
    assert lock.main(["bogus"]) == 2
