"""Run a test script alone and under ``torchrun --nproc_per_node 2`` (gloo on the CPU), to compare the two."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_alone_and_in_two_processes(script: str, tmp_path: Path, *args: str) -> tuple[Path, Path]:
    """Write ``script`` and run it once alone and once as two processes, each given ``*args`` and its own output
    directory as its last argument; returns those directories ``(single, double)``."""
    path = tmp_path / "script.py"
    path.write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single, double = tmp_path / "single", tmp_path / "double"
    single.mkdir(), double.mkdir()
    subprocess.run([sys.executable, str(path), *args, str(single)], check=True, env=env, timeout=600)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(path), *args, str(double)], check=True, env=env, timeout=600, capture_output=True)
    return single, double
