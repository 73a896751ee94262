"""The synthetic study's library API: reproducible training, resume through the shared training loop's
checkpoints, and the presets."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from forethought.errors import CheckpointError
from forethought.synthetic import PRESETS, PrecacheTask, SyntheticConfig, load_trained_model, train_regime

SMOKE = PRESETS["smoke"]


@pytest.mark.slow
def test_same_seed_same_training():
    config = replace(SMOKE, steps=5, warmup_steps=1)
    first, second = train_regime(config, "myopic", progress=False), train_regime(config, "myopic", progress=False)
    assert np.array_equal(first.losses, second.losses)
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)
    other = train_regime(replace(config, seed=1), "myopic", progress=False)
    assert not np.array_equal(other.losses, first.losses)
    frame = first.to_frame()
    assert list(frame.columns) == ["regime", "step", "loss"] and np.array_equal(frame["loss"], first.losses)
    assert first.plot(baseline=0.5).axes
    assert repr(first).startswith("TrainingRun(myopic, 5 steps, final loss ") and "\n" not in repr(first)


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
        assert torch.equal(ours.cpu(), theirs.cpu())


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


def test_presets_are_valid_and_paper_matches_the_paper():
    paper = PRESETS["paper"]
    assert (paper.k, paper.frequency, paper.p, paper.seq_len, paper.n_layers, paper.d_model, paper.n_heads,
            paper.batch_size, paper.lr) == (10, 10.0, 1.0, 64, 2, 128, 2, 512, 1e-3)
    assert 25e6 <= paper.steps * paper.batch_size <= 35e6
    assert all(config.frequency >= 8 for config in PRESETS.values())
    with pytest.raises(Exception, match="seq_len=5"):
        SyntheticConfig(k=3, seq_len=5)
