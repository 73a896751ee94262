#!/usr/bin/env bash
# Sets up forethought and runs its checks offline: ruff, then the whole test suite, notebooks included.
# Arguments are passed to pytest instead of the default selection, e.g. `bash scripts/test.sh -m "not slow" tests`.
# FORETHOUGHT_TEST_DEVICE=cuda (passed on to pytest, like `--device cuda`) runs the suite with its models on a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg
.venv/bin/ruff check forethought tests benchmarks
if [ $# -eq 0 ]; then
    set -- --doctest-modules forethought tests notebooks
fi
# a notebook cell may take up to 15 minutes on a busy machine (each notebook takes about 2 minutes alone)
.venv/bin/python -m pytest --nbmake --nbmake-timeout=900 "$@"
