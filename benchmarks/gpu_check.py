"""The GPU check: every figure of one run in one JSON file (what ``benchmarks/gpu_check.sh`` runs).

Parts, each in its own process with its own time budget, so that a crash, an out-of-memory error or a timeout in
one part is recorded (``"error"``) without losing the others; the JSON is rewritten after every part. They run in
this order, by value for a short GPU slot (``--parts`` picks some; the order stays):

* ``environment``: device name, torch / CUDA / cuDNN versions, the versions of forethought's dependencies;
* ``commands``: every ``forethought`` command at smoke size with ``--device cuda``, each in its own process: exit
  code, seconds and its last error line (``benchmarks/gpu_check_suite.py``; full output in ``commands.log``);
* ``probe_sweep``: ``benchmarks/probes.py --big`` over 200 k tokens of a 12-layer d_model=768 random-init model
  (tokens/s, peak GPU memory);
* ``suite``: the test suite and the doctests with ``FORETHOUGHT_TEST_DEVICE=cuda``, over the machine's cores
  (pytest-xdist) with a per-test timeout (pytest-timeout) where those are installed: passed / failed / errors /
  skipped from its JUnit report, the failing tests with their last error line (tracebacks in
  ``suite_failures.txt``); interrupted at the part's cap with the tests finished by then;
* ``myopic_step``: time and peak CUDA memory of a myopic training step over a vanilla one (forward, backward,
  AdamW; bf16 autocast; the step functions of ``benchmarks/myopic_step.py``), both also over plain HF transformers
  with SDPA on the same weights and batch (interleaved), with tokens/s and MFU (6 x parameters x tokens / time /
  the peak bf16 matmul rate measured in the same part), for a GPT-2-small shape and a
  Llama-3.2-1B shape (random weights, HF checkpoints written offline) at T = 1024, for ``strict`` and ``cutgrad``;
* ``synthetic``: up to two minutes of ``forethought synthetic --preset paper`` (both regimes; the number of steps
  is chosen from a short timed run), with steps/s and the losses.

    python benchmarks/gpu_check.py OUT.json [--total-seconds 500] [--parts commands,suite] [--cpu-smoke]

``--cpu-smoke`` runs the same code at toy sizes on a CPU (the plumbing, not the numbers): commands and the suite
run on the CPU, the suite over a few quick files. Text files (``commands.log``, ``suite_failures.txt``) are written
beside the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import gpu_check_suite  # noqa: E402  (beside this file)

FORMAT = "forethought-gpu-check-v2"
#: Each part's time budget in seconds (full size, CPU smoke); a part never gets more than what is left in total.
#: Full size they add up to more than the default total cap (500 s): the last parts get what the others leave.
BUDGETS = {"environment": (20, 60), "commands": (110, 420), "probe_sweep": (90, 120), "suite": (240, 150),
           "myopic_step": (150, 150), "synthetic": (120, 120)}
#: Seconds of training (both regimes together) in the synthetic part.
SYNTHETIC_TRAIN_SECONDS = {False: 100.0, True: 6.0}
#: The models of the myopic step benchmark: HF config fields, batch size and sequence length.
STEP_SHAPES: dict[bool, dict[str, dict[str, Any]]] = {
    False: {
        "gpt2-small": {"family": "gpt2", "d_model": 768, "n_layers": 12, "n_heads": 12, "d_vocab": 50257,
                       "batch": 8, "seq_len": 1024},
        "llama-1b": {"family": "llama", "d_model": 2048, "n_layers": 16, "n_heads": 32, "n_kv_heads": 8,
                     "d_mlp": 8192, "d_vocab": 128256, "batch": 4, "seq_len": 1024},
    },
    True: {
        "gpt2-small": {"family": "gpt2", "d_model": 64, "n_layers": 2, "n_heads": 4, "d_vocab": 512, "batch": 2,
                       "seq_len": 32},
        "llama-1b": {"family": "llama", "d_model": 64, "n_layers": 2, "n_heads": 8, "n_kv_heads": 2, "d_mlp": 256,
                     "d_vocab": 512, "batch": 2, "seq_len": 32},
    },
}
PROBE_ARGS = {
    False: ["--big", "--no-compare", "--big-tokens", "200000"],
    True: ["--big", "--no-compare", "--big-tokens", "2048", "--big-layers", "2", "--big-d-model", "64",
           "--big-vocab", "512", "--big-seq-len", "32", "--big-top-k", "20", "--big-epochs", "1", "--big-batch", "16"],
}
Emit = Callable[[dict[str, Any]], None]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# --- the parts (each runs in its own process; ``emit`` records the figures so far) -----------------------------


def environment(smoke: bool, budget: float, emit: Emit) -> None:
    """Where the figures come from: machine, device, library versions."""
    from importlib import metadata

    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable,
                            "platform": platform.platform(), "cpu_count": os.cpu_count(),
                            "torch": torch.__version__, "cuda": torch.version.cuda,
                            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                            "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        info.update(device=torch.cuda.get_device_name(0), device_count=torch.cuda.device_count(),
                    device_memory_gib=round(properties.total_memory / 2**30, 1),
                    capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                    bf16_supported=torch.cuda.is_bf16_supported())
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.strip() or None
    else:
        info["device"] = "cpu"
    versions = {}
    for name in ("forethought", "transformer-lens", "transformers", "accelerate", "datasets", "numpy", "pandas",
                 "scikit-learn", "scipy", "pyarrow", "huggingface-hub", "tokenizers", "safetensors", "matplotlib"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info["packages"] = versions
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=BENCHMARKS.parent)
        info["git_commit"] = commit.stdout.strip() if commit.returncode == 0 else None
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                 text=True, timeout=10, cwd=BENCHMARKS.parent)
        info["git_changes"] = bool(changed.stdout.strip()) if changed.returncode == 0 else None
    emit(info)


def _tokenizer():
    from forethought.data import load_texts, train_tokenizer

    return train_tokenizer(load_texts("builtin"), vocab_size=512)


def _checkpoint(shape: dict[str, Any], folder: Path, tokenizer) -> Path:
    """A random-init HF checkpoint of ``shape``: GPT-2 through ``save_random_checkpoint``; Llama from its config
    (grouped-query attention with ``n_kv_heads``, tied embeddings and the rotary base of Llama 3.2)."""
    import torch
    import transformers

    from forethought.models import save_random_checkpoint

    if shape["family"] == "gpt2":
        return save_random_checkpoint("gpt2", folder, d_model=shape["d_model"], n_layers=shape["n_layers"],
                                      n_heads=shape["n_heads"], n_ctx=shape["seq_len"], d_vocab=shape["d_vocab"])
    config = transformers.LlamaConfig(
        vocab_size=shape["d_vocab"], hidden_size=shape["d_model"], intermediate_size=shape["d_mlp"],
        num_hidden_layers=shape["n_layers"], num_attention_heads=shape["n_heads"],
        num_key_value_heads=shape["n_kv_heads"], max_position_embeddings=shape["seq_len"], rope_theta=500_000.0,
        tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _timed_step(step, model, optimizer, tokens, mode: str, autocast) -> tuple[float, int | None, int | None]:
    """Seconds, peak CUDA bytes and CUDA bytes held before the step (weights, AdamW state) of one training step."""
    import torch

    cuda = torch.cuda.is_available()
    _sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() if cuda else None
    start = time.perf_counter()
    with autocast():  # the backward and the update run inside too: they keep the dtypes the forward chose
        step(model, optimizer, tokens, mode)
    _sync()
    seconds = time.perf_counter() - start
    return seconds, (torch.cuda.max_memory_allocated() if cuda else None), before


def _step_row(model, optimizer, tokens, mode: str, autocast, repeats: int,
              hf: tuple | None = None) -> dict[str, Any]:
    """Median step time and peak memory of vanilla and myopic steps (interleaved), and their ratios; with
    ``hf = (model, optimizer)``, plain HF SDPA steps interleaved beside them and every time over HF SDPA's."""
    sys.path.insert(0, str(BENCHMARKS))
    from myopic_step import hf_step, myopic_step, vanilla_step

    steps = {"vanilla": (vanilla_step, model, optimizer), "myopic": (myopic_step, model, optimizer)}
    if hf is not None:
        steps = {"hf_sdpa": (hf_step, *hf), **steps}
    for step, step_model, step_optimizer in steps.values():  # warm-up (and AdamW's state)
        _timed_step(step, step_model, step_optimizer, tokens, mode, autocast)
    runs: dict[str, list] = {name: [] for name in steps}
    for _ in range(repeats):  # interleaved, so that clock or load changes hit both alike
        for name, (step, step_model, step_optimizer) in steps.items():
            runs[name].append(_timed_step(step, step_model, step_optimizer, tokens, mode, autocast))
    row: dict[str, Any] = {}
    for regime, values in runs.items():
        row[f"{regime}_ms"] = 1e3 * statistics.median(v[0] for v in values)
        if values[0][1] is not None:
            row[f"{regime}_peak_gib"] = max(v[1] for v in values) / 2**30
            row[f"{regime}_step_gib"] = max(v[1] - v[2] for v in values) / 2**30  # above weights and AdamW state
    row["time_ratio"] = row["myopic_ms"] / row["vanilla_ms"]
    if hf is not None:
        row["vanilla_over_hf_sdpa"] = row["vanilla_ms"] / row["hf_sdpa_ms"]
        row["myopic_over_hf_sdpa"] = row["myopic_ms"] / row["hf_sdpa_ms"]
        for name in steps:
            row[f"{name}_tokens_per_s"] = tokens.numel() / (row[f"{name}_ms"] / 1e3)
    if "vanilla_peak_gib" in row:
        row["peak_memory_ratio"] = row["myopic_peak_gib"] / row["vanilla_peak_gib"]
        row["step_memory_ratio"] = row["myopic_step_gib"] / row["vanilla_step_gib"]
    return row


