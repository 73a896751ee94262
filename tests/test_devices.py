"""Devices by construction: every tensor the package creates names its device, and the device switch works."""

import ast
from pathlib import Path

import pytest
import torch
from devices import DEVICE, tolerance

import forethought

PACKAGE = Path(forethought.__file__).parent
#: torch functions that create a tensor (or generator) on the default device unless told otherwise.
FACTORIES = {"zeros", "ones", "empty", "full", "arange", "randperm", "randint", "rand", "randn", "tensor",
             "as_tensor", "linspace", "eye", "Generator"}
#: (file, function) pairs allowed to create a tensor without ``device=``, each with the reason. Keep it short.
ALLOWED: dict[tuple[str, str], str] = {}


def _factory_calls_without_device():
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for function in [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            for node in ast.walk(function):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                        and node.func.attr in FACTORIES and not any(k.arg == "device" for k in node.keywords)):
                    where = (str(path.relative_to(PACKAGE.parent)), function.name)
                    if where not in ALLOWED:
                        yield f"{where[0]}:{node.lineno} in {function.name}(): {ast.unparse(node)[:90]}"


def test_every_tensor_factory_names_its_device():
    """A tensor created without ``device=`` lands on the CPU (or wherever torch's default device points) and breaks
    the first operation that meets a GPU tensor: the package takes every device from its inputs or names it."""
    offenders = sorted(set(_factory_calls_without_device()))
    assert not offenders, "tensor factories without device=:\n" + "\n".join(offenders)


def test_the_walk_finds_a_factory_without_device(tmp_path, monkeypatch):
    """The check can fail: a module with ``torch.zeros(3)`` is reported."""
    global PACKAGE
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "bad.py").write_text("import torch\n\ndef f():\n    return torch.zeros(3)\n")
    monkeypatch.setattr("test_devices.PACKAGE", tmp_path / "pkg")
    assert [line.split(" in ")[0] for line in _factory_calls_without_device()] == ["pkg/bad.py:4"]


def test_the_suite_device_is_the_one_asked_for(device, native_model):
    assert device == DEVICE
    assert next(native_model.parameters()).device.type == DEVICE.type


def test_tolerances_widen_only_off_the_cpu():
    assert tolerance(1e-5, 1e-6) == pytest.approx({"rtol": 1e-5, "atol": 1e-6} if DEVICE.type == "cpu"
                                                  else {"rtol": 1e-4, "atol": 1e-5})


def test_cpu_tokens_with_a_model_on_the_device(native_model):
    """Tokens on the CPU with a model on the suite's device: the mixed case users meet."""
    from forethought.probes import probe_sweep

    tokens = torch.randint(0, native_model.cfg.d_vocab, (24, 12), generator=torch.Generator().manual_seed(0))
    table = probe_sweep(native_model, tokens, offsets=[0, 1], top_k=20, progress=False)
    assert table["top1"].between(0, 1).all() and table["gain_over_baseline_ci_low"].notna().all()


def test_probes_fitted_on_one_device_score_on_another(native_model, tmp_path):
    """Probes saved from the device load on the CPU (``load_probes(device=)``) and give the same logits there."""
    from forethought.probes import load_probes, probe_sweep

    tokens = torch.randint(0, native_model.cfg.d_vocab, (24, 12), generator=torch.Generator().manual_seed(0))
    probe_sweep(native_model, tokens, offsets=[0], progress=False, save_dir=tmp_path)
    here = load_probes(tmp_path / "model" / "vocab", model=native_model)
    there = load_probes(tmp_path / "model" / "vocab", device="cpu")
    assert here.device.type == DEVICE.type and there.device.type == "cpu"
    features = torch.randn(len(here.layers), 5, here.d_model, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(here.logits(features).cpu(), there.logits(features), **tolerance(1e-5, 1e-5))
    torch.testing.assert_close(here.to("cpu").logits(features), there.logits(features))


@pytest.mark.cpu_only
def test_explicit_cpu_equals_the_default():
    """``--device cpu`` given explicitly is the default run: the same device, the same tests, the same outcome."""
    import subprocess
    import sys

    here = Path(__file__).parent
    runs = [subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra,
                            f"{here / 'test_devices.py'}::test_the_suite_device_is_the_one_asked_for"],
                           cwd=here.parent, capture_output=True, text=True, env={**__import__("os").environ,
                                                                                 "FORETHOUGHT_TEST_DEVICE": ""})
            for extra in ([], ["--device", "cpu"])]
    assert [run.returncode for run in runs] == [0, 0], runs[1].stdout[-500:]
    assert all("1 passed" in run.stdout for run in runs)
