"""The GPU check's plumbing (benchmarks/gpu_check.sh, .py and gpu_check_suite.py): script syntax, pinned wheels,
part selection and caps, the JSON, the suite's JUnit counts and the list of commands."""

import importlib.util
import json
import re
import subprocess
import sys
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


# ---- selecting parts -----------------------------------------------------------------------------------------


def test_parts_run_by_value_and_every_part_has_budgets(gpu_check):
    assert list(gpu_check.PARTS)[:4] == ["environment", "commands", "probe_sweep", "suite"]
    assert set(gpu_check.BUDGETS) == set(gpu_check.PARTS)
    full = [gpu_check.BUDGETS[name][False] for name in gpu_check.PARTS]
    assert sum(full[:4]) < 500 - 30  # the most valuable parts fit the driver's default cap, install aside


def test_parts_are_selected_and_keep_their_order(gpu_check):
    assert gpu_check.parse_parts(None) == gpu_check.parse_parts("all") == list(gpu_check.PARTS)
    assert gpu_check.parse_parts("suite, commands") == ["commands", "suite"]
    with pytest.raises(ValueError, match="unknown part.*telepathy"):
        gpu_check.parse_parts("suite,telepathy")
    assert gpu_check.parse_budgets("suite=480,commands=60") == {"suite": 480.0, "commands": 60.0}
    for bad in ("suite", "suite=soon", "warp=3"):
        with pytest.raises(ValueError, match="--budgets"):
            gpu_check.parse_budgets(bad)


def test_only_the_chosen_parts_appear_in_the_json(gpu_check, tmp_path):
    out = tmp_path / "check.json"
    gpu_check.run_all(out, total_seconds=12, smoke=True, setup={}, parts=["commands", "suite"])
    report = json.loads(out.read_text())
    assert report["parts"] == ["commands", "suite"]
    assert not set(gpu_check.PARTS) - {"commands", "suite"} & set(report)


def test_the_driver_refuses_an_unknown_part(tmp_path):
    process = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_check.py"), str(tmp_path / "x.json"), "--parts",
                              "nope"], capture_output=True, text=True)
    assert process.returncode == 2 and "unknown part" in process.stderr and not (tmp_path / "x.json").exists()


# ---- the suite part: counts and failing tests from the JUnit report ------------------------------------------


DEVICES_ERROR = "RuntimeError: Expected all tensors to be on the same device, but found at least two devices"
JUNIT = "".join([
    '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="8">',
    '<testcase classname="tests.test_a" name="test_ok" time="0.5" />',
    '<testcase classname="tests.test_a" name="test_bad[myopic]" time="2.0">',
    '<failure message="subprocess.CalledProcessError: Command failed">&gt;   run()\n',
    "E   subprocess.CalledProcessError: Command '['torchrun']' returned non-zero exit status 1.\n",
    "E   stderr of the children: RendezvousError\n\ntests/test_a.py:9: CalledProcessError</failure></testcase>",
    '<testcase classname="tests.test_a.TestGroup" name="test_in_class" time="0.1">',
    '<failure message="assert 1 == 2">\nE   assert 1 == 2\nE    +  where 1 = f()</failure></testcase>',
    '<testcase classname="tests.test_a" name="test_setup" time="0.0">',
    f'<error message="failed on setup with &quot;{DEVICES_ERROR}&quot;">E   {DEVICES_ERROR}</error></testcase>',
    '<testcase classname="tests.test_a" name="test_skip" time="0.0">',
    '<skipped type="pytest.skip" message="tests/test_a.py:20: about the CPU by nature" /></testcase>',
    '<testcase classname="tests.test_a" name="test_skip2" time="0.0">',
    '<skipped type="pytest.skip" message="about the CPU by nature" /></testcase>',
    '<testcase classname="pkg.mod" name="pkg.mod.function" time="0.2" />',
    '<testcase time="0.000" />',  # the test running when pytest was interrupted
    "</testsuite></testsuites>"])


def test_junit_report_gives_counts_and_failing_ids(tmp_path):
    suite = _suite_module()
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text("")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("")
    (tmp_path / "junit.xml").write_text(JUNIT)
    report = suite.parse_junit(tmp_path / "junit.xml", root=tmp_path)
    assert {key: report[key] for key in ("passed", "failed", "errors", "skipped")} == {
        "passed": 2, "failed": 2, "errors": 1, "skipped": 2}
    failing = {item["test"]: (item["outcome"], item["error"]) for item in report["failures"]}
    assert failing == {
        "tests/test_a.py::test_bad[myopic]": (
            "failed", "subprocess.CalledProcessError: Command '['torchrun']' returned non-zero exit status 1."),
        "tests/test_a.py::TestGroup::test_in_class": ("failed", "assert 1 == 2"),
        "tests/test_a.py::test_setup": ("error", DEVICES_ERROR)}
    assert report["skip_reasons"] == {"about the CPU by nature": 2}
    assert report["slowest"][0] == {"test": "tests/test_a.py::test_bad[myopic]", "seconds": 2.0}
    assert "pkg/mod.py::pkg.mod.function" in [row["test"] for row in report["slowest"]]


