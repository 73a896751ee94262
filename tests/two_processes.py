"""Run a test script alone and under ``torchrun --nproc_per_node 2`` (gloo on the CPU), to compare the two.

Both runs keep their output: when one fails, the test fails with the tail of what the processes printed (each
child's traceback, torchrun's summary), not a bare ``CalledProcessError``. The two processes meet over the loopback
interface only (the rendezvous store on a port the kernel assigns, gloo on ``lo``), so no host-name lookup and no
fixed port is involved. A run that fails while the processes are still finding each other (an address in use, a
connection refused or timed out before training starts, as on a machine under load) is started once more, and the
first attempt's output is printed; any other failure fails the test at once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

#: What a run that never got to the script's work prints: the processes could not connect.
_RENDEZVOUS_FAILURE = re.compile(r"EADDRINUSE|Address already in use|RendezvousConnectionError|RendezvousTimeoutError"
                                 r"|DistNetworkError|Connection refused|Connection reset by peer|Socket Timeout")


def _run(command: list[str], env: dict[str, str], what: str) -> tuple[str | None, str]:
    """Run ``command``; ``(None, output)`` when it succeeds, else ``(report, output)``."""
    process = subprocess.run(command, env=env, timeout=600, capture_output=True, text=True)
    output = process.stdout + process.stderr
    if not process.returncode:
        return None, output
    lines = output.splitlines()
    errors = [line for line in lines if re.match(r"\w*(Error|Exception)\b.*: ", line) and "ChildFailed" not in line]
    cause = f" ({errors[0].strip()[:300]})" if errors else ""
    tail = "\n".join(lines[-80:])
    return (f"{what} exited with status {process.returncode}{cause}: {' '.join(command)}\n"
            f"--- its output, last 80 lines (each child's traceback, torchrun's summary) ---\n{tail}"), output


def run_alone_and_in_two_processes(script: str, tmp_path: Path, *args: str) -> tuple[Path, Path]:
    """Write ``script`` and run it once alone and once as two processes, each given ``*args`` and its own output
    directory as its last argument; returns those directories ``(single, double)``."""
    path = tmp_path / "script.py"
    path.write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_PORT"):
        env.pop(name, None)  # this test's own process is no member of a run
    single, double = tmp_path / "single", tmp_path / "double"
    single.mkdir(), double.mkdir()
    failure, _ = _run([sys.executable, str(path), *args, str(single)], env, "the single process")
    if failure:
        pytest.fail(failure, pytrace=False)
    for attempt in (1, 2):
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                    "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0", "--rdzv-id", f"{uuid.uuid4()}",
                    "--local-addr", "127.0.0.1", "--max-restarts", "0", str(path), *args, str(double)]
        failure, output = _run(torchrun, env, "torchrun")
        if failure is None:
            return single, double
        if attempt == 1 and _RENDEZVOUS_FAILURE.search(output):
            print(f"the two processes did not connect; trying once more.\n{failure}", file=sys.stderr)
            continue
        pytest.fail(failure, pytrace=False)
    raise AssertionError("unreachable")
