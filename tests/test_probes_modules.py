"""Fitted probes as modules: ``probes(h, layer=, offset=)`` against the batched logits and the formula,
``.to`` / ``state_dict`` / pickling, the Future Lens's model kept out of the module, errors and repr."""

import pickle

import pytest
import torch

from forethought.errors import ForethoughtError, InvalidArgumentError, OutOfRangeError
from forethought.probes.future_lens import FutureLens, decode
from forethought.probes.linear import LinearProbes, Task, concat_layers
from forethought.probes.targets import LabelSpace

pytestmark = pytest.mark.usefixtures("single_thread")

LAYERS = [0, 2, 3]
TASKS = [Task(0), Task(2), Task(0, control=True)]


def _tensors(d_out, d_model, seed=0):
    g = torch.Generator().manual_seed(seed)
    n_layers, n_tasks = len(LAYERS), len(TASKS)
    return {"weight": torch.randn(n_layers, n_tasks, d_model, d_out, generator=g) * 0.3,
            "bias": torch.randn(n_layers, n_tasks, d_out, generator=g),
            "mean": torch.randn(n_layers, d_model, generator=g),
            "scale": torch.rand(n_layers, d_model, generator=g) + 0.5}


@pytest.fixture
def linear():
    space = LabelSpace(d_vocab=50, token_ids=(7, 3, 9))
    return LinearProbes(**_tensors(space.n_classes, 8), layers=LAYERS, tasks=TASKS, label_space=space,
                        meta={"method": "vocab"})


@pytest.fixture
def lens(native_model):
    d_model, d_vocab = native_model.cfg.d_model, native_model.cfg.d_vocab
    space = LabelSpace(d_vocab=d_vocab, token_ids=(4, 9, 1, 0))
    return FutureLens(**_tensors(d_model, d_model), layers=LAYERS, tasks=TASKS, label_space=space,
                      model=native_model)


def _reference(probes, h, i, j):
    """The probe's formula written out: standardise with layer ``i``'s statistics, apply map ``(i, j)``."""
    out = ((h - probes.mean[i]) / probes.scale[i]) @ probes.weight[i, j] + probes.bias[i, j]
    if isinstance(probes, FutureLens):
        out = probes.label_space.project_logits(decode(probes.model, out))
    return out


