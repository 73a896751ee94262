"""The regime comparison: losses, gap and probe accuracy side by side, from the API and the CLI."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
from devices import DEVICE

from forethought.data import TokenSplits
from forethought.errors import InvalidArgumentError
from forethought.experiments.compare import compare_regimes, side_by_side
from forethought.models import save_model, tiny_model


@pytest.fixture(scope="module")
def regime_models(tokenizer):
    return {name: tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=len(tokenizer), n_ctx=16, seed=seed,
                             tokenizer=tokenizer, device=DEVICE)
            for seed, name in enumerate(["vanilla", "myopic", "bigram"])}


def _splits(vocab):
    tokens = torch.randint(0, vocab, (50, 16), generator=torch.Generator().manual_seed(0))
    return TokenSplits(train=tokens[:40], validation=tokens[40:], tokenizer=None)


@pytest.mark.slow
def test_compare_writes_every_artefact(regime_models, tokenizer, tmp_path):
    result = compare_regimes(regime_models, _splits(len(tokenizer)), out_dir=tmp_path, offsets=[0, 1],
                             progress=False)
    assert set(result.losses.regimes) == {"vanilla", "myopic", "bigram"}
    assert set(result.probes["model"]) == {"vanilla", "myopic"}, "the bigram model is not probed"
    assert len(result.comparison) == 2 * 2  # (layers 0..1) x (offsets 0, 1)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["myopia_gap"] == pytest.approx(report["regimes"]["myopic"]["eval_loss"]
                                                 - report["regimes"]["vanilla"]["eval_loss"])
    for name in report["files"]:
        assert (tmp_path / name).stat().st_size > 0
    frame = result.to_frame()
    assert frame.equals(result.comparison) and frame is not result.comparison
    assert len(result.plot().axes) >= 2  # one heatmap per probed model
    assert repr(result).startswith("RegimeComparison(MyopiaReport(") and "2 models" in repr(result)
    assert "\n" not in repr(result) and len(repr(result)) < 400


def test_side_by_side_differences():
    import pandas as pd

    probes = pd.DataFrame({"model": ["vanilla", "myopic", "vanilla", "myopic"], "layer": [0, 0, 1, 1],
                           "offset": [0, 0, 0, 0], "method": ["vocab"] * 4, "top1": [0.5, 0.25, 0.75, 0.5]})
    table = side_by_side(probes, "vanilla")
    assert table["myopic_minus_vanilla"].tolist() == [-0.25, -0.25]
    assert table.columns.tolist() == ["layer", "offset", "method", "vanilla_top1", "myopic_top1",
                                      "myopic_minus_vanilla"]


def test_unknown_baseline(regime_models, tokenizer):
    with pytest.raises(InvalidArgumentError, match="baseline='base'"):
        compare_regimes(regime_models, _splits(len(tokenizer)), baseline="base", progress=False)


@pytest.mark.slow
def test_cli_from_saved_models(regime_models, tmp_path):
    for name in ("vanilla", "myopic"):
        save_model(regime_models[name], tmp_path / name)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "forethought.cli", "compare", "--model", f"vanilla={tmp_path / 'vanilla'}",
               "--model", f"myopic={tmp_path / 'myopic'}", "--seq-len", "16", "--max-sequences", "60",
               "--offsets", "0,1", "--out", str(out), "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (out / "probe_comparison.csv").exists() and (out / "probe_top1.png").exists()


@pytest.mark.slow
def test_cli_bad_run_directory(tmp_path):
    done = subprocess.run([sys.executable, "-m", "forethought.cli", "compare", "--run", str(tmp_path), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "holds no run.json" in done.stderr


def _one_error_line(capsys, argv):
    from devices import main

    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit:
        code = exit.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A smoke myopia-gap run on a local text file (so that the test can change the file afterwards)."""
    from devices import main

    from forethought.data import load_texts

    folder = tmp_path_factory.mktemp("smoke")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n\n".join(load_texts("builtin")[:12]))
    assert main(["myopia-gap", "--preset", "smoke", "--dataset", str(corpus), "--out", str(folder / "run"),
                 "--no-progress"]) == 0
    return folder / "run", corpus


def test_load_run_rebuilds_the_exact_training_data_and_models(smoke_run):
    import forethought
    from forethought.models import load_model

    run_dir, _ = smoke_run
    run = forethought.load_run(run_dir, device=DEVICE)
    assert set(run.models) == {"vanilla", "myopic", "bigram", "local-myopic"}
    assert run.trained_as["myopic"] == "myopic" and run.trained["myopic"]["mode"] == "strict"
    from forethought.data import load_texts, make_token_splits, train_tokenizer

    texts = load_texts(smoke_run[1], max_documents=12)  # what the smoke preset trained on, rebuilt by hand
    used = make_token_splits(texts, train_tokenizer(texts, vocab_size=300), seq_len=16, val_fraction=0.05, seed=0)
    assert torch.equal(run.splits.train, used.train) and torch.equal(run.splits.validation, used.validation)
    report = json.loads((run_dir / "report.json").read_text())
    assert report["data"]["validation_sha256"] == run.manifest["validation_sha256"]
    assert len(run.splits.validation) == report["data"]["n_validation"]
    saved = load_model(run_dir / "runs" / "myopic" / "model", device=DEVICE)
    for ours, theirs in zip(run.models["myopic"].state_dict().values(), saved.state_dict().values(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert run.tokenizer.get_vocab() == saved.tokenizer.get_vocab()


@pytest.mark.slow
def test_compare_run_reproduces_the_myopia_gap_and_refuses_changed_data(smoke_run, tmp_path, capsys):
    from devices import main

    run_dir, corpus = smoke_run
    trained = json.loads((run_dir / "report.json").read_text())
    assert main(["compare", "--run", str(run_dir), "--out", str(tmp_path / "cmp"), "--offsets", "0,1", "--top-k",
                 "20", "--max-epochs", "3", "--no-progress"]) == 0
    compared = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert compared["config"]["max_epochs"] == 3
    pairs = pd.read_csv(tmp_path / "cmp" / "probe_comparison.csv")
    difference = pairs["myopic_minus_vanilla"]
    assert (pairs["myopic_minus_vanilla_ci_low"] <= difference + 1e-12).all()
    assert (difference <= pairs["myopic_minus_vanilla_ci_high"] + 1e-12).all()
    for name in ("vanilla", "myopic", "bigram"):
        assert compared["regimes"][name]["eval_loss"] == pytest.approx(trained["regimes"][name]["eval_loss"],
                                                                       abs=1e-6)
        assert compared["regimes"][name]["trained_as"] == name
    assert compared["regimes"]["myopic"]["forward"] == "vanilla"
    for key in ("myopia_gap", "myopia_gap_ci_low", "myopia_gap_ci_high", "bigram_gap"):
        assert compared[key] == pytest.approx(trained[key], abs=1e-6), key
    assert compared["myopia_gap_ci_low"] <= compared["myopia_gap"] <= compared["myopia_gap_ci_high"]
    assert compared["data"]["validation_sha256"] == trained["data"]["validation_sha256"]
    assert compared["label_space"]["label_space"] == ["top20+other"]
    assert f"{trained['myopia_gap']:+.4f}" in capsys.readouterr().out

    assert "cannot be combined with --run" in _one_error_line(
        capsys, ["compare", "--run", str(run_dir), "--dataset", "builtin", "--out", str(tmp_path / "x")])
    corpus.write_text(corpus.read_text().replace("the", "a"))
    line = _one_error_line(capsys, ["compare", "--run", str(run_dir), "--out", str(tmp_path / "refused")])
    assert "changed since the run" in line
