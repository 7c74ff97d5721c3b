#!/usr/bin/env bash
# Install atmorep into the active Python environment.
#
# On a machine without a usable PyTorch the CPU build torch==2.13.0 is installed first, so that
# no multi-GB CUDA wheel is pulled in by the dependency resolver. A machine that already has a
# torch (for example a GPU build) keeps it.
#
# Usage: scripts/install.sh [EXTRAS]   (default extras: sim,grib,dev)
set -euo pipefail
extras="${1:-sim,grib,dev}"
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if ! "$python" -c "import torch" >/dev/null 2>&1; then
    echo "installing the CPU build of PyTorch (torch==2.13.0)"
    "$python" -m pip install --quiet "torch==2.13.0"
fi
"$python" -m pip install --quiet -e ".[${extras}]"
