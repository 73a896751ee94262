#!/usr/bin/env bash
# Sets up forethought and runs the whole test suite offline, notebooks included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg
if [ $# -eq 0 ]; then
    set -- --doctest-modules forethought tests notebooks
fi
.venv/bin/python -m pytest --nbmake "$@"
