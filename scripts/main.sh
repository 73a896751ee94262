#!/usr/bin/env bash
# Sets up forethought and runs its main job offline on the CPU: the synthetic pre-caching experiment.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
# --resume: a rerun reuses the finished training in results/synthetic (and continues an interrupted one)
.venv/bin/forethought synthetic --preset cpu --out results/synthetic --resume "$@"
