"""Saving and loading probes: identical predictions, refusal of mismatched models and broken files."""

import json

import pytest
import torch
from devices import DEVICE

from forethought.errors import CheckpointError, InvalidArgumentError, VocabularyMismatchError
from forethought.models import tiny_model
from forethought.probes.future_lens import FutureLens, FutureLensConfig, fit_future_lens
from forethought.probes.io import CONFIG, WEIGHTS, load_probes, save_probes
from forethought.probes.linear import LinearProbes, Task
from forethought.probes.targets import LabelSpace
from forethought.probes.vocabulary import VocabProbeConfig, fit_vocab_probes


@pytest.fixture
def linear_probes(native_model):
    x = torch.randn(2, 200, native_model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    space = LabelSpace(d_vocab=native_model.cfg.d_vocab, token_ids=(4, 9, 1))
    y = torch.randint(0, 4, (2, 200), generator=torch.Generator().manual_seed(1))
    probes = fit_vocab_probes(x, y, n_classes=4, config=VocabProbeConfig(max_epochs=2, progress=False), layers=[0, 2],
                              tasks=[Task(1), Task(1, control=True)], label_space=space)
    return probes, x


def test_linear_round_trip(linear_probes, native_model, tmp_path):
    probes, x = linear_probes
    folder = save_probes(probes, tmp_path / "probes", model=native_model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probes"]  # no temporary leftovers
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG, WEIGHTS]
    config = json.loads((folder / CONFIG).read_text())
    assert config["hook_names"] == ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post"]
    assert config["offsets"] == [1] and config["d_model"] == 32 and config["kind"] == "linear"
    loaded = load_probes(folder, model=native_model)
    assert isinstance(loaded, LinearProbes)
    assert loaded.layers == [0, 2] and loaded.tasks == probes.tasks and loaded.label_space == probes.label_space
    assert torch.equal(loaded.logits(x).cpu(), probes.logits(x).cpu())


def test_future_lens_round_trip(native_model, tmp_path):
    h = torch.randn(2, 120, 32, generator=torch.Generator().manual_seed(0))
    lens = fit_future_lens(h, h[:1].expand(3, -1, -1), model=native_model, offsets=[0, 1, 3],
                           config=FutureLensConfig(max_epochs=1, progress=False))
    loaded = load_probes(save_probes(lens, tmp_path / "lens", model=native_model), model=native_model)
    assert isinstance(loaded, FutureLens) and [t.offset for t in loaded.tasks] == [0, 1, 3]
    with torch.no_grad():
        assert torch.equal(loaded.logits(h), lens.logits(h))
    with pytest.raises(InvalidArgumentError, match="model="):
        load_probes(tmp_path / "lens")


@pytest.mark.parametrize("change", [{"d_model": 16}, {"d_vocab": 301}])
def test_loading_onto_a_mismatched_model_raises(linear_probes, native_model, tmp_path, change):
    folder = save_probes(linear_probes[0], tmp_path / "probes", model=native_model)
    sizes = {"n_layers": 2, "d_model": 32, "n_heads": 4, "d_vocab": native_model.cfg.d_vocab, "n_ctx": 64, **change}
    with pytest.raises(VocabularyMismatchError, match="d_model=32"):
        load_probes(folder, model=tiny_model(**sizes, device=DEVICE))


def test_broken_files_raise_checkpoint_error(linear_probes, tmp_path):
    with pytest.raises(CheckpointError):
        load_probes(tmp_path / "missing")
    folder = save_probes(linear_probes[0], tmp_path / "probes")
    weights = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(weights[: len(weights) // 2])
    with pytest.raises(CheckpointError):
        load_probes(folder)
    folder = save_probes(linear_probes[0], tmp_path / "other")
    (folder / CONFIG).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a forethought probe file"):
        load_probes(folder)
