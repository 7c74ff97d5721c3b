#!/usr/bin/env bash
# Refresh the tested lock (`make lock`): resolve the whole environment anew from pyproject.toml's
# version bounds in an empty virtual environment, CPU build of PyTorch, all extras, and write its
# exact versions to lock/<interpreter>-<platform>.txt. Then run `make test`: CI installs from the
# lock, so a lock lands only with a suite that passed on it.
#
# Usage: scripts/make_lock.sh     (PYTHON picks the interpreter; default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" -m venv "$work/venv"
venv_python="$work/venv/bin/python"
name=$("$venv_python" scripts/lock.py name)
echo "resolving the environment for $name in an empty virtual environment"
"$venv_python" -m pip install --quiet "torch==2.13.0"
"$venv_python" -m pip install --quiet -e ".[sim,grib,hybrid,dev]"

{
    echo "# The tested environment of atmorep: pip constraints, used by scripts/install.sh."
    echo "# Interpreter and platform: ${name%.txt}; PyTorch CPU build; extras sim,grib,hybrid,dev."
    echo "# Made by 'make lock' on $(date -u +%Y-%m-%d); see docs/install.md before editing."
    "$venv_python" -m pip freeze --exclude-editable | LC_ALL=C sort -f
} > "$work/lock.txt"
"$venv_python" scripts/lock.py check "$work/lock.txt"
mkdir -p lock
cp "$work/lock.txt" "lock/.$name.new"
mv "lock/.$name.new" "lock/$name"
echo "wrote lock/$name ($(grep -c '==' "lock/$name") packages); now run: make test"
