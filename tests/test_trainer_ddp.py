"""Which training forwards leave parameters without gradient (where DDP must search for unused parameters)."""

import pytest
from devices import DEVICE

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
    assert not _unused(load_model(checkpoint_dirs["llama"], device=DEVICE), regime)


def test_fused_qkv_bridges_and_bigram_leave_parameters_unused(native_model, checkpoint_dirs):
    assert _unused(native_model, "bigram")
    for family in ("gpt2", "neox"):
        assert _unused(load_model(checkpoint_dirs[family], device=DEVICE), "vanilla")


TWO_PROCESS_SCRIPT = """
import json, os, sys, torch
from forethought.models import tiny_model
from forethought.myopic_training import TrainConfig, train
torch.set_num_threads(1)
regime, out = sys.argv[1], sys.argv[2]
tokens = torch.randint(0, 40, (64, 8), generator=torch.Generator().manual_seed(0))
model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=40, n_ctx=8, seed=0)
config = TrainConfig(regime=regime, steps=4, batch_size=8, lr=1e-2, warmup_steps=1, eval_every=2, progress=False,
                     device="cpu")
result = train(config, model, (tokens[:48], tokens[48:]))
if int(os.environ.get("RANK", 0)) == 0:
    json.dump({"losses": result.losses, "eval_loss": result.eval_loss}, open(os.path.join(out, "losses.json"), "w"))
"""


@pytest.mark.slow
@pytest.mark.cpu_only
@pytest.mark.parametrize("regime", ["myopic", "bigram"])
def test_two_processes_give_the_single_process_losses(tmp_path, regime):
    """DDP over gloo on the CPU (with and without unused parameters) trains exactly as one process does."""
    import json

    from two_processes import run_alone_and_in_two_processes

    single, double = run_alone_and_in_two_processes(TWO_PROCESS_SCRIPT, tmp_path, regime)
    one, two = (json.loads((directory / "losses.json").read_text()) for directory in (single, double))
    assert one["losses"] == pytest.approx(two["losses"], rel=1e-5)
    assert one["eval_loss"] == pytest.approx(two["eval_loss"], rel=1e-5)