def _kernel_profile(steps: dict[str, tuple], tokens, mode: str, autocast, top: int = 12) -> dict[str, Any]:
    """Per step kind: device time in all, and the ``top`` kernels by device time (ms), from ``torch.profiler``."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    kinds: dict[str, Any] = {}
    for name, (step, step_model, step_optimizer) in steps.items():
        with profile(activities=activities) as prof:
            _timed_step(step, step_model, step_optimizer, tokens, mode, autocast)
        averages = prof.key_averages()
        events = [event for event in averages if event.self_device_time_total > 0]
        if events:  # kernels, by their time on the device
            time_of = lambda event: event.self_device_time_total  # noqa: E731
        else:  # on a CPU: operators, by their own CPU time
            events, time_of = list(averages), lambda event: event.self_cpu_time_total  # noqa: E731
        events.sort(key=time_of, reverse=True)
        kinds[name] = {"device_ms": sum(time_of(e) for e in events) / 1e3,
                       "kernels": sum(e.count for e in events),
                       "top": [{"name": e.key[:90], "ms": round(time_of(e) / 1e3, 3), "calls": e.count}
                               for e in events[:top]]}
    return kinds


def myopic_step_ratios(smoke: bool, budget: float, emit: Emit) -> None:
    """Myopic / vanilla step time and peak memory for each shape and myopic mode."""
    import torch

    from forethought.models import load_model

    start = time.perf_counter()
    device = "cuda" if _cuda() else "cpu"
    bf16 = device == "cpu" or torch.cuda.is_bf16_supported()
    autocast = (lambda: torch.autocast(device, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    repeats = 2 if smoke else 5
    tokenizer = _tokenizer()
    sys.path.insert(0, str(BENCHMARKS))
    from myopic_step import load_hf_sdpa, peak_matmul_flops

    peak, peak_dtype = peak_matmul_flops(torch.device(device))
    result: dict[str, Any] = {"device": device, "precision": "bf16 autocast" if bf16 else "float32",
                              "repeats": repeats, "peak_matmul_tflops": peak / 1e12, "peak_matmul_dtype": peak_dtype,
                              "shapes": {}, "rows": []}
    for name, shape in STEP_SHAPES[smoke].items():
        if time.perf_counter() - start > 0.6 * budget:
            result["shapes"][name] = {**shape, "error": "skipped: the part's time budget was nearly spent"}
            emit(result)
            continue
        model = optimizer = hf = None
        try:
            with tempfile.TemporaryDirectory() as folder:
                made = time.perf_counter()
                model = load_model(_checkpoint(shape, Path(folder), tokenizer), device=device, tokenizer=tokenizer)
                hf_model = load_hf_sdpa(folder, device)  # the anchor: plain HF SDPA on the same weights
                hf = (hf_model, torch.optim.AdamW(hf_model.parameters(), lr=1e-4))
                del hf_model
                result["shapes"][name] = {**shape, "parameters": sum(p.numel() for p in model.parameters()),
                                          "build_seconds": round(time.perf_counter() - made, 1)}
            model.eval()  # dropout off, as the trainer does
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            tokens = torch.randint(0, shape["d_vocab"], (shape["batch"], shape["seq_len"]),
                                   generator=torch.Generator().manual_seed(0)).to(device)
            for mode in ("strict", "cutgrad"):
                row: dict[str, Any] = {"shape": name, "mode": mode, "batch": shape["batch"],
                                       "seq_len": shape["seq_len"]}
                try:
                    row.update(_step_row(model, optimizer, tokens, mode, autocast, repeats, hf))
                    parameters = result["shapes"][name]["parameters"]
                    for regime in ("hf_sdpa", "vanilla", "myopic"):
                        row[f"{regime}_mfu"] = 6 * parameters * row[f"{regime}_tokens_per_s"] / peak
                except torch.cuda.OutOfMemoryError as error:
                    row["error"] = f"OutOfMemoryError: {str(error).splitlines()[0]}"
                    optimizer.zero_grad(set_to_none=True)
                result["rows"].append(row)
                emit(result)
            if time.perf_counter() - start < 0.5 * budget:  # where the time of a step goes, kernel by kernel
                sys.path.insert(0, str(BENCHMARKS))
                from myopic_step import hf_step, myopic_step, vanilla_step

                steps = {"hf_sdpa": (hf_step, *hf), "vanilla": (vanilla_step, model, optimizer),
                         "myopic": (myopic_step, model, optimizer)}
                result["shapes"][name]["kernel_profile"] = _kernel_profile(steps, tokens, "strict", autocast)
                emit(result)
        except Exception as error:  # one shape's failure must not lose the other's figures
            result["shapes"].setdefault(name, dict(shape))["error"] = f"{type(error).__name__}: {error}"
            emit(result)
        del model, optimizer, hf
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()


def probe_sweep_throughput(smoke: bool, budget: float, emit: Emit) -> None:
    """``benchmarks/probes.py --big`` at 200 k tokens: its figures, with the peak GPU and host memory."""
    import torch

    sys.path.insert(0, str(BENCHMARKS))
    import probes

    args = probes.build_parser().parse_args(PROBE_ARGS[smoke])
    if _cuda():
        torch.cuda.reset_peak_memory_stats()
    figures = probes.big_sweep(args)
    figures["peak_rss_gib"] = _peak_rss_gib()
    if _cuda():
        figures["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
        figures["peak_gpu_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    emit({"arguments": PROBE_ARGS[smoke], **figures})


def synthetic_run(smoke: bool, budget: float, emit: Emit) -> None:
    """``forethought synthetic --preset paper --steps N``, N chosen from a short timed run to train ~2 minutes."""
    from dataclasses import replace

    from forethought.cli import main as cli_main
    from forethought.synthetic import PRESETS, train_regime

    preset = "smoke" if smoke else "paper"
    device = "cuda" if _cuda() else "cpu"
    train_seconds = min(SYNTHETIC_TRAIN_SECONDS[smoke], 0.6 * budget)
    calibration_steps = 10 if smoke else 60
    per_step = {}
    for regime in ("vanilla", "myopic"):
        train_regime(replace(PRESETS[preset], steps=4, warmup_steps=1), regime, device=device, progress=False)
        run = train_regime(replace(PRESETS[preset], steps=calibration_steps, warmup_steps=1), regime, device=device,
                           progress=False)
        per_step[regime] = run.seconds / calibration_steps
    steps = max(50, int(train_seconds / sum(per_step.values())))
    result: dict[str, Any] = {"preset": preset, "device": device, "train_seconds_target": train_seconds,
                              "calibration_steps_per_s": {k: 1 / v for k, v in per_step.items()}, "steps": steps}
    emit(result)
    with tempfile.TemporaryDirectory() as folder:
        command = ["synthetic", "--preset", preset, "--steps", str(steps), "--out", folder, "--device", device,
                   "--no-progress"]
        result["command"] = f"forethought synthetic --preset {preset} --steps {steps} --device {device}"
        start = time.perf_counter()
        code = cli_main(command)
        result["command_seconds"] = time.perf_counter() - start
        if code:
            raise RuntimeError(f"forethought synthetic exited with {code}")
        report = json.loads((Path(folder) / "report.json").read_text())
    result["regimes"] = {
        regime: {"steps_per_s": values["steps"] / values["train_seconds"],
                 **{key: values[key] for key in ("eval_loss", "zero_baseline_loss", "loss_ratio", "final_train_loss",
                                                 "train_seconds")}}
        for regime, values in report["regimes"].items()}
    result["summary"] = report["summary"]
    emit(result)


#: Where the parts' text files go (beside the JSON); set by the driver for each part's process.
ARTIFACTS = Path(".")


def suite_run(smoke: bool, budget: float, emit: Emit) -> None:
    """The test suite on the device (``benchmarks/gpu_check_suite.py``)."""
    gpu_check_suite.suite(smoke, budget, emit, ARTIFACTS)


def commands_run(smoke: bool, budget: float, emit: Emit) -> None:
    """Every CLI command at smoke size on the device (``benchmarks/gpu_check_suite.py``)."""
    gpu_check_suite.commands(smoke, budget, emit, ARTIFACTS)


#: The parts in the order they run: by value for a short GPU slot.
PARTS: dict[str, Callable[[bool, float, Emit], None]] = {
    "environment": environment,
    "commands": commands_run,
    "probe_sweep": probe_sweep_throughput,
    "suite": suite_run,
    "myopic_step": myopic_step_ratios,
    "synthetic": synthetic_run,
}


def parse_parts(text: str | None) -> list[str]:
    """``--parts``: comma-separated part names (``all`` or nothing: every part), run in :data:`PARTS` order."""
    if text is None or text.strip() in ("", "all"):
        return list(PARTS)
    chosen = {name.strip() for name in text.split(",") if name.strip()}
    unknown = sorted(chosen - set(PARTS))
    if unknown:
        raise ValueError(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    return [name for name in PARTS if name in chosen]


# --- the runner -----------------------------------------------------------------------------------------------


def parse_budgets(text: str | None) -> dict[str, float]:
    """``--budgets``: ``PART=SECONDS`` pairs, comma-separated, that replace those parts' budgets."""
    budgets: dict[str, float] = {}
    for item in filter(None, (text or "").split(",")):
        name, _, seconds = item.partition("=")
        if name.strip() not in PARTS:
            raise ValueError(f"--budgets: unknown part {name.strip()!r}; choose from {', '.join(PARTS)}")
        try:
            budgets[name.strip()] = float(seconds)
        except ValueError:
            raise ValueError(f"--budgets: {item!r} is not PART=SECONDS") from None
    return budgets


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Write ``value`` to ``path`` through a temporary file, so that a killed run leaves the last whole JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=2, default=str, allow_nan=False))
    os.replace(temporary, path)


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def run_part(name: str, seconds: float, smoke: bool, folder: Path, artifacts: Path | None = None) -> dict[str, Any]:
    """Run one part in a child process (its own session, killed whole at ``seconds``); its figures and error.
    The part writes its text files, if any, into ``artifacts`` (default: ``folder``)."""
    part_file, log_file = folder / f"{name}.json", folder / f"{name}.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--part-out", str(part_file),
               "--budget", f"{seconds:.0f}", "--artifacts", str(artifacts or folder)]
    command += ["--cpu-smoke"] if smoke else []
    start = time.perf_counter()
    error = None
    with open(log_file, "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = child.wait(timeout=seconds)
            if code:
                error = f"exit status {code}"
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            error = f"timed out after {seconds:.0f} s (the figures below are those finished by then)"
    figures = json.loads(part_file.read_text()) if part_file.exists() else {}
    if error:
        lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "Error" in line or "error" in line), None)
        error = f"{error}: {reason}" if reason and "timed out" not in error else error
        figures["log_tail"] = lines[-15:]
    return {"error": error, "wall_seconds": round(time.perf_counter() - start, 1), "budget_s": round(seconds),
            **figures}


