"""``python -m atmorep`` is the command line, for machines where the script is not on PATH."""

from __future__ import annotations

import subprocess
import sys


def test_python_dash_m_runs_the_command_line():
    result = subprocess.run([sys.executable, "-m", "atmorep", "data", "info", "missing.zarr"],
                            capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "missing.zarr" in result.stderr and "Traceback" not in result.stderr
    help_text = subprocess.run([sys.executable, "-m", "atmorep", "--help"], capture_output=True, text=True,
                               check=True).stdout
    assert "Usage: atmorep" in help_text and "quickstart" in help_text
