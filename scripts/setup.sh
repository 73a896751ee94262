#!/usr/bin/env bash
# Creates .venv and installs forethought with its dev extras. Idempotent: a second run is quick.
# On a machine without an NVIDIA GPU it installs the CPU build of torch first, so that the
# install stays small; set FORETHOUGHT_TORCH to choose another torch requirement.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if [ -n "${FORETHOUGHT_TORCH:-}" ]; then
        $PIP install "$FORETHOUGHT_TORCH"
    elif command -v nvidia-smi >/dev/null 2>&1; then
        $PIP install torch
    else
        $PIP install "torch==2.13.0" || $PIP install torch
    fi
fi
$PIP install -e ".[dev]"
