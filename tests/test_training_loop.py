"""The shared training loop against a plain torch loop, and the settings only it adds."""

from contextlib import nullcontext
from dataclasses import replace

import pytest
import torch
from devices import on_gpu, tolerance
from torch.nn import functional as F

from forethought.config import TrainConfig
from forethought.errors import CheckpointError, InvalidArgumentError
from forethought.myopic_training import myopic
from forethought.myopic_training.loop import parameter_groups, warmup_cosine_schedule
from forethought.synthetic import PRESETS, RegressionTransformer, train_regime
from forethought.synthetic.task import derive_seed


def _plain_loop(config, regime):
    """The obvious loop: AdamW with torch's defaults, the same schedule, Huber loss, no clipping."""
    model = RegressionTransformer(config.model_config())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay)
    scheduler = warmup_cosine_schedule(optimizer, config.steps, config.warmup_steps, config.min_lr_ratio)
    generator = torch.Generator().manual_seed(derive_seed(config.seed, "train"))
    losses = []
    with myopic(model.bridge, mode=config.mode) if regime == "myopic" else nullcontext():
        for _ in range(config.steps):
            batch = config.task().sample(config.batch_size, generator)
            loss = F.huber_loss(model(batch.inputs), batch.targets, delta=config.huber_delta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
    return model, losses


@pytest.mark.parametrize("regime", ["vanilla", "myopic"])
def test_synthetic_training_equals_a_plain_torch_loop(regime):
    config = replace(PRESETS["smoke"], steps=6, warmup_steps=2)
    model, losses = _plain_loop(config, regime)
    run = train_regime(config, regime, progress=False)
    if not on_gpu():  # bit for bit where both run the same kernels
        assert run.losses.tolist() == losses
        for ours, theirs in zip(run.model.parameters(), model.parameters(), strict=True):
            assert torch.equal(ours, theirs)
    torch.testing.assert_close(torch.as_tensor(run.losses).float(), torch.tensor(losses), **tolerance(1e-5, 1e-6))
    for ours, theirs in zip(run.model.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(ours.cpu(), theirs.cpu(), **tolerance(1e-5, 1e-6))


def test_weight_decay_on_every_parameter_or_on_matrices_only():
    layer = torch.nn.Linear(2, 3)
    matrices, rest = parameter_groups(layer, 0.1)
    assert (matrices["params"], matrices["weight_decay"]) == ([layer.weight], 0.1)
    assert (rest["params"], rest["weight_decay"]) == ([layer.bias], 0.0)
    (every,) = parameter_groups(layer, 0.1, every_parameter=True)
    assert (every["params"], every["weight_decay"]) == ([layer.weight, layer.bias], 0.1)
    with pytest.raises(InvalidArgumentError, match="weight_decay_all=1"):
        TrainConfig(weight_decay_all=1)


def test_a_checkpoint_of_the_retired_synthetic_format_is_refused(tmp_path):
    path = tmp_path / "vanilla.pt"
    torch.save({"format": "forethought-synthetic-checkpoint-v1", "step": 1}, path)
    config = replace(PRESETS["smoke"], steps=2, warmup_steps=1)
    with pytest.raises(CheckpointError, match="its format is 'forethought-synthetic-checkpoint-v1'.*delete it"):
        train_regime(config, "vanilla", progress=False, checkpoint=path)
