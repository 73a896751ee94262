"""The regime comparison: losses, gap and probe accuracy side by side, from the API and the CLI."""

import json
import subprocess
import sys

import pytest
import torch

from forethought.data import TokenSplits
from forethought.errors import InvalidArgumentError
from forethought.experiments.compare import compare_regimes, side_by_side
from forethought.models import save_model, tiny_model


@pytest.fixture(scope="module")
def regime_models(tokenizer):
    return {name: tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=len(tokenizer), n_ctx=16, seed=seed,
                             tokenizer=tokenizer)
            for seed, name in enumerate(["vanilla", "myopic", "bigram"])}


def _splits(vocab):
    tokens = torch.randint(0, vocab, (50, 16), generator=torch.Generator().manual_seed(0))
    return TokenSplits(train=tokens[:40], validation=tokens[40:], tokenizer=None)


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


def test_cli_bad_run_directory(tmp_path):
    done = subprocess.run([sys.executable, "-m", "forethought.cli", "compare", "--run", str(tmp_path), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "holds no trained models" in done.stderr
