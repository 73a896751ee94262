import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from forethought.cli import main
from forethought.data.synthetic import PrecacheTask
from forethought.errors import CheckpointError
from forethought.experiments.synthetic import PRESETS, SyntheticConfig, load_trained_model, train_regime

PNG = b"\x89PNG\r\n\x1a\n"
SMOKE = PRESETS["smoke"]


def _run(*argv):
    """The CLI's exit code, whether argparse or the runner rejected the input."""
    try:
        return main(["synthetic", *argv])
    except SystemExit as exit_:
        return exit_.code


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    assert _run("--preset", "smoke", "--out", str(out), "--no-progress") == 0
    return out


def test_smoke_writes_a_complete_report(smoke):
    report = json.loads((smoke / "report.json").read_text())
    assert {"config", "regimes", "probes", "provenance", "summary"} <= set(report)
    assert report["config"]["preset"] == "smoke" and report["config"]["k"] == SMOKE.k
    assert report["provenance"]["seed"] == 0
    for regime in ("vanilla", "myopic"):
        values = report["regimes"][regime]
        assert {"eval_loss", "zero_baseline_loss", "steps", "loss_ratio"} <= set(values)
        assert values["steps"] == SMOKE.steps and values["eval_loss"] > 0
    assert report["regimes"]["vanilla"]["zero_baseline_loss"] == report["regimes"]["myopic"]["zero_baseline_loss"]
    assert report["regimes"]["myopic"]["trained_as"] == "myopic"
    from forethought.experiments.synthetic import _batch_sha256, held_out

    data = report["data"]  # the held-out sets are a function of the seed: the recorded hash rebuilds them
    n = data["eval"]["n_sequences"]
    assert data["eval"]["sha256"] == _batch_sha256(held_out(SMOKE, "eval", n))
    assert data["eval"]["sha256"] != _batch_sha256(held_out(replace(SMOKE, seed=1), "eval", n))

    probes = pd.DataFrame(report["probes"])
    assert list(probes.columns) == ["regime", "layer", "lag", "target", "r2"]
    expected_rows = 2 * (SMOKE.n_layers + 1) * (SMOKE.k + 3 + 1)  # regimes × layers × (lags 0..K+2, sum)
    assert len(probes) == expected_rows
    assert set(probes.layer) == set(range(SMOKE.n_layers + 1))
    sines = probes[probes.target == "sin"]
    assert sorted(set(sines.lag)) == list(range(SMOKE.k + 3))
    assert probes[probes.target == "sum"].lag.isna().all()
    assert probes.r2.between(0, 1).all()

    table = pd.read_csv(smoke / "probes.csv")
    assert {"regime", "layer", "lag", "target", "r2", "r2_raw", "alpha"} <= set(table.columns)
    for name in ("losses.png", "probe_r2.png"):
        assert (smoke / name).read_bytes()[:8] == PNG
    assert not [path for path in smoke.iterdir() if path.name.startswith(".")]  # no temporary files left


def test_both_regimes_start_alike(smoke):
    """Same initialisation and data stream: the first step's loss is identical (myopia changes gradients only)."""
    losses = pd.read_csv(smoke / "losses.csv")
    first = losses[losses.step == 1].set_index("regime").loss
    assert first["vanilla"] == first["myopic"]
    assert len(losses) == 2 * SMOKE.steps


@pytest.mark.slow
def test_same_seed_same_training():
    config = replace(SMOKE, steps=5, warmup_steps=1)
    first, second = train_regime(config, "myopic", progress=False), train_regime(config, "myopic", progress=False)
    assert np.array_equal(first.losses, second.losses)
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)
    other = train_regime(replace(config, seed=1), "myopic", progress=False)
    assert not np.array_equal(other.losses, first.losses)


@pytest.mark.slow
def test_p_sweep(tmp_path):
    threads = torch.get_num_threads()
    assert _run("--preset", "smoke", "--steps", "3", "--p", "0.5", "1", "--out", str(tmp_path), "--no-progress",
                "--threads", "2") == 0
    assert torch.get_num_threads() == threads  # the CLI's thread setting does not outlive the command
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["config"]["p"] == [0.5, 1.0] and report["config"]["threads"] == 2
    assert sorted(report["runs"]) == ["0.5", "1"]
    assert {(row["p"], row["regime"]) for row in report["sweep"]} == {
        (p, regime) for p in (0.5, 1.0) for regime in ("vanilla", "myopic")}
    for folder in ("p=0.5", "p=1"):
        sub = json.loads((tmp_path / folder / "report.json").read_text())
        assert sub["config"]["p"] == float(folder[2:]) and sub["regimes"]["myopic"]["steps"] == 3
    assert (tmp_path / "loss_vs_p.png").read_bytes()[:8] == PNG
    assert len(pd.read_csv(tmp_path / "sweep.csv")) == 4