def test_suite_command_runs_on_the_device_over_the_cores(tmp_path):
    suite = _suite_module()
    command = suite.suite_command(False, tmp_path / "j.xml", workers=16, timeout=120, notebooks=False)
    assert command[1:3] == ["-m", "pytest"] and f"--junitxml={tmp_path / 'j.xml'}" in command
    assert {"--doctest-modules", "forethought", "tests", "--timeout=120"} <= set(command)
    assert command[command.index("-n") + 1] == "16"
    alone = suite.suite_command(True, tmp_path / "j.xml", workers=1, timeout=None, notebooks=False)
    assert "-n" not in alone and not any(word.startswith("--timeout") for word in alone)
    assert suite._environment("cuda")["FORETHOUGHT_TEST_DEVICE"] == "cuda"
    rerun = suite.suite_command(False, tmp_path / "j.xml", workers=4, timeout=None, notebooks=False,
                                tests=["tests/test_a.py::test_b"])
    assert "tests/test_a.py::test_b" in rerun and "forethought" not in rerun, "named tests replace the suite"


@pytest.mark.slow
def test_suite_part_counts_a_real_run(tmp_path, monkeypatch):
    suite = _suite_module()
    monkeypatch.setitem(suite.SUITE_ARGS, True, ["--doctest-modules", "forethought/options.py"])
    figures = {}
    suite.suite(True, 200, figures.update, tmp_path)
    assert figures["device"] == "cpu" and figures["exit_code"] == 0 and figures["failed"] == 0
    assert figures["passed"] >= 1 and "cut_by_time_cap" not in figures
    assert (tmp_path / "suite_failures.txt").read_text().startswith("# 0 failing tests on cpu")


# ---- the commands part ---------------------------------------------------------------------------------------


def test_commands_cover_every_cli_command_and_parse(tmp_path):
    from forethought import cli
    from forethought.experiments.commands import COMMANDS
    from forethought.options import METHODS
    from forethought.regimes import REGIMES

    suite = _suite_module()
    models = {"gpt2": tmp_path / "gpt2", "llama": tmp_path / "llama"}
    commands = suite.command_list(tmp_path, models, "cuda")
    assert {command.cli_command for command in commands} == set(COMMANDS)  # a new command must join the list
    names = [command.name for command in commands]
    assert len(set(names)) == len(names)
    assert {f"train {regime}" for regime in REGIMES} <= set(names)
    assert {f"probe-sweep {method}" for method in METHODS} | {"probe-sweep --stream", "probe-sweep --run"} <= set(names)
    assert {"gradient-split --model", "gradient-split --synthetic-preset"} <= set(names)
    for index, command in enumerate(commands):
        assert set(command.needs) <= set(names[:index]), command.name  # what it reads comes earlier
        args = cli.build_parser(command.argv).parse_args(command.argv).command  # every flag exists
        assert args.device == "cuda", command.name
        assert str(tmp_path) in args.out and not getattr(args, "progress", False), command.name


def test_a_failed_command_skips_those_that_read_its_output(tmp_path, monkeypatch):
    suite = _suite_module()
    monkeypatch.setattr(suite, "_checkpoints", lambda folder: {"gpt2": folder / "gpt2"})
    monkeypatch.setattr(suite, "command_list", lambda work, models, device: [
        suite.Command("first", ["--version"]), suite.Command("broken", ["train", "--steps", "many"]),
        suite.Command("reader", ["--version"], needs=("broken",))])
    figures = {}
    suite.commands(True, 120, figures.update, tmp_path)
    rows = {row["name"]: row for row in figures["rows"]}
    assert rows["first"]["exit_code"] == 0 and rows["first"]["error"] is None
    assert rows["broken"]["exit_code"] == 2 and "--steps" in rows["broken"]["error"]
    assert rows["reader"]["exit_code"] is None and rows["reader"]["error"].startswith("skipped: needs broken")
    assert (figures["passed"], figures["failed"]) == (1, 2)
    log = (tmp_path / "commands.log").read_text()
    assert "===== broken: exit 2" in log and "invalid int value" in log


def _suite_module():
    import sys as system

    if str(BENCHMARKS) not in system.path:
        system.path.insert(0, str(BENCHMARKS))
    import gpu_check_suite

    return gpu_check_suite
