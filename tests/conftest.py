"""Shared fixtures: tiny models of every supported backend, built offline."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import devices  # noqa: E402

from forethought.data import load_texts, train_tokenizer  # noqa: E402
from forethought.models import FAMILIES, load_model, save_random_checkpoint, tiny_model  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--device", default=os.environ.get("FORETHOUGHT_TEST_DEVICE") or "cpu",
                     help="where tests build models, probes and tensors: cpu (default), cuda, cuda:N "
                          "(also FORETHOUGHT_TEST_DEVICE)")


def pytest_configure(config):
    name = devices.set_device(config.getoption("--device"))
    os.environ["FORETHOUGHT_TEST_DEVICE"] = str(name)  # for subprocesses
    os.environ["FORETHOUGHT_DEVICE"] = str(name)  # the device variable at the top of every notebook


def pytest_collection_modifyitems(config, items):
    if not devices.on_gpu():
        return
    skip = pytest.mark.skip(reason=f"about the CPU by nature; the suite runs on {devices.DEVICE}")
    for item in items:
        if "cpu_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def device():
    """The suite's device (``--device``; the CPU by default)."""
    return devices.DEVICE


@pytest.fixture(scope="session")
def tokenizer():
    """A 300-token byte-level BPE trained on part of the builtin corpus."""
    return train_tokenizer(load_texts("builtin")[:30], vocab_size=300)


@pytest.fixture(scope="session")
def checkpoint_dirs(tmp_path_factory, tokenizer):
    """``save_pretrained`` directories of random GPT-2, GPT-NeoX and Llama models (d_model=32, 2 layers)."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {family: save_random_checkpoint(family, root / family, d_model=32, n_layers=2, n_heads=4, n_ctx=64,
                                           tokenizer=tokenizer)
            for family in FAMILIES}


@pytest.fixture(scope="session", params=["native", *FAMILIES])
def any_model(request, checkpoint_dirs, tokenizer):
    """One tiny model per backend: boot_native and HF-backed GPT-2, NeoX and Llama."""
    if request.param == "native":
        return tiny_model(n_layers=2, d_model=32, n_heads=4, d_vocab=len(tokenizer), n_ctx=64, tokenizer=tokenizer,
                          device=devices.DEVICE)
    return load_model(checkpoint_dirs[request.param], device=devices.DEVICE)


@pytest.fixture(scope="session")
def native_model(tokenizer):
    return tiny_model(n_layers=2, d_model=32, n_heads=4, d_vocab=len(tokenizer), n_ctx=64, tokenizer=tokenizer,
                      device=devices.DEVICE)


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's tiny models on one intra-op thread: on a busy machine, two threads contending for two
    cores make each small matmul thousands of times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def unchecked_shapes():
    """Turn off the run-time shape checks (tests/shape_checking.py) for a test that passes malformed arrays on
    purpose, to see forethought's own error."""
    import shape_checking

    token = shape_checking.ENABLED.set(False)
    yield
    shape_checking.ENABLED.reset(token)
