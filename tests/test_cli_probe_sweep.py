"""`forethought probe-sweep`: output files, and bad input as exit code 2 with one line on stderr."""

import json

import pandas as pd
import pytest
from devices import DEVICE, main

from forethought.models import save_model, tiny_model

REQUIRED = ["model", "layer", "offset", "method", "top1", "top5", "cross_entropy", "unigram_top1", "bigram_top1",
            "control_top1", "selectivity", "n_train", "n_test"]


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("models")
    return {name: save_model(tiny_model(n_layers=2, d_model=32, n_heads=4, d_vocab=len(tokenizer), n_ctx=64,
                                        tokenizer=tokenizer, seed=seed, device=DEVICE), root / name)
            for seed, name in enumerate(["vanilla", "myopic"])}


def _args(model_dirs, out, *extra):
    return ["probe-sweep", "--model", f"vanilla={model_dirs['vanilla']}", "--model", f"myopic={model_dirs['myopic']}",
            "--dataset", "builtin", "--seq-len", "24", "--max-sequences", "80", "--offsets", "0,1",
            "--top-k", "20", "--max-epochs", "3", "--no-progress", "--out", str(out), *extra]


def test_writes_table_figure_and_report(model_dirs, tmp_path):
    assert main(_args(model_dirs, tmp_path / "out", "--save-probes")) == 0
    out = tmp_path / "out"
    table = pd.read_csv(out / "probes.csv")
    assert set(REQUIRED) <= set(table.columns)
    assert len(table) == 2 * 3 * 2  # two models × three depths × two offsets
    assert (out / "probe_top1.png").stat().st_size > 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["models"]) == {"vanilla", "myopic"} and report["provenance"]["seed"] == 0
    assert report["data"]["n_test"] == table["n_test"].iloc[0]
    assert (out / "probes" / "myopic" / "vocab" / "probes.safetensors").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_learned_prompt_sweep_and_its_lens_view(model_dirs, tmp_path):
    """The command takes the method from the registry; --max-epochs caps it; lens-view reads its saved prompts."""
    out = tmp_path / "out"
    assert main(["probe-sweep", "--model", f"vanilla={model_dirs['vanilla']}", "--dataset", "builtin", "--seq-len",
                 "16", "--max-sequences", "30", "--offsets", "0,1", "--top-k", "20", "--max-epochs", "1",
                 "--method", "learned_prompt", "--save-probes", "--no-progress", "--out", str(out)]) == 0
    table = pd.read_csv(out / "probes.csv")
    assert set(table["method"]) == {"learned_prompt"} and len(table) == 3 * 2 and table["top1"].notna().all()
    saved = json.loads((out / "probes" / "vanilla" / "learned_prompt" / "probes.json").read_text())
    assert saved["kind"] == "learned_prompt" and saved["meta"]["epochs"] <= 1
    view = tmp_path / "view"
    assert main(["lens-view", "--model", str(model_dirs["vanilla"]), "--probes",
                 str(out / "probes" / "vanilla" / "learned_prompt"), "--prompt", "The cat sat on the mat.",
                 "--offset", "1", "--out", str(view)]) == 0
    assert (view / "lens_view.csv").exists()


@pytest.mark.parametrize("extra, message", [
    (["--offsets", "0,40"], "offset=40"),
    (["--layers", "7"], "layer=7"),
    (["--method", "telepathy"], "telepathy"),
    (["--offsets", "a,b"], "comma-separated"),
    (["--model", "no-equals-sign"], "NAME=DIR_OR_HUB_NAME"),
    (["--stream", "--method", "vocab,ridge"], "stream=True"),
    (["--stream-dir", "no-such-dir"], "stream_dir"),
])
def test_bad_input_exits_2_with_one_line(model_dirs, tmp_path, capsys, extra, message):
    assert main(_args(model_dirs, tmp_path / "out", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_streaming_writes_the_same_table(model_dirs, tmp_path):
    tables = {}
    for flag in ("--stream", "--no-stream"):
        out = tmp_path / flag.strip("-")
        assert main(_args(model_dirs, out, flag, "--stream-dir", str(tmp_path))) == 0
        tables[flag] = pd.read_csv(out / "probes.csv")
    pd.testing.assert_frame_equal(tables["--stream"], tables["--no-stream"], rtol=1e-5)
    assert json.loads((tmp_path / "stream" / "report.json").read_text())["config"]["stream"] is True


def test_missing_model_directory(tmp_path, capsys):
    args = ["probe-sweep", "--model", f"x={tmp_path / 'nothing-here'}", "--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_run_is_probed_on_its_own_split_with_a_spread_over_seeds(tmp_path, capsys):
    """probe-sweep --run DIR probes a `train` run on the run's own validation split; --seeds reports the spread
    over probe seeds; data options that would redraw the data are refused."""
    import forethought

    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--dataset", "builtin", "--max-documents", "12", "--seq-len", "16",
                 "--vocab-size", "300", "--n-layers", "1", "--d-model", "16", "--n-heads", "2", "--batch-size", "4",
                 "--steps", "2", "--regime", "myopic", "--no-progress"]) == 0
    out = tmp_path / "probes"
    assert main(["probe-sweep", "--run", str(run), "--offsets", "0,1", "--top-k", "10", "--max-epochs", "2",
                 "--seeds", "0,1", "--no-control", "--no-progress", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    loaded = forethought.load_run(run, models=False)
    assert report["data"]["validation_sha256"] == loaded.manifest["validation_sha256"]
    assert report["data"]["test_sequences"] == len(loaded.splits.validation)
    assert report["models"]["model"]["trained"]["trained_as"] == "myopic"
    assert report["label_space"]["label_space"] == ["top10+other"]
    spread = pd.read_csv(out / "probe_seeds.csv")
    assert (spread["n_seeds"] == 2).all() and (spread["top1_std"] >= 0).all()
    assert set(pd.read_csv(out / "probes.csv")["seed"]) == {0, 1}
    capsys.readouterr()
    assert main(["probe-sweep", "--run", str(run), "--seq-len", "8", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be combined with --run" in err[0]


def test_a_run_model_is_probed_on_its_run_split_and_never_on_its_training_text(tmp_path, capsys):
    """probe-sweep --model NAME=RUN/model finds the run the model belongs to and probes it on the run's own split
    (the report says where the model came from); cutting the same corpus afresh, which puts training sequences in
    the test split, is refused in one line."""
    import forethought

    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--dataset", "builtin", "--max-documents", "40", "--seq-len", "16",
                 "--vocab-size", "300", "--n-layers", "1", "--d-model", "16", "--n-heads", "2", "--batch-size", "4",
                 "--steps", "2", "--no-progress"]) == 0
    out = tmp_path / "probes"
    base = ["probe-sweep", "--model", f"m={run / 'model'}", "--offsets", "0", "--max-epochs", "1", "--no-control",
            "--no-progress"]
    assert main([*base, "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    loaded = forethought.load_run(run, models=False)
    assert report["data"]["validation_sha256"] == loaded.manifest["validation_sha256"]
    assert report["data"]["source"] == "run"
    assert report["models"]["m"]["trained"]["run"] == str(run.resolve())
    capsys.readouterr()
    assert main([*base, "--dataset", "builtin", "--seq-len", "16", "--val-fraction", "0.5",
                 "--out", str(tmp_path / "fresh")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training split" in err[0], err
    assert not (tmp_path / "fresh").exists()
