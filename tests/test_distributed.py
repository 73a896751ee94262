from types import SimpleNamespace

import pytest
import torch
from accelerate import PartialState

from forethought.distributed import current_world, process_device


def _share(n_items, rank, size):
    """What process ``rank`` of ``size`` takes of ``n_items`` under accelerate's ``split_between_processes``."""
    world = SimpleNamespace(num_processes=size, process_index=rank)  # the only state the split reads
    with PartialState.split_between_processes(world, list(range(n_items))) as mine:
        return mine


@pytest.mark.parametrize("size", [1, 2, 3, 7])
@pytest.mark.parametrize("n_items", [0, 1, 5, 6, 20])
def test_shares_cover_everything_in_order_and_differ_by_at_most_one(n_items, size):
    parts = [_share(n_items, rank, size) for rank in range(size)]
    assert [i for part in parts for i in part] == list(range(n_items))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert sorted(map(len, parts), reverse=True) == list(map(len, parts))  # the first processes take more


def test_a_plain_process_is_no_world(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert current_world() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert current_world() is None


def test_each_process_takes_its_own_gpu_when_asked_for_cuda():
    world = SimpleNamespace(process_index=1, local_process_index=1, num_processes=2)
    assert process_device(torch.device("cuda"), world) == torch.device("cuda", 1)
    assert process_device(torch.device("cuda", 0), world) == torch.device("cuda", 0)  # an explicit index stays
    assert process_device(torch.device("cpu"), world) == torch.device("cpu")
    assert process_device(torch.device("cuda"), None) == torch.device("cuda")  # a plain process
    assert process_device(None, world) is None
