#!/usr/bin/env bash
# Download the wheels that benchmarks/gpu_check.sh installs offline on a GPU machine without a package registry.
#
#     bash benchmarks/prepare_gpu_wheels.sh [DEST]          # default DEST: benchmarks/gpu_wheels (gitignored)
#     FULL=1 bash benchmarks/prepare_gpu_wheels.sh [DEST]   # every dependency but torch's own
#
# Run it on any machine that reaches the registry (no GPU needed); then carry DEST with the working tree to the
# GPU machine. It fetches pinned versions from benchmarks/gpu_requirements.txt (forethought's dependencies and their
# closure at the versions of requirements/cpu.lock, without torch, nvidia-*, triton and torch's own small
# dependencies) as binary wheels for CPython $PY_VERSION on manylinux x86_64, with --no-deps, so no torch wheel is
# ever fetched.
#
# By default only the wheels that a CUDA PyTorch image with the usual scientific stack lacks (one H200 image seen
# holds torch 2.11, transformers 5.17, accelerate, numpy, pandas, pyarrow, scipy, scikit-learn, matplotlib,
# seaborn, tokenizers, safetensors, sentencepiece, jaxtyping, einops, rich, ...): transformer-lens, datasets and
# their missing dependencies, and simple-parsing (the CLI) with docstring-parser, about 4 MiB. FULL=1 fetches the whole list (about 185 MiB: pyarrow, scipy, numpy,
# transformers and pandas are most of it), for a machine with torch alone; too much to carry where a copy of the
# working tree is limited to 64 MiB.
#
# Should the GPU check's import check fail on a package the machine has at an unsuitable version, add it (and what
# it needs) from the list: EXTRA="pyarrow" bash benchmarks/prepare_gpu_wheels.sh.
#
# Settings (environment): FULL (0), EXTRA (names from the list, added to the default), PY_VERSION (3.12),
# PIP (python3 -m pip; any pip >= 22).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-benchmarks/gpu_wheels}
py_version=${PY_VERSION:-3.12}
read -r -a pip <<<"${PIP:-python3 -m pip}"
missing_from_cuda_image="transformer-lens datasets dill multiprocess beartype fancy-einsum typeguard simple-parsing docstring-parser"
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
if [[ ${FULL:-0} == 1 ]]; then
    grep -v '^#' benchmarks/gpu_requirements.txt >"$requirements"
else
    for name in $missing_from_cuda_image ${EXTRA:-}; do
        grep "^$name==" benchmarks/gpu_requirements.txt || { echo "$name is not in gpu_requirements.txt" >&2; exit 2; }
    done >"$requirements"
fi
mkdir -p "$dest"
"${pip[@]}" download --no-deps --only-binary=:all: --implementation cp --python-version "$py_version" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --disable-pip-version-check --dest "$dest" --requirement "$requirements"
echo "$(find "$dest" -name '*.whl' | wc -l) wheels, $(du -sh "$dest" | cut -f1) in $dest"
