"""Start-up cost of forethought, as ratios to ``python -c "import torch"`` measured in the same run.

Each command runs in a fresh interpreter, ``--repeats`` times interleaved; the table gives medians. The goals:
``forethought --help``, ``forethought <command> --help`` and an argument error in under 2 s (they import no torch),
``import forethought`` close to ``import torch``.

    python benchmarks/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

PYTHON = sys.executable
COMMANDS = {
    "import torch": [PYTHON, "-c", "import torch"],
    "import forethought": [PYTHON, "-c", "import forethought"],
    "import forethought.probes": [PYTHON, "-c", "import forethought.probes"],
    "forethought --help": [PYTHON, "-m", "forethought.cli", "--help"],
    "forethought --version": [PYTHON, "-m", "forethought.cli", "--version"],
    "forethought train --help": [PYTHON, "-m", "forethought.cli", "train", "--help"],
    "forethought train (argument error)": [PYTHON, "-m", "forethought.cli", "train", "--steps", "x"],
    "forethought synthetic --help": [PYTHON, "-m", "forethought.cli", "synthetic", "--help"],
    "forethought probe-sweep (argument error)": [PYTHON, "-m", "forethought.cli", "probe-sweep", "--run", "r",
                                                 "--out", "o", "--offsets"],
}


def _seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            times[name].append(_seconds(command))
    torch_time = statistics.median(times["import torch"])
    print(f"{'command':<42} {'median s':>9} {'/ import torch':>15}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<42} {median:>9.2f} {median / torch_time:>15.2f}")


if __name__ == "__main__":
    main()
