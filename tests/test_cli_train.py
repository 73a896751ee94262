"""``forethought train`` and ``forethought myopia-gap``: outputs, bad inputs, SIGKILL + --resume, SIGINT."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from devices import DEVICE, main

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = ["--dataset", "builtin", "--max-documents", "12", "--seq-len", "16", "--vocab-size", "300", "--n-layers", "2",
        "--d-model", "16", "--n-heads", "2", "--batch-size", "4", "--lr", "3e-3", "--no-progress"]


def _log(out):
    path = out / "log.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            break
    return records


def _bad(capsys, argv):
    """Run the CLI, expect exit code 2 and one error line (the last) on stderr, no traceback; return the line."""
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse rejects unknown choices and malformed values itself
        code = exit.code
    assert code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]  # HF may draw a weight-loading progress bar
    assert len(lines) == 1 and err.strip().endswith(lines[0]) and "Traceback" not in err, err
    return lines[0]


def test_train_writes_a_run_and_a_report(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY, "--steps", "4", "--eval-every", "2", "--checkpoint-every",
                 "2", "--regime", "myopic", "--mode", "cutgrad"]) == 0
    assert {"checkpoint.pt", "log.jsonl", "model", "report.json", "training_curve.png"} <= set(os.listdir(out))
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["regime"] == "myopic" and report["config"]["mode"] == "cutgrad"
    assert report["eval_loss"] == _log(out)[-1]["eval_loss"]
    assert report["provenance"]["seed"] == 0 and "torch" in report["provenance"]["packages"]
    assert "eval loss" in capsys.readouterr().out


@pytest.mark.slow
def test_myopia_gap_smoke_report_and_idempotent_resume(tmp_path, capsys):
    out = tmp_path / "gap"
    assert main(["myopia-gap", "--preset", "smoke", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    regimes = report["regimes"]
    assert set(regimes) == {"vanilla", "myopic", "bigram", "local-myopic"}
    for result in regimes.values():
        assert len(result["loss_by_position"]) == 15
        assert result["eval_loss"] == pytest.approx(sum(result["loss_by_position"]) / 15)
    assert report["myopia_gap"] == pytest.approx(regimes["myopic"]["eval_loss"] - regimes["vanilla"]["eval_loss"])
    assert report["bigram_gap"] == pytest.approx(regimes["bigram"]["eval_loss"] - regimes["vanilla"]["eval_loss"])
    assert report["provenance"]["seed"] == 0 and report["config"]["train"]["steps"] == 6
    for name in ("loss_by_position.png", "loss_difference.png", "training_curves.png", "loss_by_position.csv"):
        assert (out / name).stat().st_size > 0
    logs = {regime: (out / "runs" / regime / "log.jsonl").read_text() for regime in regimes}

    capsys.readouterr()
    assert "already holds a myopia-gap run" in _bad(capsys, ["myopia-gap", "--preset", "smoke", "--out", str(out)])
    assert main(["myopia-gap", "--preset", "smoke", "--out", str(out), "--resume", "--no-progress"]) == 0
    again = json.loads((out / "report.json").read_text())
    assert {k: v["eval_loss"] for k, v in again["regimes"].items()} == {k: v["eval_loss"] for k, v in regimes.items()}
    assert logs == {regime: (out / "runs" / regime / "log.jsonl").read_text() for regime in regimes}


def _corrupt(out):
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _payload(out):
    out.mkdir()
    torch.save({"format": "forethought-train-checkpoint-v1", "payload": _Payload()}, out / "checkpoint.pt")


BAD_INPUTS = {
    "zero steps": (["train", *TINY, "--steps", "0"], None, "steps=0"),
    "negative steps": (["myopia-gap", "--preset", "smoke", "--steps", "-5"], None, "steps=-5"),
    "zero batch size": (["train", *TINY, "--batch-size", "0"], None, "batch_size=0"),
    "negative batch size": (["myopia-gap", "--preset", "smoke", "--batch-size", "-2"], None, "batch_size=-2"),
    "zero lr": (["train", *TINY, "--lr", "0"], None, "lr=0.0"),
    "negative lr": (["myopia-gap", "--preset", "smoke", "--lr=-1e-3"], None, "lr=-0.001"),
    "unknown preset": (["myopia-gap", "--preset", "huge"], None, "invalid choice: 'huge'"),
    "unknown regime": (["myopia-gap", "--preset", "smoke", "--regimes", "vanilla,lazy"], None, "lazy"),
    "missing corpus": (["train", *TINY, "--dataset", "no/such/corpus.txt"], None, "does not exist"),
    "too-short corpus": (["train", *TINY, "--max-documents", "1", "--seq-len", "4000"], None, "too short"),
    "local-myopic without a past": (["train", *TINY, "--regime", "local-myopic"], None, "--past-model"),
    "corrupt checkpoint": (["train", *TINY, "--resume"], _corrupt, "corrupt or truncated"),
    "pickle payload": (["train", *TINY, "--resume"], _payload, "pickled objects"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_exit_2_with_one_line_and_no_output(tmp_path, capsys, monkeypatch, case):
    argv, prepare, message = BAD_INPUTS[case]
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    if prepare:
        prepare(out)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert message in _bad(capsys, [*argv, "--out", str(out)])
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "no partial output"


def test_unwritable_out_and_unusable_models(tmp_path, capsys, checkpoint_dirs):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    assert "not writable" in _bad(capsys, ["train", *TINY, "--out", str(blocker / "run")])
    assert "is a file" in _bad(capsys, ["train", *TINY, "--out", str(blocker)])
    out = str(tmp_path / "run")
    assert "no model" in _bad(capsys, ["train", *TINY, "--model", str(tmp_path), "--out", out])
    too_long = ["train", "--model", str(checkpoint_dirs["gpt2"]), "--max-documents", "12", "--seq-len", "128",
                "--out", out]
    assert "exceeds the model's context n_ctx=64" in _bad(capsys, too_long)
    if not torch.cuda.is_available():
        assert "device='cuda' is not available" in _bad(capsys, ["train", *TINY, "--device", "cuda", "--out", out])
    assert not (tmp_path / "run").exists()


def _spawn(args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    return subprocess.Popen([sys.executable, "-m", "forethought.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_step(process, out, step, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the run ended before step {step}: {process.stderr.read()}")
        records = _log(out)
        if records and records[-1]["step"] >= step:
            return records[-1]["step"]
        time.sleep(0.01)
    process.kill()
    pytest.fail(f"no step {step} within {timeout} s")


LONG_RUN = [*TINY, "--steps", "120", "--eval-every", "60", "--checkpoint-every", "10"]


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_the_uninterrupted_loss(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert main(["train", "--out", str(reference), *LONG_RUN]) == 0
    process = _spawn(["train", "--out", str(killed), *LONG_RUN])
    _wait_for_step(process, killed, 25)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert _log(killed)[-1]["step"] < 120, "the run must be killed mid-way"

    assert main(["train", "--out", str(killed), *LONG_RUN, "--resume"]) == 0  # same code path as a new process
    ours, theirs = _log(killed), _log(reference)
    assert [r["step"] for r in ours] == list(range(1, 121))
    for a, b in zip(ours, theirs, strict=True):
        assert a.keys() == b.keys()
        for key in b:
            assert a[key] == pytest.approx(b[key], abs=1e-6, rel=1e-6), (key, a, b)
    final = json.loads((killed / "report.json").read_text())["eval_loss"]
    assert final == pytest.approx(json.loads((reference / "report.json").read_text())["eval_loss"], abs=1e-6)


@pytest.mark.slow
def test_sigint_writes_a_checkpoint_and_exits_130(tmp_path):
    from forethought.myopic_training.trainer import read_checkpoint

    out = tmp_path / "interrupted"
    process = _spawn(["train", "--out", str(out), *LONG_RUN])
    _wait_for_step(process, out, 3)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == "forethought train: interrupted"
    last = _log(out)[-1]["step"]
    assert 3 <= last < 120
    assert read_checkpoint(out / "checkpoint.pt")["step"] == last


@pytest.mark.slow
def test_myopia_gap_killed_mid_regime_resumes_to_the_uninterrupted_report(tmp_path, monkeypatch):
    import forethought.experiments.myopia_gap as myopia_gap

    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    smoke = ["myopia-gap", "--preset", "smoke", "--regimes", "vanilla,myopic,bigram", "--steps", "8",
             "--no-progress"]
    assert main([*smoke, "--out", str(reference)]) == 0
    real_train = myopia_gap.train

    def crash_in_myopic(config, *args, **kwargs):
        def on_step(record):
            if config.regime == "myopic" and record["step"] == 5:
                raise RuntimeError("power cut")

        return real_train(config, *args, **kwargs, on_step=on_step)

    monkeypatch.setattr(myopia_gap, "train", crash_in_myopic)
    with pytest.raises(RuntimeError, match="power cut"):
        main([*smoke, "--out", str(crashed)])
    assert not (crashed / "report.json").exists() and not (crashed / "runs" / "bigram").exists()
    monkeypatch.setattr(myopia_gap, "train", real_train)
    assert main([*smoke, "--out", str(crashed), "--resume"]) == 0
    ours, theirs = (json.loads((out / "report.json").read_text()) for out in (crashed, reference))
    for regime, result in theirs["regimes"].items():
        assert ours["regimes"][regime]["eval_loss"] == pytest.approx(result["eval_loss"], abs=1e-6)
    assert ours["myopia_gap"] == pytest.approx(theirs["myopia_gap"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("start", ["gpt2 from scratch", "neox fine-tune"])
def test_hf_backed_presets(tmp_path, checkpoint_dirs, start):
    from forethought.experiments.myopia_gap import run_myopia_gap
    from forethought.experiments.presets import Preset
    from forethought.myopic_training import TrainConfig

    regimes = ("vanilla", "myopic", "local-myopic")
    if start == "neox fine-tune":
        preset = Preset(description="test", max_documents=12, seq_len=16, model=str(checkpoint_dirs["neox"]),
                        regimes=regimes)
    else:
        preset = Preset(description="test", max_documents=12, seq_len=16, tokenizer=300, regimes=regimes,
                        architecture={"family": "gpt2", "n_layers": 1, "d_model": 16, "n_heads": 2, "n_ctx": 32})
    config = TrainConfig(steps=3, batch_size=4, warmup_steps=0, eval_every=3, checkpoint_every=3, progress=False)
    report = run_myopia_gap(preset, tmp_path, config)
    assert set(report["regimes"]) == set(regimes) and report["local_myopia_gap"] is not None
    assert (tmp_path / "runs" / "local-myopic" / "past_model").is_dir()
    if start == "neox fine-tune":  # the frozen past is the pretrained model, and the tokenizer is the model's
        assert report["data"]["tokenizer"]["vocab_size"] == 300
        from forethought.models import load_model

        paths = (tmp_path / "runs" / "local-myopic" / "past_model", checkpoint_dirs["neox"])
        past, pretrained = (load_model(path, device=DEVICE).eval() for path in paths)
        tokens = torch.arange(16).view(1, 16)
        with torch.no_grad():
            torch.testing.assert_close(past(tokens), pretrained(tokens))
