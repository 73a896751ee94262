"""The GPU check's plumbing (benchmarks/gpu_check.sh and .py): script syntax, pinned wheels, part caps, the JSON."""

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", BENCHMARKS / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", ["gpu_check.sh", "prepare_gpu_wheels.sh"])
def test_shell_scripts_parse(script):
    subprocess.run(["bash", "-n", str(BENCHMARKS / script)], check=True)


def test_wheel_list_is_pinned_and_leaves_torch_to_the_machine():
    lines = [line for line in (BENCHMARKS / "gpu_requirements.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    names = [line.split("==")[0] for line in lines]
    assert all(re.fullmatch(r"[a-z0-9-]+==[0-9][0-9a-z.]*", line) for line in lines)
    assert "transformer-lens" in names and not {"torch", "triton"} & set(names)
    assert not any(name.startswith("nvidia-") for name in names)
    default = re.search(r'missing_from_cuda_image="([^"]+)"', (BENCHMARKS / "prepare_gpu_wheels.sh").read_text())
    assert set(default.group(1).split()) <= set(names)


def test_json_is_strict_and_written_whole(gpu_check, tmp_path):
    path = tmp_path / "out" / "check.json"
    gpu_check.write_json(path, gpu_check._finite({"a": [1.0, float("nan")], "b": {"c": float("inf")}}))
    assert json.loads(path.read_text()) == {"a": [1.0, None], "b": {"c": None}}
    assert [p.name for p in path.parent.iterdir()] == ["check.json"]


def test_a_part_runs_in_its_own_process(gpu_check, tmp_path):
    result = gpu_check.run_part("environment", 120, True, tmp_path)
    assert result["error"] is None
    assert result["torch"] and result["device"]


def test_a_part_past_its_budget_is_killed_and_recorded(gpu_check, tmp_path):
    result = gpu_check.run_part("environment", 0.05, True, tmp_path)
    assert result["error"].startswith("timed out")
    assert "torch" not in result


def test_parts_without_time_left_are_skipped_not_lost(gpu_check, tmp_path):
    out = tmp_path / "check.json"
    gpu_check.run_all(out, total_seconds=12, smoke=True, setup={"status": "skipped"})
    report = json.loads(out.read_text())
    assert report["setup"] == {"status": "skipped"}
    assert all(report[name]["error"].startswith("skipped") for name in gpu_check.PARTS)
    assert report["headline"] == {"device": None}
