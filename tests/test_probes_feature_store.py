"""FeatureStore against the in-memory tensor it stores, and probes trained from it against in-memory ones."""

import pytest
import torch

from forethought.errors import InvalidArgumentError
from forethought.probes import fit_vocab_probes
from forethought.probes.feature_store import FeatureStore, feature_chunks
from forethought.probes.linear import feature_stats
from forethought.probes.vocabulary import VocabProbeConfig

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rows_and_chunks_equal_the_stored_tensor(tmp_path, dtype):
    rows = torch.randn(37, 3, 5, generator=torch.Generator().manual_seed(0)).to(dtype)
    store = FeatureStore.create(tmp_path / "f.bin", n_layers=3, d_model=5, dtype=dtype)
    for part in rows.split(10):
        store.append(part)
    assert store.shape == (3, 37, 5) and store.nbytes == rows.numel() * rows.element_size()
    index = torch.tensor([36, 0, 5, 5, 17])
    assert torch.equal(store.rows(index), rows[index])
    assert torch.equal(store.rows(torch.tensor([], dtype=torch.long)), rows[:0])
    features = rows.transpose(0, 1)  # the in-memory layout [layer, n, d]
    assert torch.equal(store.chunk(30, 99), features[:, 30:])
    assert all(torch.equal(a, b) for a, b in zip(feature_chunks(store, 8), feature_chunks(features, 8), strict=True))
    mean, scale = feature_stats(store, chunk=8)
    expected_mean, expected_scale = feature_stats(features)
    torch.testing.assert_close(mean, expected_mean)
    torch.testing.assert_close(scale, expected_scale)


def test_bad_rows_and_indices_are_refused(tmp_path):
    store = FeatureStore.create(tmp_path / "f.bin", n_layers=2, d_model=4)
    with pytest.raises(InvalidArgumentError, match=r"\[n, 2, 4\]"):
        store.append(torch.zeros(3, 2, 5))
    store.append(torch.zeros(3, 2, 4))
    with pytest.raises(InvalidArgumentError, match=r"\[0, 3\)"):
        store.rows(torch.tensor([3]))


def test_vocab_probes_from_disk_equal_probes_from_memory(tmp_path):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 700, 8, generator=generator)
    y = torch.stack([(x[1, :, 0] > 0).long(), (x[0, :, 1] + x[1, :, 2] > 0).long() + (x[0, :, 3] > 1).long()])
    stores = []
    for name, part in (("fit", x[:, :600]), ("val", x[:, 600:])):
        store = FeatureStore.create(tmp_path / f"{name}.bin", n_layers=2, d_model=8)
        store.append(part.transpose(0, 1))
        stores.append(store)
    config = VocabProbeConfig(max_epochs=6, batch_size=64, eval_batch_size=50, progress=False)
    in_memory = fit_vocab_probes(x[:, :600], y[:, :600], n_classes=3, val_features=x[:, 600:], val_labels=y[:, 600:],
                                 config=config)
    on_disk = fit_vocab_probes(stores[0], y[:, :600], n_classes=3, val_features=stores[1], val_labels=y[:, 600:],
                               config=config)
    for name in ("weight", "bias", "mean", "scale"):
        torch.testing.assert_close(getattr(on_disk, name), getattr(in_memory, name), rtol=1e-5, atol=1e-6)
    assert on_disk.meta["best_epoch"] == in_memory.meta["best_epoch"]
    with pytest.raises(InvalidArgumentError, match="held-out"):
        fit_vocab_probes(stores[0], y[:, :600], n_classes=3, config=config)
