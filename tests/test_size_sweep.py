"""``forethought myopia-gap --models``: a sweep over model sizes, on two random GPT-2 stand-ins of different sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import transformers
from devices import main

from forethought.data import load_texts, train_tokenizer
from forethought.experiments.size_sweep import parse_model_list
from forethought.models import save_random_checkpoint
from forethought.plots import plot_gap_by_size
from forethought.runs import load_run

pytestmark = pytest.mark.usefixtures("single_thread")

SMOKE = ["myopia-gap", "--preset", "smoke", "--no-progress"]


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory, tokenizer):
    """Random GPT-2 checkpoints sharing one tokenizer: ``small`` (1 layer, d=16), ``large`` (2 layers, d=32), and
    ``short`` (a context of 8 tokens, shorter than the smoke preset's sequences)."""
    root = tmp_path_factory.mktemp("sizes")
    return {"small": save_random_checkpoint("gpt2", root / "small", d_model=16, n_layers=1, n_heads=2, n_ctx=32,
                                            tokenizer=tokenizer),
            "large": save_random_checkpoint("gpt2", root / "large", d_model=32, n_layers=2, n_heads=2, n_ctx=32,
                                            tokenizer=tokenizer, seed=1),
            "short": save_random_checkpoint("gpt2", root / "short", d_model=16, n_layers=1, n_heads=2, n_ctx=8,
                                            tokenizer=tokenizer)}


def _files(directory):
    """Every file under ``directory`` with its modification time and contents."""
    return {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in sorted(directory.rglob("*"))
            if path.is_file()}


def _one_error_line(capsys, argv):
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if "error" in line]  # in-process, HF may draw a loading bar first
    assert len(lines) == 1 and err.strip().endswith(lines[0]) and "Traceback" not in err, err
    return lines[0]


