#!/usr/bin/env bash
# The GPU check: in at most 9 minutes on one GPU (sized for an H200), write ONE JSON file with, in this order (the
# most valuable first, for a short GPU slot):
#   * environment: the device name and the torch / CUDA / library versions;
#   * commands: every `forethought` command at smoke size with --device cuda (exit code, seconds, error line);
#   * probe_sweep: a probe sweep over 200 k tokens of a 12-layer d_model=768 random-init model (tokens/s, memory);
#   * suite: the test suite on CUDA (FORETHOUGHT_TEST_DEVICE=cuda; pytest-xdist over the cores and pytest-timeout
#     where installed): passed / failed / errors / skipped and the failing tests with their last error line;
#   * myopic_step: myopic/vanilla training-step time and peak CUDA memory, GPT-2-small and Llama-3.2-1B shapes;
#   * synthetic: up to 2 minutes of `forethought synthetic --preset paper` (steps/s, losses).
# Each part has its own time budget, and a part that fails or runs out of time is recorded with its error without
# losing the others (benchmarks/gpu_check.py). Beside the JSON: commands.log and suite_failures.txt.
#
# Usage, on a machine with the package registry (once; the folder is gitignored):
#     bash benchmarks/prepare_gpu_wheels.sh             # wheels a CUDA PyTorch image lacks (about 4 MiB)
#     FULL=1 bash benchmarks/prepare_gpu_wheels.sh      # or all of forethought's dependencies but torch (~185 MiB)
# then, with benchmarks/gpu_wheels copied beside this checkout on the GPU machine, offline, from anywhere:
#     bash benchmarks/gpu_check.sh [OUT.json]           # default: $OUT/gpu_check.json; allow it 540 s
# Options:
#     --parts A,B,...    run only these parts (in the order above); default: all
#     --budgets P=S,...  change parts' time budgets in seconds, e.g. --parts suite --budgets suite=480
#     --cpu-smoke        toy sizes on a CPU: checks the plumbing (install, parts, caps, JSON); commands and the
#                        suite (a few quick files) run on the CPU
#     --no-install       use the Python environment as it is (skip the offline install)
#     --total-seconds N  wall-clock cap of the whole script (default 510); the parts share what the install leaves
# Environment: PYTHON (default: the first of python3, python that imports torch), GPU_CHECK_WHEELS (the wheels'
# folder, default benchmarks/gpu_wheels), GPU_CHECK_SITE (where they are installed, default
# /tmp/forethought-gpu-site), GPU_CHECK_TESTS (pytest node ids or files: the suite part runs only these).
#
# The install: every wheel in benchmarks/gpu_wheels goes, without dependency resolution, into a folder put first
# on PYTHONPATH (`pip install --no-index --no-deps --target`), above the machine's own packages; torch and
# everything else come from the machine. (Not a `venv --system-site-packages`: where `python3` is itself a
# virtual environment, as in common CUDA images, a nested venv would not see its packages, torch included.)
# forethought itself is imported from this checkout (PYTHONPATH), so the code measured is the code here.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
repo=$PWD
start=$SECONDS

smoke=() install=1 total=510 out="" parts=() budgets=()
while (($#)); do
    case $1 in
        --cpu-smoke) smoke=(--cpu-smoke) ;;
        --no-install) install=0 ;;
        --total-seconds) total=${2:?--total-seconds needs a number}; shift ;;
        --parts) parts=(--parts "${2:?--parts needs a comma-separated list}"); shift ;;
        --parts=*) parts=(--parts "${1#--parts=}") ;;
        --budgets) budgets=(--budgets "${2:?--budgets needs PART=SECONDS,...}"); shift ;;
        --budgets=*) budgets=(--budgets "${1#--budgets=}") ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        -*) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) out=$1 ;;
    esac
    shift
done
if [[ -z $out ]]; then
    [[ -n ${OUT:-} ]] || { echo "gpu_check.sh: give the JSON path, or set OUT to a folder" >&2; exit 2; }
    out=$OUT/gpu_check.json
fi

python=${PYTHON:-}
if [[ -z $python ]]; then
    for candidate in python3 python; do
        if command -v "$candidate" >/dev/null && "$candidate" -c "import torch" 2>/dev/null; then
            python=$candidate; break
        fi
    done
fi
[[ -n $python ]] || { echo "gpu_check.sh: no python that imports torch (set PYTHON)" >&2; exit 2; }

log=$(mktemp -t gpu-check-setup.XXXXXX.log)
status="skipped (--no-install)"
export PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH}
if ((install)); then
    site=${GPU_CHECK_SITE:-/tmp/forethought-gpu-site}
    wheel_dir=${GPU_CHECK_WHEELS:-benchmarks/gpu_wheels}
    wheels=("$wheel_dir"/*.whl)
    if [[ ! -e ${wheels[0]} ]]; then
        status="no wheels in $wheel_dir (run benchmarks/prepare_gpu_wheels.sh where the registry is)"
    elif timeout 150 "$python" -m pip install --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --disable-pip-version-check --target "$site" "${wheels[@]}" >>"$log" 2>&1; then
        status="installed ${#wheels[@]} wheels into $site"
        export PYTHONPATH=$repo:$site${PYTHONPATH#"$repo"}
    else
        status="pip install failed (exit $?; see log_tail)"
    fi
fi
echo "setup: $status" | tee -a "$log"
"$python" -c "import torch, transformer_lens, forethought.experiments.synthetic" >>"$log" 2>&1 \
    || status="$status; import check failed (see log_tail)"

left=$((total - (SECONDS - start) - 10))
# The driver caps its parts at $left seconds; timeout is the backstop should the driver itself hang.
timeout --kill-after=10 $((left + 5)) env PYTHONUNBUFFERED=1 "$python" benchmarks/gpu_check.py "$out" \
    --total-seconds "$left" --setup-log "$log" --setup-status "$status" --setup-seconds $((SECONDS - start)) \
    "${smoke[@]}" "${parts[@]}" "${budgets[@]}"
code=$?
echo "gpu_check.sh: exit $code after $((SECONDS - start)) s; JSON: $out"
exit $code