def _interrupt_after(monkeypatch, n_batches):
    """Make the data stream raise KeyboardInterrupt when batch ``n_batches + 1`` is drawn."""
    sample, calls = PrecacheTask.sample, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > n_batches:
            raise KeyboardInterrupt
        return sample(self, *args, **kwargs)

    monkeypatch.setattr(PrecacheTask, "sample", interrupted)


@pytest.mark.slow
@pytest.mark.parametrize("regime", ["vanilla", "myopic"])
def test_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch, regime):
    config = replace(SMOKE, steps=12, warmup_steps=2)
    reference = train_regime(config, regime, progress=False)
    checkpoint = tmp_path / f"{regime}.pt"
    _interrupt_after(monkeypatch, 8)
    with pytest.raises(KeyboardInterrupt):
        train_regime(config, regime, progress=False, checkpoint=checkpoint, checkpoint_every=5)
    monkeypatch.undo()
    assert checkpoint.exists() and not [path for path in tmp_path.iterdir() if path.name.startswith(".")]
    resumed = train_regime(config, regime, progress=False, checkpoint=checkpoint, checkpoint_every=5)
    np.testing.assert_allclose(resumed.losses, reference.losses, rtol=0, atol=1e-6)
    for ours, theirs in zip(resumed.model.parameters(), reference.model.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    for ours, theirs in zip(load_trained_model(checkpoint).parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(ours, theirs)


def test_finished_run_is_reused_and_other_settings_are_refused(tmp_path, monkeypatch):
    config = replace(SMOKE, steps=4, warmup_steps=1)
    checkpoint = tmp_path / "vanilla.pt"
    first = train_regime(config, "vanilla", progress=False, checkpoint=checkpoint)
    _interrupt_after(monkeypatch, 0)  # a finished run draws no batch
    again = train_regime(config, "vanilla", progress=False, checkpoint=checkpoint)
    assert np.array_equal(again.losses, first.losses)
    with pytest.raises(CheckpointError, match="lr=0.001 \\(now 0.01\\)"):
        train_regime(replace(config, lr=1e-2), "vanilla", progress=False, checkpoint=checkpoint)
    with pytest.raises(CheckpointError, match="regime='vanilla' \\(now 'myopic'\\)"):
        train_regime(config, "myopic", progress=False, checkpoint=checkpoint)


@pytest.mark.slow
def test_cli_refuses_an_existing_run_without_resume(tmp_path, capsys):
    argv = ("--preset", "smoke", "--steps", "3", "--out", str(tmp_path), "--no-progress")
    assert _run(*argv) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == ["myopic.pt", "vanilla.pt"]
    capsys.readouterr()
    assert _run(*argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--resume" in err
    assert _run(*argv, "--resume") == 0
    resumed = json.loads((tmp_path / "report.json").read_text())
    assert resumed["regimes"]["myopic"]["eval_loss"] == report["regimes"]["myopic"]["eval_loss"]
    (tmp_path / "checkpoints" / "myopic.pt").write_bytes(b"truncated")
    assert _run(*argv, "--resume") == 2
    assert "corrupt or truncated" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "huge"], "invalid choice: 'huge'"),
        (["--k", "0"], "k=0"),
        (["--k", "-2"], "k=-2"),
        (["--frequency", "0"], "frequency=0.0"),
        (["-F", "-8"], "frequency=-8.0"),
        (["--p", "0"], "p=0.0"),
        (["--p", "1", "1.5"], "p=1.5"),
        (["--steps", "0"], "steps=0"),
        (["--device", "warp-drive"], "warp-drive"),
        (["--threads", "0"], "threads=0"),
        (["--checkpoint-every", "0"], "checkpoint-every=0"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    assert _run("--preset", "smoke", "--out", str(tmp_path / "out"), "--no-progress", *argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "out" / "report.json").exists()


def test_unwritable_out_exits_2(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert _run("--preset", "smoke", "--out", str(blocker / "results"), "--no-progress") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not writable" in err


def test_presets_are_valid_and_paper_matches_the_paper():
    paper = PRESETS["paper"]
    assert (paper.k, paper.frequency, paper.p, paper.seq_len, paper.n_layers, paper.d_model, paper.n_heads,
            paper.batch_size, paper.lr) == (10, 10.0, 1.0, 64, 2, 128, 2, 512, 1e-3)
    assert 25e6 <= paper.steps * paper.batch_size <= 35e6
    assert all(config.frequency >= 8 for config in PRESETS.values())
    with pytest.raises(Exception, match="seq_len=5"):
        SyntheticConfig(k=3, seq_len=5)
