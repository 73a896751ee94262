"""The batched probe trainer: equal to training each probe alone, and to scikit-learn's logistic regression."""

import pytest
import torch
from devices import DEVICE
from threadpoolctl import threadpool_limits

from forethought.activations import collect_activations
from forethought.errors import DataError, InvalidArgumentError
from forethought.models import tiny_model
from forethought.probes.linear import Task
from forethought.probes.logistic import LogisticProbeConfig, fit_logistic_probes
from forethought.probes.targets import LabelSpace, future_labels, n_positions
from forethought.probes.vocabulary import VocabProbeConfig, describe_memory, fit_vocab_probes


def markov_tokens(n_seq, seq_len, vocab, seed=0, sharpness=2.0):
    """Sequences of a random first-order Markov chain: the next token is partly predictable."""
    generator = torch.Generator().manual_seed(seed)
    transitions = torch.softmax(sharpness * torch.randn(vocab, vocab, generator=generator), -1)
    tokens = torch.empty(n_seq, seq_len, dtype=torch.long)
    tokens[:, 0] = torch.randint(0, vocab, (n_seq,), generator=generator)
    for t in range(1, seq_len):
        tokens[:, t] = torch.multinomial(transitions[tokens[:, t - 1]], 1, generator=generator)[:, 0]
    return tokens


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small problems: extra threads only contend with each other on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def probe_data():
    """Residual-stream features of a tiny model on Markov data, labels in a top-4 + other space."""
    vocab, seq_len, offsets = 12, 16, [0, 1]
    tokens = markov_tokens(1000, seq_len, vocab)
    model = tiny_model(n_layers=2, d_model=24, n_heads=4, d_vocab=vocab, n_ctx=seq_len, device=DEVICE)
    acts = collect_activations(model, tokens, progress=False)["resid"]
    n_pos = n_positions(seq_len, offsets)
    features = acts[:, :, :n_pos].reshape(3, -1, 24)
    labels = future_labels(tokens, offsets).reshape(2, -1)
    cut, test = 600 * n_pos, 700 * n_pos  # train | held-out | test, by whole sequences
    space = LabelSpace.top_k(labels[:, :cut], k=4, d_vocab=vocab)
    labels = space.encode(labels)
    return {"train": (features[:, :cut], labels[:, :cut]), "val": (features[:, cut:test], labels[:, cut:test]),
            "test": (features[:, test:], labels[:, test:]), "space": space}


def test_batched_equals_each_probe_trained_alone(probe_data):
    (x, y), (vx, vy) = probe_data["train"], probe_data["val"]
    config = VocabProbeConfig(max_epochs=6, patience=2, batch_size=256, progress=False)
    stacked = fit_vocab_probes(x, y, n_classes=5, val_features=vx, val_labels=vy, config=config)
    for layer in range(3):
        for task in range(2):
            alone = fit_vocab_probes(x[layer : layer + 1], y[task : task + 1], n_classes=5,
                                     val_features=vx[layer : layer + 1], val_labels=vy[task : task + 1],
                                     config=config)
            torch.testing.assert_close(stacked.weight[layer, task], alone.weight[0, 0], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(stacked.bias[layer, task], alone.bias[0, 0], atol=1e-4, rtol=1e-4)
            assert stacked.meta["best_epoch"][layer][task] == alone.meta["best_epoch"][0][0]


def test_matches_sklearn_logistic_regression_within_one_point(probe_data):
    (x, y), (vx, vy), (tx, ty) = probe_data["train"], probe_data["val"], probe_data["test"]
    space = probe_data["space"]
    ours = fit_vocab_probes(x, y, n_classes=space.n_classes, val_features=vx, val_labels=vy,
                            config=VocabProbeConfig(progress=False), label_space=space)
    reference = fit_logistic_probes(x, y, n_classes=space.n_classes, config=LogisticProbeConfig(progress=False))
    accuracy = (ours.predict(tx) == ty).float().mean(-1)
    expected = (reference.predict(tx) == ty).float().mean(-1)
    assert accuracy.min() > 0.4  # above the majority class (0.38) everywhere: agreement is not trivial
    assert (accuracy - expected).abs().max() <= 0.01, (accuracy, expected)


def test_early_stopping_is_per_probe():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3000, 8, generator=generator)
    y = torch.stack([(x[0, :, 0] > 0).long(), torch.randint(0, 2, (3000,), generator=generator)])
    probes = fit_vocab_probes(x[:1], y, n_classes=2, config=VocabProbeConfig(max_epochs=30, patience=2, progress=False))
    learnable, noise = probes.meta["best_epoch"][0]
    assert noise < learnable
    assert probes.layers == [0] and probes.tasks == [Task(0), Task(1)]