@pytest.mark.parametrize("kind", ["linear", "lens"])
def test_one_probe_equals_its_slice_of_the_batched_logits(kind, request):
    probes = request.getfixturevalue(kind)
    d, n_classes = probes.d_model, probes.n_classes
    features = torch.randn(len(LAYERS), 10, d, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        batched = probes.logits(features)  # [layer, task, n, C]
        for i, layer in enumerate(LAYERS):
            h = features[i].view(2, 5, d)  # a [batch, pos, d_model] batch of that layer's states
            for j, task in enumerate(TASKS):
                one = probes(h, layer=layer, offset=task.offset, control=task.control)
                assert one.shape == (2, 5, n_classes)
                torch.testing.assert_close(one, batched[i, j].view(2, 5, n_classes), rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(one, _reference(probes, h, i, j), rtol=1e-4, atol=1e-4)
            single = probes(features[i, 3], layer=layer, offset=2)  # one state [d_model] → [n_classes]
            torch.testing.assert_close(single, batched[i, 1, 3], rtol=1e-5, atol=1e-5)
            every_task = probes(h, layer=layer)  # [task, batch, pos, C]
            torch.testing.assert_close(every_task, batched[i].view(len(TASKS), 2, 5, n_classes), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(probes(features, offset=0, control=True), batched[:, 2])  # [layer, n, C]
        torch.testing.assert_close(probes(features), batched)


def test_select_keeps_the_kind_and_matches(linear, lens):
    features = torch.randn(len(LAYERS), 6, 8)
    picked = linear.select(layers=[3, 0], tasks=[Task(2)])
    assert type(picked) is LinearProbes and picked.layers == [3, 0] and picked.tasks == [Task(2)]
    torch.testing.assert_close(picked.logits(features[[2, 0]])[:, 0], linear.logits(features)[[2, 0], 1])
    one = lens.select(layers=[2], tasks=[Task(0, control=True)])
    assert type(one) is FutureLens and one.model is lens.model
    h = torch.randn(4, lens.d_model)
    with torch.no_grad():
        torch.testing.assert_close(one(h, layer=2, offset=0, control=True), lens(h, layer=2, offset=0, control=True))


def test_to_and_state_dict_round_trip(linear):
    assert linear.to("cpu") is linear and isinstance(linear.to(torch.device("cpu")), LinearProbes)
    assert set(linear.state_dict()) == {"weight", "bias", "mean", "scale"}
    assert [name for name, _ in linear.named_parameters()] == ["weight", "bias"]
    assert not any(p.requires_grad for p in linear.parameters())  # fitted probes are frozen
    fresh = LinearProbes.zeros(LAYERS, TASKS, d_model=8, label_space=linear.label_space)
    features = torch.randn(len(LAYERS), 5, 8)
    assert not torch.equal(fresh.logits(features), linear.logits(features))
    fresh.load_state_dict(linear.state_dict())
    assert torch.equal(fresh.logits(features), linear.logits(features))
    doubled = LinearProbes.zeros(LAYERS, TASKS, d_model=8, label_space=linear.label_space).double()
    doubled.load_state_dict(linear.state_dict())
    assert doubled.weight.dtype == torch.float64 and doubled.logits(features).dtype == torch.float64
    torch.testing.assert_close(doubled.logits(features).float(), linear.logits(features))
    copy = pickle.loads(pickle.dumps(linear))  # how probes travel between processes
    assert torch.equal(copy.logits(features), linear.logits(features)) and copy.meta == linear.meta


def test_probes_can_be_trained_further(linear):
    linear.requires_grad_(True)
    loss = linear(torch.randn(3, 8), layer=2, offset=0).logsumexp(-1).sum()
    loss.backward()
    assert linear.weight.grad is not None and linear.weight.grad[1, 0].abs().sum() > 0
    assert linear.weight.grad[0].abs().sum() == 0 and linear.weight.grad[1, 1:].abs().sum() == 0


def test_the_lens_model_is_a_reference_not_a_submodule(lens, native_model):
    model_parameters = {id(p) for p in native_model.parameters()}
    assert not model_parameters & {id(p) for p in lens.parameters()}
    assert len(list(lens.parameters())) == 2 and list(lens.children()) == []
    assert set(lens.state_dict()) == {"weight", "bias", "mean", "scale"}
    device = next(native_model.parameters()).device
    lens.to("meta")  # moves the maps only
    assert lens.weight.device.type == "meta" and next(native_model.parameters()).device == device
    lens.model = native_model  # assigning later does not register it either
    assert list(lens.children()) == [] and lens.model is native_model
    halves = [lens.replace(model=None).select(layers=[layer]) for layer in (0, 2)]
    joined = concat_layers(halves)
    assert type(joined) is FutureLens and joined.layers == [0, 2] and joined.model is None


@pytest.mark.usefixtures("unchecked_shapes")
def test_unknown_layer_or_offset_raises(linear, lens):
    h = torch.randn(4, 8)
    for probes in (linear, lens):
        with pytest.raises(OutOfRangeError, match=r"layer 1 is not among the probes' layers \[0, 2, 3\]"):
            probes(torch.randn(4, probes.d_model), layer=1, offset=0)
        with pytest.raises(OutOfRangeError, match=r"task offset=5 is not among the probes' tasks"):
            probes(torch.randn(4, probes.d_model), layer=0, offset=5)
        with pytest.raises(ForethoughtError, match="control offset=2 is not among"):
            probes(torch.randn(4, probes.d_model), layer=0, offset=2, control=True)
        with pytest.raises(ForethoughtError, match="layer 7"):
            probes.select(layers=[7])
    with pytest.raises(InvalidArgumentError, match=r"expected \[\.\.\., 8\]"):
        linear(torch.randn(4, 5), layer=0, offset=0)
    with pytest.raises(InvalidArgumentError, match="pass offset="):
        linear(h, layer=0, control=True)
    with pytest.raises(InvalidArgumentError, match="integer"):
        linear(h, layer=0, offset=1.0)
    with pytest.raises(InvalidArgumentError, match="layer=True"):
        linear(h, layer=True, offset=0)  # a bool is not a depth (True == 1)
    with pytest.raises(InvalidArgumentError, match="tensor"):
        linear(h.numpy(), layer=0, offset=0)
    with pytest.raises(InvalidArgumentError, match="do not fit probes over 3 layers"):
        linear(h, offset=0)  # without a layer, h must hold every layer's features


def test_repr_is_short(linear, lens):
    for probes in (linear, lens):
        text = repr(probes)
        assert len(text) < 200 and "tensor" not in text and "\n" not in text, text
        assert "layers=[0, 2, 3]" in text and "'control offset=0'" in text and f"d_model={probes.d_model}" in text
    assert repr(linear).startswith("LinearProbes(kind='linear'") and "top3+other" in repr(linear)
    assert repr(lens).startswith("FutureLens(kind='future_lens'") and "Bridge" not in repr(lens)


def test_the_stacked_loop_reports_frozen_probes_while_others_train():
    """``on_freeze`` hears of every freeze short of the last, with the mask of the probes still active."""
    from forethought.probes.early_stopping import MinibatchFitConfig
    from forethought.probes.stacked import TensorBatches, train_stacked

    x = torch.randn(64, 1, generator=torch.Generator().manual_seed(0))
    y = 3.0 * x
    w = torch.zeros(1, 2, 1, requires_grad=True)  # task 0 has nothing to learn, task 1 a slope

    def loss(xb, yb):
        return torch.stack([0.0 * w[0, 0, 0] + 1.0, ((xb[:, 0] * w[0, 1, 0] - yb[:, 0]) ** 2).sum()]).view(1, 2)

    seen = []
    batches = TensorBatches(x, y)
    train_stacked([(w, 0.0)], loss, batches, batches, MinibatchFitConfig(lr=0.05, max_epochs=20, patience=1,
                                                                         progress=False),
                  masks=[lambda improved: improved[:, :, None]], on_freeze=lambda active: seen.append(active.tolist()))
    assert seen and seen[0] == [[False, True]]
