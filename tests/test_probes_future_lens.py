"""The Future-Lens linear model: decoding with the model's own read-out, least squares, fine-tuning."""

import pytest
import torch
from devices import DEVICE
from sklearn.linear_model import Ridge

from forethought.activations import collect_activations
from forethought.errors import InvalidArgumentError, VocabularyMismatchError
from forethought.models import load_model, tiny_model
from forethought.probes.future_lens import (
    FutureLensConfig,
    decode,
    fit_future_lens,
    fit_label_lens,
    fit_ridge_lens,
    least_squares,
)
from forethought.probes.linear import Task
from forethought.probes.targets import LabelSpace

pytestmark = pytest.mark.usefixtures("single_thread")


def _resid(model, n_seq=24, seq_len=12, seed=0):
    tokens = torch.randint(0, model.cfg.d_vocab, (n_seq, seq_len), generator=torch.Generator().manual_seed(seed))
    return tokens, collect_activations(model, tokens, progress=False)["resid"]  # [n_layers + 1, seq, pos, d]


def test_decode_is_the_models_own_read_out(any_model):
    tokens, resid = _resid(any_model, n_seq=3)
    with torch.no_grad():
        logits = any_model(tokens)
        torch.testing.assert_close(decode(any_model, resid[-1]), logits, rtol=1e-5, atol=1e-5)


def test_last_layer_offset_zero_recovers_the_model(any_model):
    """Least squares from the final residual to itself is the identity: the lens reproduces the model."""
    _, resid = _resid(any_model)
    final = resid[-1].flatten(0, 1)[None]  # [1, n, d]
    lens = fit_future_lens(final, final, model=any_model,
                           config=FutureLensConfig(ridge=0.0, max_epochs=0, progress=False))
    with torch.no_grad():
        torch.testing.assert_close(lens.vocab_logits(final)[0, 0], decode(any_model, final[0]), rtol=1e-3, atol=1e-3)


def test_least_squares_matches_sklearn_ridge():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 300, 5, generator=generator) * 3 + 1
    h = torch.randn(3, 300, 4, generator=generator)
    weight, bias, mean, scale = least_squares(x, h, ridge=0.01, chunk=64)
    for layer in range(2):
        standardised = ((x[layer] - mean[layer]) / scale[layer]).double().numpy()
        for task in range(3):
            reference = Ridge(alpha=0.01 * 300).fit(standardised, h[task].double().numpy())
            torch.testing.assert_close(weight[layer, task], torch.from_numpy(reference.coef_.T).float(),
                                       rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(bias[layer, task], torch.from_numpy(reference.intercept_).float(),
                                       rtol=1e-4, atol=1e-5)


@pytest.fixture(params=["native", "gpt2"])
def model(request, checkpoint_dirs, tokenizer):
    """A fresh random model whose final-norm gain is raised, so its next-token distributions are not flat."""
    if request.param == "native":
        model = tiny_model(n_layers=2, d_model=32, n_heads=4, d_vocab=len(tokenizer), n_ctx=64, tokenizer=tokenizer,
                           device=DEVICE)
    else:
        model = load_model(checkpoint_dirs["gpt2"], device=DEVICE)
    with torch.no_grad():
        for name, param in model.ln_final.named_parameters():
            if name.endswith("weight") or name.endswith(".w"):
                param.mul_(20.0)
    return model


def _soft_cross_entropy(model, lens, features, future):
    with torch.no_grad():
        target = decode(model, future).softmax(-1)
        return -(target * lens.vocab_logits(features).log_softmax(-1)).sum(-1).mean(-1)  # [layer, offset]


def test_fine_tuning_never_loses_to_least_squares_and_leaves_the_model_alone(model):
    _, resid = _resid(model, n_seq=120)
    n_pos = resid.shape[2] - 2
    features = resid[:2, :, :n_pos].flatten(1, 2)  # embeddings and block 0
    future = torch.stack([resid[-1][:, o : o + n_pos] for o in (0, 1)]).flatten(1, 2)
    train, held_out = slice(0, 90 * n_pos), slice(90 * n_pos, None)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    initial = fit_future_lens(features[:, train], future[:, train], model=model,
                              config=FutureLensConfig(max_epochs=0, progress=False))
    tuned = fit_future_lens(features[:, train], future[:, train], model=model, val_features=features[:, held_out],
                            val_future_resid=future[:, held_out],
                            config=FutureLensConfig(max_epochs=4, lr=3e-3, batch_size=64, progress=False),
                            offsets=[0, 1])
    assert tuned.tasks == [Task(0), Task(1)]
    start = _soft_cross_entropy(model, initial, features[:, held_out], future[:, held_out])
    end = _soft_cross_entropy(model, tuned, features[:, held_out], future[:, held_out])
    assert (end <= start + 1e-6).all() and (end < start - 1e-4).any()  # early stopping keeps the best epoch
    assert _soft_cross_entropy(model, tuned, features[:, train], future[:, train]).isfinite().all()
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) and p.grad is None, name


