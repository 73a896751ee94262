#!/usr/bin/env bash
# Maintainers: rewrites requirements/cpu.lock (exact versions with hashes) from the packages installed in .venv (or $VENV),
# e.g. `VENV=.venv-latest bash scripts/lock.sh` after `bash scripts/check-latest.sh` passed. torch is left out of the lock: the set-up
# installs it first (the CPU build, or FORETHOUGHT_TORCH) and the lock pins everything else.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools/venv"
"$tools/venv/bin/pip" -q install pip-tools
"${VENV:-.venv}/bin/python" -m pip freeze --exclude-editable | grep -v "^forethought" >"$tools/frozen.txt"
echo "setuptools>=68" >"$tools/build.in"
"$tools/venv/bin/pip-compile" -q --generate-hashes --extra dev --unsafe-package torch --strip-extras \
    --no-emit-index-url --no-emit-find-links --no-header \
    -c "$tools/frozen.txt" -o "$tools/cpu.lock" pyproject.toml "$tools/build.in"
"$tools/venv/bin/python" - "$tools/cpu.lock" requirements/cpu.lock <<'PY'
import sys
source, target = sys.argv[1:]
body = open(source).read().split("\n# WARNING: The following packages were not pinned")[0]
lines = [line for line in body.splitlines() if not line.startswith("    #   -c ") and "build.in" not in line]
header = ["# Exact versions (with hashes) that the test suite passes with on CPython 3.11, Linux x86_64.",
          "# Written by scripts/lock.sh; installed by scripts/setup.sh (torch is installed first, apart)."]
open(target, "w").write("\n".join(header + lines).rstrip() + "\n")
PY
echo "wrote requirements/cpu.lock"
