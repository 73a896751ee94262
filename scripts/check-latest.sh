#!/usr/bin/env bash
# Maintainers: runs the whole test suite against the newest versions that pyproject's ranges allow, in a
# separate environment (.venv-latest), to see whether the lock can move forward (then run scripts/lock.sh
# from that environment). Arguments are passed to pytest, as for scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv-latest/bin/python ] || "$PYTHON" -m venv .venv-latest
PIP=".venv-latest/bin/python -m pip --disable-pip-version-check -q"
.venv-latest/bin/python -c "import torch" 2>/dev/null || $PIP install "${FORETHOUGHT_TORCH:-torch==2.13.0}"
$PIP install --upgrade --upgrade-strategy eager -e ".[dev]"
.venv-latest/bin/python -m pip freeze --exclude-editable
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg
[ $# -gt 0 ] || set -- --doctest-modules forethought tests notebooks
.venv-latest/bin/python -m pytest --nbmake "$@"
