"""The layers of the package point down: the import-linter contract of ``pyproject.toml`` holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_layer_contract_is_kept():
    pytest.importorskip("importlinter.cli")
    # in a process of its own: import-linter reconfigures logging, which would hide later tests' records
    code = ("from importlinter.cli import lint_imports; "
            "raise SystemExit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_contract_names_every_package_and_top_level_module():
    import tomllib

    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    named = {name.strip() for layer in contract["layers"] for name in layer.split("|")}
    package = ROOT / "src" / "atmorep"
    present = {f"atmorep.{path.stem}" for path in package.glob("*.py") if path.stem != "__init__"}
    present |= {f"atmorep.{path.name}" for path in package.iterdir() if (path / "__init__.py").is_file()}
    assert named == present
