"""``forethought gradient-split``: a language model, a synthetic checkpoint, and the split over synthetic training."""

import json
from dataclasses import replace

import pandas as pd
import pytest
from devices import main

from forethought.experiments.gradient_split import huber_loss, synthetic_batches
from forethought.myopic_training.gradient_split import gradient_split
from forethought.synthetic import PRESETS, train_regime

PNG = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.usefixtures("single_thread")


def _run(*argv):
    """The CLI's exit code, whether argparse or the runner rejected the input."""
    try:
        return main(["gradient-split", *argv])
    except SystemExit as exit_:
        return exit_.code


def _check_outputs(out):
    report = json.loads((out / "report.json").read_text())
    assert {"command", "source", "config", "split", "definitions", "provenance"} <= set(report)
    assert (out / "gradient_split.png").read_bytes()[:8] == PNG
    assert not [path for path in out.iterdir() if path.name.startswith(".")]  # no temporary files left
    return report, pd.read_csv(out / "gradient_split.csv")


def test_language_model(tmp_path, checkpoint_dirs):
    out = tmp_path / "lm"
    code = _run("--model", str(checkpoint_dirs["gpt2"]), "--seq-len", "16", "--batches", "2", "--batch-size", "4",
                "--out", str(out), "--no-progress")
    assert code == 0
    report, frame = _check_outputs(out)
    assert set(report["total_precaching_share"]) == {"strict", "cutgrad"}
    assert len(frame) == 2 * frame["group"].nunique() and "blocks.1.attn.W_K" in set(frame["group"])
    batches = pd.read_csv(out / "gradient_split_batches.csv")
    assert set(batches["batch"]) == {0, 1}


def test_synthetic_checkpoint_matches_the_python_api(tmp_path):
    config = replace(PRESETS["smoke"], steps=3, warmup_steps=1)
    checkpoint = tmp_path / "vanilla.pt"
    run = train_regime(config, "vanilla", progress=False, checkpoint=checkpoint)
    out = tmp_path / "split"
    assert _run("--synthetic-checkpoint", str(checkpoint), "--modes", "strict", "--batches", "2", "--batch-size", "8",
                "--out", str(out)) == 0
    report, _ = _check_outputs(out)
    expected = gradient_split(run.model, synthetic_batches(config, 2, 8), loss_fn=huber_loss(config.huber_delta),
                              modes="strict")
    assert report["total_precaching_share"]["strict"] == pytest.approx(expected.share("strict"), rel=1e-6)


def test_over_synthetic_training(tmp_path):
    out = tmp_path / "over"
    assert _run("--synthetic-preset", "smoke", "--steps", "4", "--every", "2", "--batches", "1", "--batch-size", "8",
                "--out", str(out), "--no-progress") == 0
    report, frame = _check_outputs(out)
    assert sorted(frame["step"].unique()) == [0, 2, 4]
    assert set(report["total_precaching_share_by_step"]["strict"]) == {"0", "2", "4"}
    assert (out / "gradient_split_final.png").read_bytes()[:8] == PNG


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert _run("--synthetic-preset", "smoke", "--batches", "0", "--out", str(tmp_path / "x")) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert _run("--model", str(tmp_path / "missing"), "--out", str(tmp_path / "y")) == 2
    assert _run("--out", str(tmp_path / "z")) == 2  # no source


def test_train_command_plots_the_split_over_training(tmp_path):
    out = tmp_path / "train"
    assert main(["train", "--out", str(out), "--steps", "4", "--batch-size", "4", "--seq-len", "16", "--n-layers", "1",
                 "--d-model", "16", "--n-heads", "2", "--vocab-size", "300", "--max-documents", "20", "--eval-every",
                 "2", "--gradient-split-every", "2", "--device", "cpu", "--no-progress"]) == 0
    assert (out / "gradient_split.png").read_bytes()[:8] == PNG
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "gradient_split" in r] == [2, 4]
