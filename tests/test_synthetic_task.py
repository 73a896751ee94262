import math

import pytest
import torch

from forethought.errors import InvalidArgumentError
from forethought.synthetic.task import (
    PrecacheTask,
    derive_seed,
    lagged,
    lagged_sin,
    past_sum,
    precache_targets,
    probe_targets,
)


def test_targets_match_the_formula_by_hand():
    # K = 2, F = 8: y_n = z_n (sin 8x_{n-1} + sin 8x_{n-2}) + (1 - z_n) x_n, with x_m = 0 for m < 0.
    x = torch.tensor([[0.5, -1.0, 2.0, 0.25]], dtype=torch.float64)
    z = torch.tensor([[1.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    expected = [
        0.0,  # both terms are padding: sin(8 * 0) = 0
        -1.0,  # z = 0: the target is x_1
        math.sin(8 * -1.0) + math.sin(8 * 0.5),
        math.sin(8 * 2.0) + math.sin(8 * -1.0),
    ]
    torch.testing.assert_close(precache_targets(x, z, k=2, frequency=8.0)[0],
                               torch.tensor(expected, dtype=torch.float64))


def test_padding_when_k_exceeds_the_sequence():
    x = torch.tensor([[0.3, -0.7, 1.1]], dtype=torch.float64)
    z = torch.ones_like(x)
    expected = [0.0, math.sin(10 * 0.3), math.sin(10 * -0.7) + math.sin(10 * 0.3)]
    torch.testing.assert_close(precache_targets(x, z, k=5, frequency=10.0)[0],
                               torch.tensor(expected, dtype=torch.float64))


def test_targets_match_a_per_position_loop():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(4, 9, generator=generator, dtype=torch.float64)
    z = (torch.rand(4, 9, generator=generator) < 0.5).double()
    k, frequency = 3, 9.0
    reference = torch.empty_like(x)
    for b in range(4):
        for n in range(9):
            past = sum(math.sin(frequency * x[b, n - j].item()) for j in range(1, k + 1) if n - j >= 0)
            reference[b, n] = z[b, n] * past + (1 - z[b, n]) * x[b, n]
    torch.testing.assert_close(precache_targets(x, z, k, frequency), reference)


def test_sample_shapes_and_consistency():
    task = PrecacheTask(k=3, frequency=8.0, p=0.3, seq_len=16)
    batch = task.sample(5, torch.Generator().manual_seed(0))
    assert batch.inputs.shape == (5, 16, 2) and batch.targets.shape == (5, 16)
    assert batch.inputs.dtype == torch.float32
    assert torch.equal(batch.inputs[..., 0], batch.x) and torch.equal(batch.inputs[..., 1], batch.z)
    assert set(batch.z.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(batch.targets, precache_targets(batch.x, batch.z, 3, 8.0))


def test_sample_distribution():
    batch = PrecacheTask(k=1, frequency=8.0, p=0.3, seq_len=100).sample(1000, torch.Generator().manual_seed(1))
    assert abs(batch.z.mean().item() - 0.3) < 0.01
    assert abs(batch.x.mean().item()) < 0.01 and abs(batch.x.std().item() - 1.0) < 0.01
    assert PrecacheTask(p=1.0, seq_len=8).sample(50, torch.Generator().manual_seed(0)).z.min() == 1.0


def test_streams_are_reproducible_and_seed_dependent():
    task = PrecacheTask(k=2, frequency=8.0, seq_len=8)
    first, second, other = (torch.Generator().manual_seed(seed) for seed in (7, 7, 8))
    for _ in range(3):
        a, b, c = task.sample(4, first), task.sample(4, second), task.sample(4, other)
        assert torch.equal(a.x, b.x) and torch.equal(a.targets, b.targets)
        assert not torch.equal(a.x, c.x)


def test_derive_seed():
    assert derive_seed(0, "train") == derive_seed(0, "train")
    seeds = {derive_seed(s, purpose) for s in range(3) for purpose in ("train", "eval", "probe")}
    assert len(seeds) == 9 and all(0 <= s < 2**63 for s in seeds)


def test_lags_and_probe_targets():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert torch.equal(lagged(x, 0), x)
    assert torch.equal(lagged(x, 2), torch.tensor([[0.0, 0.0, 1.0, 2.0]]))
    assert torch.equal(lagged(x, 9), torch.zeros_like(x))
    torch.testing.assert_close(lagged_sin(x, 8.0, 1), torch.sin(8.0 * torch.tensor([[0.0, 1.0, 2.0, 3.0]])))
    targets = probe_targets(x, k=2, frequency=8.0, lags=[0, 1, 2, 3])
    assert list(targets) == ["sin@0", "sin@1", "sin@2", "sin@3", "sum"]
    torch.testing.assert_close(targets["sum"], targets["sin@1"] + targets["sin@2"])
    torch.testing.assert_close(targets["sum"], past_sum(x, 2, 8.0))
    with pytest.raises(InvalidArgumentError, match="lag=-1"):
        lagged(x, -1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k=0"),
        ({"k": 1.5}, "k=1.5"),
        ({"frequency": 0.0}, "frequency=0.0"),
        ({"frequency": -8.0}, "frequency=-8.0"),
        ({"p": 0.0}, r"p=0.0 .*\(0, 1\]"),
        ({"p": 1.5}, "p=1.5"),
        ({"seq_len": 0}, "seq_len=0"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        PrecacheTask(**kwargs)


def test_bad_batch_size():
    with pytest.raises(InvalidArgumentError, match="batch_size=0"):
        PrecacheTask().sample(0)
