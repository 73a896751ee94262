"""The GPU check's ``suite`` and ``commands`` parts: the test suite on the device, and every CLI command at smoke size.

* ``suite``: ``python -m pytest --doctest-modules forethought tests`` with ``FORETHOUGHT_TEST_DEVICE=cuda``, over the
  machine's cores with ``pytest-xdist`` where it is installed, a per-test timeout with ``pytest-timeout`` where it is
  installed, and a JUnit XML report from which the counts and the failing tests come (not the console). Near the
  part's time cap pytest is interrupted (SIGINT), so that it still writes the report of the tests finished by then.
* ``commands``: each ``forethought`` command (:data:`forethought.experiments.commands.COMMANDS`) in its own process,
  at smoke size, with ``--device cuda``: exit code, seconds and the last error line of each.

Both write a text file beside the JSON (``suite_failures.txt``, ``commands.log``) with the full error output.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
Emit = Callable[[dict[str, Any]], None]

#: What the suite part runs: the whole suite and the package's doctests (full size); a few quick files (CPU smoke).
SUITE_ARGS = {False: ["--doctest-modules", "forethought", "tests"],
              True: ["--doctest-modules", "-m", "not slow", "tests/test_losses.py", "tests/test_probes_metrics.py",
                     "forethought/cli.py", "forethought/options.py"]}
#: Seconds one test may take before pytest-timeout fails it (full size, CPU smoke).
TEST_TIMEOUT = {False: 120, True: 120}
#: Seconds one command of the commands part may take, and how many run at once at most.
COMMAND_TIMEOUT = 150
COMMAND_JOBS = 6
#: How many failing tests the JSON lists (all of them go to suite_failures.txt).
MAX_LISTED_FAILURES = 100
SUITE_FAILURES_FILE = "suite_failures.txt"
COMMANDS_LOG_FILE = "commands.log"


def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _environment(device: str) -> dict[str, str]:
    return {**os.environ, "FORETHOUGHT_TEST_DEVICE": device, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "MPLBACKEND": "Agg", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


def _start(command: list[str], log, env: dict[str, str]) -> subprocess.Popen:
    """Start ``command`` in its own session (so that it can be killed whole) with SIGINT at its default, whatever
    the caller ignores (a shell's background job ignores it), so that pytest can be interrupted."""
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _kill(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


# --- the suite ------------------------------------------------------------------------------------------------


_EXCEPTION_LINE = re.compile(r"^E\s+([\w.]*(Error|Exception|Exit|Interrupt|Timeout|Failed|Warning)\w*)(:|$)")


def last_error_line(text: str, message: str = "") -> str:
    """The line that says what went wrong in a pytest failure: the last ``E   SomeError: ...`` line of the
    traceback, else its first ``E`` line, else the report's message."""
    lines = [line for line in text.splitlines() if line.startswith("E ")]
    named = [line for line in lines if _EXCEPTION_LINE.match(line)]
    chosen = named[-1] if named else (lines[0] if lines else "")
    chosen = chosen[1:].strip() if chosen else ""
    if not chosen:
        chosen = next((line.strip() for line in message.splitlines() if line.strip()), "")
    return chosen[:500]


def _test_id(classname: str, name: str, root: Path) -> str:
    """pytest's node id from a JUnit ``classname`` (``tests.test_x.TestY``) and ``name``: the longest prefix of the
    dotted class name that is a Python file under ``root`` is the file, the rest are classes."""
    parts = classname.split(".") if classname else []
    for cut in range(len(parts), 0, -1):
        stem = "/".join(parts[:cut])
        for path in (f"{stem}.py", f"{stem}/__init__.py"):
            if (root / path).is_file():
                return "::".join([path, *parts[cut:], name])
    return "::".join([f"{'/'.join(parts)}.py", name]) if parts else name


def parse_junit(path: Path, root: Path = ROOT) -> dict[str, Any]:
    """Counts (passed, failed, errors, skipped), the failing tests with their last error line, the skip reasons
    and the slowest tests of a pytest ``--junitxml`` report."""
    counts = Counter(passed=0, failed=0, errors=0, skipped=0)
    failures: list[dict[str, str]] = []
    reasons: Counter[str] = Counter()
    durations: list[tuple[float, str]] = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        name = case.get("name")
        if not name:  # the test running when pytest was interrupted
            continue
        test = _test_id(case.get("classname", ""), name, root)
        with contextlib.suppress(TypeError, ValueError):
            durations.append((float(case.get("time")), test))
        failure, error, skipped = case.find("failure"), case.find("error"), case.find("skipped")
        if failure is not None or error is not None:
            kind = "failed" if failure is not None else "errors"
            counts[kind] += 1
            element = failure if failure is not None else error
            failures.append({"test": test, "outcome": "failed" if kind == "failed" else "error",
                             "error": last_error_line(element.text or "", element.get("message", "")),
                             "details": element.text or element.get("message", "")})
        elif skipped is not None:
            counts["skipped"] += 1
            reason = (skipped.get("message") or skipped.get("type") or "").strip()
            reasons[re.sub(r"^\S+:\d+: ", "", reason)[:200]] += 1
        else:
            counts["passed"] += 1
    durations.sort(reverse=True)
    return {**counts, "failures": failures, "skip_reasons": dict(reasons.most_common(15)),
            "slowest": [{"test": test, "seconds": round(seconds, 1)} for seconds, test in durations[:10]]}


def suite_command(smoke: bool, junit: Path, workers: int, timeout: int | None, notebooks: bool,
                  tests: list[str] | None = None) -> list[str]:
    """The pytest command line of the suite part; ``tests`` (pytest node ids) replace the whole suite."""
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={junit}",
               "-o", "junit_family=xunit2", *(tests or SUITE_ARGS[smoke])]
    if not _importable("nbformat"):  # the static notebook checks need it; the notebooks are not run either then
        command.append("--ignore=tests/test_notebooks.py")
    if notebooks:
        command += ["--nbmake", "--nbmake-timeout=300", "notebooks"]
    if workers > 1:
        command += ["-n", str(workers)]
    if timeout:
        command.append(f"--timeout={timeout}")
    return command


def suite(smoke: bool, budget: float, emit: Emit, out_dir: Path) -> None:
    """The suite on the device (``FORETHOUGHT_TEST_DEVICE``), counted from its JUnit report.

    ``GPU_CHECK_TESTS`` (pytest node ids or files, space-separated) runs those instead of the whole suite, without
    the notebooks: a rerun of what failed.
    """
    import torch

    tests = os.environ.get("GPU_CHECK_TESTS", "").split() or None
    start = time.monotonic()
    device = "cuda" if torch.cuda.is_available() and not smoke else "cpu"
    cores = os.cpu_count() or 1
    workers = min(cores, 16) if _importable("xdist") and cores > 2 else 1
    timeout = TEST_TIMEOUT[smoke] if _importable("pytest_timeout") else None
    notebooks = not smoke and not tests and _importable("nbmake")
    result: dict[str, Any] = {
        "device": device, "workers": workers, "per_test_timeout_s": timeout,
        "notebooks": "run (nbmake)" if notebooks else "skipped: " + (
            "not in the CPU smoke run" if smoke else "nbmake is not installed"),
        "static_notebook_checks": "run" if _importable("nbformat") else "skipped: nbformat is not installed"}
    env = _environment(device)
    env["OMP_NUM_THREADS"] = str(max(1, cores // workers))
    with tempfile.TemporaryDirectory() as folder:
        junit = Path(folder) / "junit.xml"
        command = suite_command(smoke, junit, workers, timeout, notebooks, tests)
        result["command"] = shlex.join(["python", *command[1:]]).replace(str(junit), "JUNIT.xml")
        emit(result)
        log_path = Path(folder) / "pytest.log"
        with open(log_path, "w") as log:
            process = _start(command, log, env)
            interrupt_at, kill_at = start + budget - 40, start + budget - 15
            try:
                result["exit_code"] = process.wait(timeout=max(1.0, interrupt_at - time.monotonic()))
            except subprocess.TimeoutExpired:
                result["cut_by_time_cap"] = f"interrupted at {time.monotonic() - start:.0f} s of its {budget:.0f} s"
                process.send_signal(signal.SIGINT)
                try:
                    result["exit_code"] = process.wait(timeout=max(1.0, kill_at - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _kill(process)
                    result["exit_code"] = "killed"
        result["seconds"] = round(time.monotonic() - start, 1)
        console = log_path.read_text(errors="replace").splitlines()
        collected = next((int(m.group(1)) for line in console
                          for m in [re.search(r"(?:collected|\[)\s*(\d+) items?", line)] if m), None)
        result["collected"] = collected
        result["log_tail"] = [line for line in console if line.strip()][-8:]
        if not junit.exists():
            result["error"] = "pytest wrote no JUnit report (see log_tail)"
            emit(result)
            raise RuntimeError(result["error"])
        report = parse_junit(junit)
    failures = report.pop("failures")
    result.update(report)
    result["not_run"] = None if collected is None else max(0, collected - sum(
        report[key] for key in ("passed", "failed", "errors", "skipped")))
    result["failing"] = [{"test": item["test"], "outcome": item["outcome"], "error": item["error"]}
                         for item in failures[:MAX_LISTED_FAILURES]]
    lines = [f"# {len(failures)} failing tests on {device} ({result['passed']} passed, {result['skipped']} skipped)",
             f"# {result['command']}", ""]
    for item in failures:
        lines += [f"=== {item['outcome'].upper()}: {item['test']}", f"--- {item['error']}", *_tail(item["details"]), ""]
    (out_dir / SUITE_FAILURES_FILE).write_text("\n".join(lines) + "\n")
    result["failures_file"] = SUITE_FAILURES_FILE
    emit(result)


def _tail(text: str, lines: int = 60) -> list[str]:
    kept = text.splitlines()
    return kept if len(kept) <= lines else ["[...]", *kept[-lines:]]


# --- the commands ---------------------------------------------------------------------------------------------


@dataclass
class Command:
    """One ``forethought`` command line of the commands part; ``needs`` names the commands whose output it reads."""

    name: str
    argv: list[str]
    needs: tuple[str, ...] = ()

    @property
    def cli_command(self) -> str:
        return self.argv[0]


#: The data and model size of ``forethought train`` (as in tests/test_cli_train.py).
TINY_TRAIN = ["--dataset", "builtin", "--max-documents", "12", "--seq-len", "16", "--vocab-size", "300",
              "--n-layers", "2", "--d-model", "16", "--n-heads", "2", "--batch-size", "4", "--lr", "3e-3",
              "--steps", "4", "--eval-every", "2", "--checkpoint-every", "2", "--no-progress"]
#: The data and probes of ``forethought probe-sweep`` (as in tests/test_cli_probe_sweep.py).
TINY_SWEEP = ["--dataset", "builtin", "--seq-len", "24", "--max-sequences", "80", "--offsets", "0,1", "--top-k", "20",
              "--max-epochs", "3", "--no-progress"]
PROBE_METHODS = ("vocab", "logistic", "future_lens", "ridge", "learned_prompt")
PROMPT = "The cat sat on the mat because it was tired."


def command_list(work: Path, models: dict[str, Path], device: str) -> list[Command]:
    """Every ``forethought`` command at smoke size, writing under ``work``; ``models`` are random-init HF checkpoints
    by family (with a tokenizer), e.g. ``{"gpt2": ..., "llama": ...}``."""
    on = ["--device", device]
    gap, train = work / "myopia-gap", work / "train"
    first = next(iter(models))
    commands = [Command("myopia-gap", ["myopia-gap", "--preset", "smoke", "--out", str(gap), *on, "--no-progress"])]
    for regime in ("vanilla", "myopic", "bigram"):
        commands.append(Command(f"train {regime}", ["train", "--regime", regime, "--out", str(train / regime),
                                                    *TINY_TRAIN, *on]))
    commands.append(Command("train local-myopic", [
        "train", "--regime", "local-myopic", "--past-model", str(train / "vanilla" / "model"),
        "--out", str(train / "local-myopic"), *TINY_TRAIN, *on], needs=("train vanilla",)))
    commands.append(Command("compare --run", ["compare", "--run", str(gap), "--out", str(work / "compare"),
                                              "--offsets", "0,1", "--top-k", "20", *on, "--no-progress"],
                            needs=("myopia-gap",)))
    for method in PROBE_METHODS:  # the vocab sweep probes every family and saves its probes for lens-view
        chosen = models if method == "vocab" else {first: models[first]}
        sources = [word for name, path in chosen.items() for word in ("--model", f"{name}={path}")]
        commands.append(Command(f"probe-sweep {method}", [
            "probe-sweep", *sources, "--method", method, *TINY_SWEEP, *on, "--out", str(work / f"sweep-{method}"),
            *(["--save-probes"] if method == "vocab" else [])]))
    commands.append(Command("probe-sweep --stream", [
        "probe-sweep", "--model", f"{first}={models[first]}", "--method", "vocab", "--stream", "--stream-dir",
        str(work), *TINY_SWEEP, *on, "--out", str(work / "sweep-stream")]))
    commands.append(Command("probe-sweep --run", [
        "probe-sweep", "--run", str(gap), "--offsets", "0,1", "--top-k", "10", "--max-epochs", "2", "--no-control",
        "--no-progress", *on, "--out", str(work / "sweep-run")], needs=("myopia-gap",)))
    commands.append(Command("lens-view", [
        "lens-view", "--model", str(models[first]), "--probes", str(work / "sweep-vocab" / "probes" / first / "vocab"),
        "--prompt", PROMPT, "--offset", "1", *on, "--out", str(work / "lens-view")], needs=("probe-sweep vocab",)))
    commands.append(Command("gradient-split --model", [
        "gradient-split", "--model", str(gap / "runs" / "vanilla" / "model"), "--seq-len", "16", "--batches", "2",
        "--batch-size", "4", *on, "--no-progress", "--out", str(work / "split-model")], needs=("myopia-gap",)))
    commands.append(Command("gradient-split --synthetic-preset", [
        "gradient-split", "--synthetic-preset", "smoke", "--steps", "4", "--every", "2", "--batches", "1",
        "--batch-size", "8", *on, "--no-progress", "--out", str(work / "split-synthetic")]))
    commands.append(Command("synthetic", ["synthetic", "--preset", "smoke", *on, "--no-progress",
                                          "--out", str(work / "synthetic")]))
    return commands


def _error_line(output: str) -> str | None:
    """The last line of a command's output that reports an error (forethought's own one-line message or a
    traceback's last line), else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    named = [line for line in lines if re.search(r"error|Error|Exception|Killed|Traceback", line)]
    return (named[-1] if named else lines[-1] if lines else "")[:500] or None


def _checkpoints(folder: Path) -> dict[str, Path]:
    from forethought.data import load_texts, train_tokenizer
    from forethought.models import save_random_checkpoint

    tokenizer = train_tokenizer(load_texts("builtin")[:30], vocab_size=300)
    return {family: save_random_checkpoint(family, folder / family, d_model=32, n_layers=2, n_heads=4, n_ctx=64,
                                           tokenizer=tokenizer)
            for family in ("gpt2", "llama", "neox")}


def _jobs(smoke: bool) -> int:
    """How many commands run at once: a few on a GPU machine's many cores, two on a small CPU."""
    cores = os.cpu_count() or 1
    return min(2, cores) if smoke else min(COMMAND_JOBS, max(1, cores // 2))


def commands(smoke: bool, budget: float, emit: Emit, out_dir: Path) -> None:
    """Every command at smoke size on the device, each in its own process (a few at once, a command once those
    whose output it reads have finished): exit code, seconds, error line; their output in ``commands.log``."""
    import torch

    start = time.monotonic()
    device = "cuda" if torch.cuda.is_available() and not smoke else "cpu"
    jobs = _jobs(smoke)
    result: dict[str, Any] = {"device": device, "parallel_jobs": jobs, "rows": []}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        models = _checkpoints(work / "checkpoints")
        result["setup_seconds"] = round(time.monotonic() - start, 1)
        env = _environment(device)
        env["OMP_NUM_THREADS"] = str(max(1, min(4, (os.cpu_count() or 1) // jobs)))
        pending = command_list(work, models, device)
        rows = {command.name: {"name": command.name, "command": "forethought " + " ".join(command.argv).replace(
            folder, "WORK"), "exit_code": None, "seconds": None, "error": None} for command in pending}
        result["rows"] = list(rows.values())
        outputs: dict[str, str] = {}
        running: dict[str, tuple[subprocess.Popen, Any, float]] = {}
        done: set[str] = set()
        while pending or running:
            for name, (process, output, begun) in list(running.items()):  # collect the finished and the overdue
                row = rows[name]
                code = process.poll()
                late = time.monotonic() - begun > COMMAND_TIMEOUT or time.monotonic() > start + budget - 10
                if code is None and not late:
                    continue
                if code is None:
                    _kill(process)
                    row["error"] = f"timed out after {time.monotonic() - begun:.0f} s"
                row["exit_code"], row["seconds"] = code, round(time.monotonic() - begun, 1)
                output.seek(0)
                outputs[name] = output.read().replace(folder, "WORK")
                output.close()
                if code is not None and code != 0:
                    row["error"] = _error_line(outputs[name])
                done.add(name)
                del running[name]
                emit(result)
            for command in list(pending):  # start what can start, in the list's order
                row = rows[command.name]
                failed = [need for need in command.needs if need in done and rows[need]["exit_code"] != 0]
                if failed or time.monotonic() > start + budget - 15:
                    row["error"] = "skipped: " + (f"needs {', '.join(failed)}, which failed" if failed
                                                  else "the part's time cap was reached")
                    pending.remove(command)
                    done.add(command.name)
                    continue
                if len(running) >= jobs or not all(need in done for need in command.needs):
                    continue
                output = tempfile.TemporaryFile("w+")
                process = _start([sys.executable, "-m", "forethought.cli", *command.argv], output, env)
                running[command.name] = (process, output, time.monotonic())
                pending.remove(command)
            if pending and not running:  # what is left waits for a command that is not in the list
                for command in pending:
                    rows[command.name]["error"] = f"skipped: needs {', '.join(command.needs)}, which never ran"
                pending = []
            time.sleep(0.1)
    with open(out_dir / COMMANDS_LOG_FILE, "w") as log:
        for row in result["rows"]:
            log.write(f"===== {row['name']}: exit {row['exit_code']}, {row['seconds']} s\n$ {row['command']}\n")
            text = outputs.get(row["name"], row["error"] or "")
            log.write("\n".join(_tail(text, 5 if row["exit_code"] == 0 else 200)) + "\n\n")
    result["passed"] = sum(row["exit_code"] == 0 for row in result["rows"])
    result["failed"] = len(result["rows"]) - result["passed"]
    result["seconds"] = round(time.monotonic() - start, 1)
    result["log_file"] = COMMANDS_LOG_FILE
    emit(result)
