#!/usr/bin/env bash
# Creates .venv and installs forethought with its dev extras. Idempotent: a second run is quick.
#
# By default every package but torch comes from requirements/cpu.lock (exact versions, hash-checked): the set
# the test suite passes with. torch is installed first: the CPU build without an NVIDIA GPU, or the
# requirement in FORETHOUGHT_TORCH. FORETHOUGHT_LATEST=1 installs the newest versions within pyproject's
# ranges instead (see scripts/check-latest.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
LOCK=requirements/cpu.lock
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
if [ "${FORETHOUGHT_LATEST:-0}" = 1 ]; then
    rm -f .venv/.installed-lock
    $PIP install --upgrade -e ".[dev]"
    exit 0
fi
if ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "setup: $LOCK is for CPython 3.11; installing the newest versions within pyproject's ranges instead" >&2
    $PIP install -e ".[dev]"
    exit 0
fi
stamp=$(sha256sum "$LOCK" pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.installed-lock 2>/dev/null)" != "$stamp" ]; then
    $PIP install --require-hashes --no-deps -r "$LOCK"
    $PIP install --no-deps --no-build-isolation -e .
    echo "$stamp" >.venv/.installed-lock
fi