def test_label_lens_learns_a_readable_mapping(model):
    tokens, resid = _resid(model, n_seq=96, seq_len=8)
    features = resid[:1].flatten(1, 2)  # embeddings: the current token is readable
    space = LabelSpace(d_vocab=model.cfg.d_vocab, token_ids=(5, 6, 7))
    labels = (tokens.flatten() % 4)[None]  # 4 classes: tokens 5, 6, 7 and "other"
    lens = fit_label_lens(features, labels, model=model, label_space=space, tasks=[Task(0, control=True)],
                          init_resid=resid[-1].flatten(0, 1).mean(0),
                          config=FutureLensConfig(max_epochs=30, lr=3e-2, batch_size=64, progress=False))
    with torch.no_grad():
        accuracy = (lens.logits(features).argmax(-1)[0, 0].cpu() == labels[0]).float().mean()
    assert accuracy > 0.4  # chance is about 0.25


def test_ridge_lens_wraps_the_ridge_probes(native_model):
    _, resid = _resid(native_model, n_seq=30)
    final = resid[-1].flatten(0, 1)
    features = torch.stack([final, torch.randn_like(final)])  # layer 0 holds the target, layer 1 is noise
    groups = torch.arange(30).repeat_interleave(resid.shape[2])
    lens = fit_ridge_lens(features, final[None], model=native_model, groups=groups, layers=[2, 0])
    r2 = torch.tensor(lens.meta["ridge_r2"])
    assert r2[0, 0] > 0.99 and r2[1, 0] < 0.1 and lens.layers == [2, 0] and lens.meta["method"] == "ridge"
    with torch.no_grad():
        torch.testing.assert_close(lens.predict_resid(features)[0, 0].cpu(), final.cpu(), atol=1e-2, rtol=1e-2)


@pytest.mark.usefixtures("unchecked_shapes")
def test_bad_inputs(native_model):
    x = torch.randn(1, 10, 32)
    with pytest.raises(InvalidArgumentError, match="same examples"):
        fit_future_lens(x, torch.randn(1, 9, 32), model=native_model)
    with pytest.raises(VocabularyMismatchError, match="d_model"):
        fit_future_lens(torch.randn(1, 10, 16), torch.randn(1, 10, 16), model=native_model)
    with pytest.raises(InvalidArgumentError, match="max_epochs"):
        FutureLensConfig(max_epochs=-1)


def test_future_lens_sweep_accepts_bfloat16_features():
    from forethought.models import tiny_model
    from forethought.probes import probe_sweep
    from forethought.probes.sweep import ProbeSweepConfig

    model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=12, n_ctx=16, device=DEVICE)
    tokens = torch.randint(0, 12, (40, 16), generator=torch.Generator().manual_seed(0))
    table = probe_sweep({"m": model}, tokens, offsets=[0, 1], method="future_lens", progress=False,
                        config=ProbeSweepConfig(feature_dtype=torch.bfloat16)).to_frame()
    assert table["top1"].notna().all()


def test_fine_tuning_skips_frozen_pairs_and_changes_no_lens(model, monkeypatch):
    """Once early stopping freezes a (layer, offset) pair, the fine-tuning stops computing it: the lens and every
    pair's best epoch are those of a fine-tuning that computes every pair to the end (up to float32 rounding: the
    batched products over fewer pairs may sum in another order). The second task's target is one constant
    residual, which least squares hits exactly, so its pairs start at their best and freeze first whatever the
    numerics."""
    import forethought.probes.future_lens as future_lens

    _, resid = _resid(model, n_seq=80)
    n_pos = resid.shape[2] - 1
    features = resid[:2, :, :n_pos].flatten(1, 2)  # embeddings and block 0
    future = torch.stack([resid[-1][:, 1:], resid[-1][:1, :1].expand(80, n_pos, -1)]).flatten(1, 2)
    train, held_out = slice(0, 60 * n_pos), slice(60 * n_pos, None)
    config = FutureLensConfig(max_epochs=4, patience=1, lr=1e-3, batch_size=64, progress=False)

    def fit():
        return fit_future_lens(features[:, train], future[:, train], model=model, val_features=features[:, held_out],
                               val_future_resid=future[:, held_out], config=config)

    original, frozen = future_lens.train_stacked, []

    def recording(*args, on_freeze, **kwargs):
        return original(*args, on_freeze=lambda active: (frozen.append(active.clone()), on_freeze(active)), **kwargs)

    monkeypatch.setattr(future_lens, "train_stacked", recording)
    skipping = fit()
    assert frozen and not frozen[0][:, 1].any() and frozen[0][:, 0].any()  # the constant task froze, not the other
    monkeypatch.setattr(future_lens, "train_stacked", lambda *args, on_freeze, **kwargs: original(*args, **kwargs))
    everything = fit()
    torch.testing.assert_close(skipping.weight, everything.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(skipping.bias, everything.bias, rtol=1e-5, atol=1e-6)
    assert skipping.meta["best_epoch"] == everything.meta["best_epoch"]