def test_table_has_each_models_size_and_its_own_report(tmp_path, stand_ins):
    out = tmp_path / "sweep"
    # the larger model first: the table is ordered by size, not by the command line
    assert main([*SMOKE, "--regimes", "vanilla,myopic,bigram", "--out", str(out),
                 "--models", f"large={stand_ins['large']}", str(stand_ins["small"])]) == 0
    table = pd.read_csv(out / "size_sweep.csv")
    document = json.loads((out / "size_sweep.json").read_text())
    assert list(table["model"]) == ["small", "large"] == [row["model"] for row in document["models"]]
    for row in table.itertuples():
        expected = transformers.AutoModelForCausalLM.from_pretrained(stand_ins[row.model]).num_parameters()
        assert row.n_parameters == expected
        report = json.loads((out / "models" / row.model / "report.json").read_text())
        for key in ("myopia_gap", "myopia_gap_ci_low", "myopia_gap_ci_high", "bigram_gap", "myopia_gap_fraction"):
            assert getattr(row, key) == pytest.approx(report[key], rel=1e-12), key
        for regime in ("vanilla", "myopic", "bigram"):
            assert getattr(row, f"eval_loss_{regime}") == pytest.approx(report["regimes"][regime]["eval_loss"],
                                                                       rel=1e-12)
        assert row.run == f"models/{row.model}"
    assert table["n_parameters"].is_unique
    assert (out / "myopia_gap_by_size.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = {name: load_run(out / "models" / name, models=False) for name in ("small", "large")}
    assert runs["small"].command == "myopia-gap" and set(runs["small"].trained) == {"vanilla", "myopic", "bigram"}
    for split in ("train", "validation"):  # one data split, the same tokens, for every model
        assert bool((getattr(runs["small"].splits, split) == getattr(runs["large"].splits, split)).all())
    assert document["data"]["validation_sha256"] == runs["large"].manifest["validation_sha256"]


def test_resume_trains_only_the_unfinished_model(tmp_path, stand_ins, monkeypatch, capsys):
    import forethought.experiments.myopia_gap as myopia_gap

    out = tmp_path / "sweep"
    argv = [*SMOKE, "--regimes", "vanilla,myopic", "--out", str(out),
            "--models", f"small={stand_ins['small']}", f"large={stand_ins['large']}"]
    real_train = myopia_gap.train
    trained = []

    def crash_in_large_myopic(config, *args, **kwargs):
        def on_step(record):
            if "large" in str(config.out_dir) and config.regime == "myopic" and record["step"] == 5:
                raise RuntimeError("power cut")

        return real_train(config, *args, **kwargs, on_step=on_step)

    def spy(config, *args, **kwargs):
        trained.append(config.out_dir.relative_to(out).parts[1])
        return real_train(config, *args, **kwargs)

    monkeypatch.setattr(myopia_gap, "train", crash_in_large_myopic)
    with pytest.raises(RuntimeError, match="power cut"):
        main(argv)
    assert (out / "models" / "small" / "report.json").exists() and not (out / "size_sweep.csv").exists()
    small = _files(out / "models" / "small")

    monkeypatch.setattr(myopia_gap, "train", spy)
    assert main([*argv, "--resume"]) == 0
    assert trained == ["large", "large"] and _files(out / "models" / "small") == small
    steps = [json.loads(line)["step"] for line in (out / "models/large/runs/myopic/log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))  # continued from the checkpoint at step 3, not started again
    first = json.loads((out / "models" / "large" / "report.json").read_text())

    (out / "models" / "large" / "report.json").unlink()
    trained.clear()
    assert main([*argv, "--resume"]) == 0
    assert trained == ["large", "large"] and _files(out / "models" / "small") == small
    again = json.loads((out / "models" / "large" / "report.json").read_text())
    assert again["myopia_gap"] == first["myopia_gap"]
    table = pd.read_csv(out / "size_sweep.csv")
    assert list(table["model"]) == ["small", "large"]
    assert table.loc[1, "myopia_gap"] == pytest.approx(first["myopia_gap"], rel=1e-12)

    assert "already holds a size sweep" in _one_error_line(capsys, argv)
    assert "other settings (steps)" in _one_error_line(capsys, [*argv, "--resume", "--steps", "7"])
    assert _files(out / "models" / "small") == small


def test_models_with_other_tokenizers_are_refused(tmp_path, stand_ins, capsys):
    other = train_tokenizer(load_texts("builtin")[30:60], vocab_size=300)
    foreign = save_random_checkpoint("gpt2", tmp_path / "foreign", d_model=16, n_layers=1, n_heads=2, n_ctx=32,
                                     tokenizer=other)
    out = tmp_path / "sweep"
    line = _one_error_line(capsys, [*SMOKE, "--out", str(out), "--models", str(stand_ins["small"]), str(foreign)])
    assert "'small' and 'foreign' use different tokenizers" in line
    assert not out.exists()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.run([sys.executable, "-m", "forethought.cli", *SMOKE, "--out", str(out), "--models",
                              str(stand_ins["small"]), str(foreign)], capture_output=True, text=True, env=env,
                             check=False, timeout=600)
    assert process.returncode == 2 and process.stderr.splitlines() == [line]  # a real run: one line, nothing else
    assert not out.exists()


@pytest.mark.parametrize("specs, message", [
    (["=MODEL"], "is not NAME=DIR_OR_HUB_NAME"),
    (["small="], "is not NAME=DIR_OR_HUB_NAME"),
    (["a=MODEL", "a=MODEL"], "used twice"),
    (["../up=MODEL"], "name '../up' is not allowed"),
    ([], "expected at least one argument"),
    (["missing=no/such/model"], "not available offline"),
    (["short=SHORT"], "context of 8 tokens"),
])
def test_bad_models_exit_2_with_one_line_and_no_output(tmp_path, stand_ins, capsys, specs, message):
    specs = [spec.replace("MODEL", str(stand_ins["small"])).replace("SHORT", str(stand_ins["short"]))
             for spec in specs]
    out = tmp_path / "sweep"
    assert message in _one_error_line(capsys, [*SMOKE, "--out", str(out), "--models", *specs])
    assert not out.exists()


def test_plain_names_are_named_after_their_last_part():
    assert parse_model_list(["EleutherAI/pythia-70m", "runs/small/", "big=/models/x"]) == {
        "pythia-70m": "EleutherAI/pythia-70m", "small": "runs/small/", "big": "/models/x"}


def test_figure_error_bars_span_each_interval_on_a_log_axis():
    table = pd.DataFrame({"model": ["b", "a"], "n_parameters": [1e8, 1e6], "myopia_gap": [0.02, 0.05],
                          "myopia_gap_ci_low": [-0.01, 0.03], "myopia_gap_ci_high": [0.04, 0.08]})
    ax = plot_gap_by_size(table).axes[0]
    assert ax.get_xscale() == "log"
    assert any(list(line.get_ydata()) == [0.0, 0.0] for line in ax.get_lines())  # the zero line
    (bars,) = ax.collections  # one vertical segment per model, smallest first
    spans = [value for segment in bars.get_segments() for value in segment[:, 1]]
    assert spans == pytest.approx([0.03, 0.08, -0.01, 0.04], abs=1e-12)
    assert [segment[0, 0] for segment in bars.get_segments()] == [1e6, 1e8]
