"""Which training forwards leave parameters without gradient (where DDP must search for unused parameters)."""

import pytest

from forethought.models import load_model
from forethought.myopic_training import TrainConfig
from forethought.myopic_training.trainer import _frozen_past_model, _leaves_parameters_unused


def _unused(model, regime):
    config = TrainConfig(regime=regime, steps=1, progress=False)
    model.eval()
    return _leaves_parameters_unused(config, model, _frozen_past_model(config, model, None))


@pytest.mark.parametrize("regime", ["vanilla", "myopic", "local-myopic"])
def test_split_projection_models_use_every_parameter(native_model, checkpoint_dirs, regime):
    assert not _unused(native_model, regime)
    assert not _unused(load_model(checkpoint_dirs["llama"]), regime)


def test_fused_qkv_bridges_and_bigram_leave_parameters_unused(native_model, checkpoint_dirs):
    assert _unused(native_model, "bigram")
    for family in ("gpt2", "neox"):
        assert _unused(load_model(checkpoint_dirs[family]), "vanilla")