def run_all(out: Path, total_seconds: float, smoke: bool, setup: dict[str, Any], parts: list[str] | None = None,
            budgets: dict[str, float] | None = None) -> dict[str, Any]:
    """Run ``parts`` (default: all, in :data:`PARTS` order) within ``total_seconds``, each within its budget
    (:data:`BUDGETS`, or ``budgets``); the JSON is rewritten after each part."""
    deadline = time.monotonic() + total_seconds
    parts = list(PARTS) if parts is None else parts
    budgets = {name: BUDGETS[name][smoke] for name in PARTS} | (budgets or {})
    report: dict[str, Any] = {"format": FORMAT, "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                              "cpu_smoke": smoke, "total_seconds_cap": total_seconds, "parts": parts,
                              "setup": setup}
    write_json(out, report)
    with tempfile.TemporaryDirectory() as folder:
        for name in parts:
            left = deadline - time.monotonic() - 5  # keep a few seconds to write the JSON
            seconds = min(budgets[name], left)
            if seconds < 10:
                report[name] = {"error": f"skipped: {max(0, left):.0f} s left of the total cap"}
            else:
                report[name] = run_part(name, seconds, smoke, Path(folder), artifacts=out.parent)
            print(f"{name}: {report[name]['error'] or 'ok'} ({report[name].get('wall_seconds', 0)} s)", flush=True)
            write_json(out, _finite(report))
    report["seconds"] = round(total_seconds - (deadline - time.monotonic()), 1)
    report["headline"] = headline(report)
    write_json(out, _finite(report))
    return report


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The figures to read first, flattened from the parts (absent where a part failed)."""
    figures: dict[str, Any] = {"device": report.get("environment", {}).get("device")
                               or report.get("commands", {}).get("device") or report.get("suite", {}).get("device")}
    suite = report.get("suite", {})
    for key in ("passed", "failed", "errors", "skipped", "not_run"):
        if suite.get(key) is not None:
            figures[f"suite {key}"] = suite[key]
    if suite.get("cut_by_time_cap"):
        figures["suite cut_by_time_cap"] = suite["cut_by_time_cap"]
    for row in report.get("commands", {}).get("rows", []):
        figures[f"command {row['name']}"] = row.get("exit_code")
    for row in report.get("myopic_step", {}).get("rows", []):
        for key in ("time_ratio", "vanilla_over_hf_sdpa", "myopic_over_hf_sdpa", "peak_memory_ratio",
                    "step_memory_ratio"):
            if key in row:
                figures[f"myopic_step {row['shape']} {row['mode']} {key}"] = round(row[key], 3)
    sweep = report.get("probe_sweep", {})
    for key in ("tokens_per_s", "peak_gpu_gib"):
        if key in sweep:
            figures[f"probe_sweep {key}"] = round(sweep[key], 1)
    for regime, values in report.get("synthetic", {}).get("regimes", {}).items():
        figures[f"synthetic {regime} steps_per_s"] = round(values["steps_per_s"], 1)
        figures[f"synthetic {regime} loss_ratio"] = round(values["loss_ratio"], 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, help="the JSON file to write")
    parser.add_argument("--total-seconds", type=float, default=500, help="wall-clock cap of all parts together")
    parser.add_argument("--parts", help=f"comma-separated parts to run, in this order: {','.join(PARTS)} "
                        "(default: all)")
    parser.add_argument("--budgets", help="PART=SECONDS,...: replace these parts' time budgets")
    parser.add_argument("--cpu-smoke", action="store_true", help="toy sizes: check the plumbing on a CPU")
    parser.add_argument("--setup-log", type=Path, help="the install step's log (its tail goes in the JSON)")
    parser.add_argument("--setup-status", help="the install step's outcome, as gpu_check.sh saw it")
    parser.add_argument("--setup-seconds", type=float)
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--part-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--artifacts", type=Path, default=Path("."), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:  # a child process: one part, its figures rewritten to --part-out as they come
        global ARTIFACTS
        ARTIFACTS = args.artifacts
        if not args.cpu_smoke:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        else:
            import torch

            torch.set_num_threads(1)
        PARTS[args.part](args.cpu_smoke, args.budget, lambda figures: write_json(args.part_out, _finite(figures)))
        return
    if args.out is None:
        parser.error("give the JSON file to write")
    try:
        parts, budgets = parse_parts(args.parts), parse_budgets(args.budgets)
    except ValueError as error:
        parser.error(str(error))
    setup: dict[str, Any] = {"status": args.setup_status, "seconds": args.setup_seconds}
    if args.setup_log and args.setup_log.exists():
        setup["log_tail"] = args.setup_log.read_text(errors="replace").splitlines()[-20:]
    report = run_all(args.out, args.total_seconds, args.cpu_smoke, setup, parts, budgets)
    print(json.dumps(report["headline"], indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
