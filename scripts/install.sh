#!/usr/bin/env bash
# Install atmorep into the active Python environment, at the versions the test suite passed with.
#
# The tested lock for this interpreter and platform (lock/cpython3.11-linux-x86_64.txt, say) is
# given to pip as constraints, so every package, direct or not, gets the version that was tested.
# Where no lock fits the interpreter, the install resolves from pyproject.toml's version bounds
# and says so.
#
# On a machine without a usable PyTorch the CPU build torch==2.13.0 is installed first, so that
# no multi-GB CUDA wheel is pulled in by the dependency resolver. A machine that already has a
# torch (for example a GPU build) keeps it, and the lock's pins of torch and of what torch
# requires are left out.
#
# Usage: scripts/install.sh [EXTRAS]   (default extras: sim,grib,hybrid,dev)
set -euo pipefail
extras="${1:-sim,grib,hybrid,dev}"
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

lock="lock/$("$python" scripts/lock.py name)"
constraints=()
if [ -f "$lock" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    "$python" scripts/lock.py constraints "$lock" "$work/constraints.txt"
    constraints=(-c "$work/constraints.txt")
    echo "installing the tested versions of $lock"
else
    echo "no tested lock for this interpreter ($lock); installing from pyproject.toml's version bounds"
fi

if ! "$python" -c "import torch" >/dev/null 2>&1; then
    echo "installing the CPU build of PyTorch (torch==2.13.0)"
    "$python" -m pip install --quiet "${constraints[@]}" "torch==2.13.0"
fi
"$python" -m pip install --quiet "${constraints[@]}" -e ".[${extras}]"
