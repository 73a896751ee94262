"""The CLI's error contract: exit code 2, exactly one line on stderr, no traceback, nothing under ``--out``.

Start-up cases run as real subprocesses (what a user sees); the others call :func:`forethought.cli.main`.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from devices import one_error_line

from forethought import __version__
from forethought.models import save_random_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = ["--max-documents", "12", "--seq-len", "16", "--vocab-size", "300", "--n-layers", "1", "--d-model", "16",
        "--n-heads", "2", "--batch-size", "4", "--steps", "2", "--no-progress"]


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "forethought.cli", *argv], capture_output=True, text=True,
                          check=False, timeout=600)




def test_bare_command_prints_help():
    process = _cli()
    assert process.returncode == 0 and "usage: forethought" in process.stdout and process.stderr == ""
    for command in ("train", "myopia-gap", "probe-sweep", "compare", "synthetic", "lens-view"):
        assert command in process.stdout


def test_version():
    process = _cli("--version")
    assert process.returncode == 0 and process.stdout.strip() == f"forethought {__version__}"


def test_argument_error_is_one_line_from_a_subprocess(tmp_path):
    process = _cli("train", "--out", str(tmp_path / "out"), "--steps", "many")
    assert process.returncode == 2 and process.stdout == ""
    assert len(process.stderr.strip().splitlines()) == 1 and "--steps" in process.stderr
    assert not (tmp_path / "out").exists()


def test_help_shows_defaults():
    text = " ".join(_cli("train", "--help").stdout.split())
    assert "optimizer steps (default: 500)" in text and "sequences per step (default: 32)" in text


@pytest.mark.parametrize("argv, message", [
    (["--out", ""], "--out is empty"),
    (["--dataset", ""], "text source is empty"),
    (["--seed", "-1"], "seed=-1"),
    (["--seed", str(2**40)], "seed="),
    (["--lr", "inf"], "lr=inf"),
    (["--lr", "nan"], "lr=nan"),
])
def test_train_refuses_bad_values_before_creating_out(tmp_path, capsys, argv, message):
    argv = ["train", "--out", str(tmp_path / "out"), *TINY, *argv]
    if "--out" in argv[3:]:  # the case replaces --out
        argv = argv[3:]
        argv.insert(0, "train")
    assert message in one_error_line(capsys, argv)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
    ("caf\u00e9 au lait, encore un\n\n".encode("latin-1") * 20, "not UTF-8"),
])
def test_train_refuses_binary_and_non_utf8_text(tmp_path, capsys, content, message):
    source = tmp_path / "corpus.txt"
    source.write_bytes(content)
    line = one_error_line(capsys, ["train", "--out", str(tmp_path / "out"), *TINY, "--dataset", str(source)])
    assert message in line and "corpus.txt" in line
    assert not (tmp_path / "out").exists()


@pytest.fixture
def gpt2_dir(tmp_path, tokenizer):
    return save_random_checkpoint("gpt2", tmp_path / "gpt2", d_model=16, n_layers=1, n_heads=2, n_ctx=32,
                                  tokenizer=tokenizer)


def _probe_sweep(model_dir, out) -> list[str]:
    return ["probe-sweep", "--model", f"m={model_dir}", "--out", str(out), "--max-sequences", "20", "--seq-len",
            "8", "--offsets", "0", "--no-progress"]


def test_malformed_config_json_is_named(tmp_path, capsys, gpt2_dir):
    (gpt2_dir / "config.json").write_text("{not json")
    line = one_error_line(capsys, _probe_sweep(gpt2_dir, tmp_path / "out"))
    assert "config.json" in line and "not valid JSON" in line
    assert not (tmp_path / "out").exists()


def test_model_without_tokenizer_files_is_refused(tmp_path, capsys, gpt2_dir):
    for path in gpt2_dir.iterdir():
        if "token" in path.name or path.name in ("vocab.json", "merges.txt", "special_tokens_map.json"):
            path.unlink()
    line = one_error_line(capsys, _probe_sweep(gpt2_dir, tmp_path / "out"))
    assert "no tokenizer files" in line
    assert not (tmp_path / "out").exists()


def test_pickled_weights_are_refused_without_advising_weights_only_false(tmp_path, capsys, gpt2_dir):
    import pickle

    for path in gpt2_dir.glob("*.safetensors"):
        path.unlink()

    class Payload:
        def __reduce__(self):
            return (print, ("this ran",))

    (gpt2_dir / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": Payload()}))
    line = one_error_line(capsys, _probe_sweep(gpt2_dir, tmp_path / "out"))
    assert "weights_only" not in line and "refus" in line.lower()
    assert json.loads((gpt2_dir / "config.json").read_text())["model_type"] == "gpt2"


def test_import_forethought_stays_light():
    code = ("import sys, forethought; heavy = [m for m in ('transformer_lens', 'transformers', 'sklearn', "
            "'matplotlib', 'datasets', 'accelerate') if m in sys.modules]; print(heavy)")
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert process.stdout.strip() == "[]"


def test_every_public_name_resolves():
    import forethought

    for name in forethought.__all__:
        assert getattr(forethought, name) is not None, name


@pytest.mark.parametrize("device", [
    pytest.param("cuda", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    "gpu", "cuda:7", ""])
def test_probe_sweep_refuses_a_bad_device_before_creating_out(tmp_path, capsys, gpt2_dir, device):
    line = one_error_line(capsys, [*_probe_sweep(gpt2_dir, tmp_path / "out"), "--device", device])
    assert "device" in line
    assert not (tmp_path / "out").exists()


def test_probe_sweep_function_checks_its_device(native_model):
    from forethought.data import TokenSplits
    from forethought.errors import InvalidArgumentError
    from forethought.probes import probe_sweep

    tokens = torch.zeros(8, 8, dtype=torch.long)
    with pytest.raises(InvalidArgumentError, match="device"):
        probe_sweep(native_model, TokenSplits(train=tokens, validation=tokens, tokenizer=None), device="tpu",
                    progress=False)
