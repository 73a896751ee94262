import json
from dataclasses import replace

import pandas as pd
import pytest
import torch
from devices import main

from forethought.synthetic import PRESETS

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
    from forethought.synthetic.study import _batch_sha256, held_out

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
def test_p_sweep(tmp_path):
    threads = torch.get_num_threads()
    assert _run("--preset", "smoke", "--steps", "3", "--p", "0.5", "1", "--out", str(tmp_path), "--no-progress",
                "--threads", "2") == 0
    assert torch.get_num_threads() == threads  # the CLI's thread setting does not outlive the command
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["config"]["p"] == [0.5, 1.0]
    assert report["config"].get("threads", 2) == 2  # recorded where the run is on the CPU
    assert sorted(report["runs"]) == ["0.5", "1"]
    assert {(row["p"], row["regime"]) for row in report["sweep"]} == {
        (p, regime) for p in (0.5, 1.0) for regime in ("vanilla", "myopic")}
    for folder in ("p=0.5", "p=1"):
        sub = json.loads((tmp_path / folder / "report.json").read_text())
        assert sub["config"]["p"] == float(folder[2:]) and sub["regimes"]["myopic"]["steps"] == 3
    assert (tmp_path / "loss_vs_p.png").read_bytes()[:8] == PNG
    assert len(pd.read_csv(tmp_path / "sweep.csv")) == 4


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
        (["--checkpoint-every", "0"], "--checkpoint-every: checkpoint_every=0"),
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