@pytest.mark.usefixtures("unchecked_shapes")
def test_bad_inputs():
    x, y = torch.randn(2, 10, 4), torch.randint(0, 3, (1, 10))
    with pytest.raises(InvalidArgumentError, match="examples"):
        fit_vocab_probes(x, y[:, :9], n_classes=3)
    with pytest.raises(DataError, match="empty"):
        fit_vocab_probes(x[:, :0], y[:, :0], n_classes=3)
    with pytest.raises(InvalidArgumentError, match="labels must lie"):
        fit_vocab_probes(x, y + 5, n_classes=3)
    with pytest.raises(InvalidArgumentError, match="batch_size=0"):
        VocabProbeConfig(batch_size=0)
    with pytest.raises(InvalidArgumentError, match="val_fraction"):
        VocabProbeConfig(val_fraction=1.0)


def test_memory_estimate():
    memory = describe_memory(n_layers=13, n_tasks=8, d_model=768, n_classes=50257, batch_size=512)
    assert memory["weights"] == 13 * 8 * 768 * 50257
    assert 14 < memory["weights_gib"] < 16


def test_skipping_frozen_probes_changes_no_probe(probe_data, monkeypatch):
    """Once every layer's probe of a task is frozen, the stack stops computing that task: the probes and their best
    epochs are those of a stack that computes everything to the end (up to float32 rounding: the smaller matrix
    product sums in another order)."""
    import forethought.probes.vocabulary as vocabulary

    (x, y), (vx, vy) = probe_data["train"], probe_data["val"]
    # a task whose answer is always class 0 starts at its best (the prior) and freezes first, whatever the features
    labels = torch.cat([y, torch.zeros_like(y[:1])])
    val_labels = torch.cat([vy, torch.zeros_like(vy[:1])])
    config = VocabProbeConfig(max_epochs=12, patience=1, batch_size=256, progress=False)
    calls = []
    skip = vocabulary._StackedSoftmax.skip_frozen
    monkeypatch.setattr(vocabulary._StackedSoftmax, "skip_frozen", lambda self, active: (calls.append(active.clone()),
                                                                                          skip(self, active)))
    skipping = fit_vocab_probes(x, labels, n_classes=5, val_features=vx, val_labels=val_labels, config=config)
    if not calls:  # the mechanism itself is tested on its own below, whatever the numerics
        pytest.skip("every probe froze in the same epoch here; nothing was skipped to compare")
    monkeypatch.setattr(vocabulary._StackedSoftmax, "skip_frozen", lambda self, active: None)
    everything = fit_vocab_probes(x, labels, n_classes=5, val_features=vx, val_labels=val_labels, config=config)
    torch.testing.assert_close(skipping.weight, everything.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(skipping.bias, everything.bias, rtol=1e-5, atol=1e-6)
    assert skipping.meta["best_epoch"] == everything.meta["best_epoch"]


def test_a_skipped_task_leaves_the_other_tasks_losses_and_gradients_as_they_were():
    """The index arithmetic of skipping: with task 0 skipped, task 1's losses and gradients are unchanged and task
    0's loss entries are 0."""
    from forethought.probes.vocabulary import _StackedSoftmax

    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 2, 6, generator=generator), torch.randint(0, 4, (32, 3), generator=generator)
    stack = _StackedSoftmax(n_layers=2, d_model=6, n_classes=4, labels=y,
                            config=VocabProbeConfig(progress=False))
    with torch.no_grad():
        stack.weight.normal_(generator=generator)
    full = stack.per_probe_loss(x, y)
    full_grad = torch.autograd.grad(full[:, 1:].sum(), stack.weight)[0]
    stack.skip_frozen(torch.tensor([[False, True, True], [False, False, True]]))
    assert stack.tasks.tolist() == [1, 2]
    part = stack.per_probe_loss(x, y)
    part_grad = torch.autograd.grad(part.sum(), stack.weight)[0]
    assert (part[:, 0] == 0).all()
    torch.testing.assert_close(part[:, 1:], full[:, 1:])
    torch.testing.assert_close(part_grad, full_grad)
