"""Activation patching against transformer_lens.patching and a slow one-cell-per-forward reference."""

from contextlib import contextmanager

import pytest
import torch
import transformer_lens.patching as tl_patching
from devices import DEVICE

from forethought.errors import (
    ForethoughtError,
    InvalidArgumentError,
    OutOfRangeError,
    UnknownHookError,
    VocabularyMismatchError,
)
from forethought.hook_names import hook_name
from forethought.interventions import (
    KLToClean,
    LogitDiff,
    LogProb,
    PatchResult,
    kl_divergence,
    patch_activation,
    patch_heads,
    patch_positions,
)

SEQ = 5


def _pair(model, batch=2, seq=SEQ, seed=0):
    """Clean prompts and corrupted copies that differ at position 1."""
    clean = torch.randint(0, model.cfg.d_vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))
    corrupt = clean.clone()
    corrupt[:, 1] = (corrupt[:, 1] + 1) % model.cfg.d_vocab
    return clean, corrupt


@contextmanager
def _eval(model):
    """transformer_lens.patching insists on eval mode; restore the shared fixture's mode afterwards."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, mode in modes.items():
            module.train(mode)


def _no_hooks_left(model):
    return all(not point._forward_hooks for point in model.hook_dict.values())


def _tl_metric(answer, wrong):
    return lambda logits: (logits[:, -1, answer] - logits[:, -1, wrong]).mean()


def test_resid_pre_matches_transformer_lens(any_model):
    clean, corrupt = _pair(any_model)
    with _eval(any_model), torch.no_grad():
        _, cache = any_model.run_with_cache(clean)
        expected = tl_patching.get_act_patch_resid_pre(any_model, corrupt, cache, _tl_metric(3, 5))
        ours = patch_positions(any_model, clean, corrupt, LogitDiff(3, 5), hook="hook_resid_pre", progress=False)
    assert ours.dims == ("layer", "pos") and ours.values.shape == expected.shape
    torch.testing.assert_close(ours.values, expected.cpu(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("ours_kwargs", "tl_function"), [
    ({"positions": None}, "get_act_patch_attn_head_out_all_pos"),
    ({"positions": "all"}, "get_act_patch_attn_head_out_by_pos"),
    ({"positions": "all", "hook": "attn.hook_v"}, "get_act_patch_attn_head_v_by_pos"),
])
def test_heads_match_transformer_lens(any_model, ours_kwargs, tl_function):
    clean, corrupt = _pair(any_model, seq=4)
    with _eval(any_model), torch.no_grad():
        _, cache = any_model.run_with_cache(clean)
        expected = getattr(tl_patching, tl_function)(any_model, corrupt, cache, _tl_metric(3, 5))
        ours = patch_heads(any_model, clean, corrupt, LogitDiff(3, 5), progress=False, **ours_kwargs)
    assert ours.values.shape == expected.shape  # grouped-query k/v sweeps have n_key_value_heads heads
    torch.testing.assert_close(ours.values, expected.cpu(), rtol=1e-5, atol=1e-5)


def _slow_sweep(model, clean, corrupt, metric, hook, layers, positions, direction, read_offset):
    """One forward per cell with patch_activation, the metric computed by hand."""
    run, source_tokens = (corrupt, clean) if direction == "denoise" else (clean, corrupt)
    clean_logits, corrupt_logits = model(clean), model(corrupt)
    values = torch.empty(len(layers), len(positions), clean.shape[0])
    for i, layer in enumerate(layers):
        name = hook_name(model, hook, layer)
        _, cache = model.run_with_cache(source_tokens)
        for j, pos in enumerate(positions):
            with patch_activation(model, name, cache[name], positions=[pos]):
                logits = model(run)
            r = pos + read_offset
            if isinstance(metric, KLToClean):
                values[i, j] = kl_divergence(clean_logits[:, r], logits[:, r])
            else:  # LogProb of the clean run's top token
                target = clean_logits[:, r].argmax(-1, keepdim=True)
                values[i, j] = logits[:, r].log_softmax(-1).gather(-1, target).squeeze(-1)
    return values, clean_logits, corrupt_logits


@pytest.mark.parametrize(("direction", "metric"), [("denoise", KLToClean()), ("noise", LogProb())])
def test_planning_offset_matches_slow_reference(any_model, direction, metric):
    """The metric read N positions after the patched one (not covered by transformer_lens.patching)."""
    clean, corrupt = _pair(any_model, seq=6)
    with torch.no_grad():
        ours = patch_positions(any_model, clean, corrupt, metric, hook="resid", direction=direction, read_offset=2,
                               batch_size=64, progress=False)
        expected, _, _ = _slow_sweep(any_model, clean, corrupt, metric, "resid", ours.coords["depth"],
                                     ours.coords["pos"], direction, 2)
    assert ours.coords["pos"] == [0, 1, 2, 3]
    assert ours.read_positions.tolist() == [[2, 3, 4, 5]] * (any_model.cfg.n_layers + 1)
    torch.testing.assert_close(ours.per_example, expected, rtol=1e-4, atol=1e-5)


def test_batched_cells_equal_one_cell_per_forward(native_model):
    clean, corrupt = _pair(native_model, batch=3)
    kwargs = {"metric": LogProb(target=7), "hook": "hook_attn_out", "progress": False}
    batched = patch_positions(native_model, clean, corrupt, batch_size=1000, **kwargs)
    single = patch_positions(native_model, clean, corrupt, batch_size=1, **kwargs)
    torch.testing.assert_close(batched.per_example, single.per_example, rtol=1e-5, atol=1e-6)


def test_patching_clean_into_clean_gives_the_clean_metric(any_model):
    clean, _ = _pair(any_model)
    for result in (
        patch_positions(any_model, clean, clean, LogitDiff(3, 5), progress=False),
        patch_heads(any_model, clean, clean, LogitDiff(3, 5), positions="all", progress=False),
    ):
        torch.testing.assert_close(result.per_example, result.clean_baseline, rtol=0, atol=1e-5)
        torch.testing.assert_close(result.clean_baseline, result.corrupt_baseline, rtol=0, atol=0)


def test_patching_everything_at_the_last_layer_recovers_clean_logits(any_model):
    clean, corrupt = _pair(any_model)
    layer = any_model.cfg.n_layers
    name = hook_name(any_model, "resid", layer)
    with torch.no_grad():
        clean_logits, cache = any_model.run_with_cache(clean)
        with patch_activation(any_model, "resid", cache[name], layer=layer):
            patched = any_model(corrupt)
    torch.testing.assert_close(patched, clean_logits, rtol=1e-5, atol=1e-5)
    # cell by cell: the final residual at t fixes the prediction at t, so the KL there is 0 (normalised: 1)
    result = patch_positions(any_model, clean, corrupt, "kl", layers=[layer], read_offset=0, progress=False)
    assert result.values.abs().max() < 1e-5
    # normalised = 1 - value / baseline: an error of 1e-5 in the value is 1e-5 / baseline in the ratio, so the
    # ratio is only checked where the corrupt baseline is large enough for that to be meaningful
    baseline = result.corrupt_baseline.mean(-1)
    changed = baseline > 1e-3
    assert changed.any(), "the corruption must change some predictions"
    torch.testing.assert_close(result.normalized()[changed], torch.ones(int(changed.sum())), rtol=0, atol=1e-2)


def test_result_frame_and_normalisation(native_model):
    clean, corrupt = _pair(native_model)
    result = patch_positions(native_model, clean, corrupt, LogitDiff(3, 5), layers=[0, 1], positions=[1, 2],
                             progress=False)
    assert isinstance(result, PatchResult)
    frame = result.to_frame()
    assert len(frame) == 4 and list(frame[["depth", "pos"]].itertuples(index=False, name=None)) == [
        (0, 1), (0, 2), (1, 1), (1, 2)]
    assert {"value", "normalized", "clean", "corrupt", "sem", "read_pos", "token", "metric", "hook",
            "direction"} <= set(frame.columns)
    expected = (frame["value"] - frame["corrupt"]) / (frame["clean"] - frame["corrupt"])
    torch.testing.assert_close(torch.tensor(frame["normalized"].values), torch.tensor(expected.values))
    # patching the embeddings at the corrupted position (layer 0 of "resid") restores the clean run exactly
    assert abs(frame.loc[(frame.depth == 0) & (frame.pos == 1), "normalized"].item() - 1) < 1e-5
    assert len(result.to_frame(per_example=True)) == 4 * clean.shape[0]


def test_token_specs_per_example_and_per_position(native_model):
    clean, corrupt = _pair(native_model)
    per_example = torch.tensor([3, 4])
    per_position = torch.stack([torch.arange(SEQ), torch.arange(SEQ) + 10])
    a = patch_positions(native_model, clean, corrupt, LogProb(target=per_example), progress=False)
    b = patch_positions(native_model, clean, corrupt, LogProb(target=per_position), read_offset=1, progress=False)
    with torch.no_grad():
        logp = native_model(clean).log_softmax(-1)
    logp = logp.cpu()
    torch.testing.assert_close(a.clean_baseline[0, 0], logp[[0, 1], -1, [3, 4]])
    # read at pos + 1: the target there is per_position[:, pos + 1]
    torch.testing.assert_close(b.clean_baseline[0, 2], logp[[0, 1], 3, [3, 13]])


def test_hooks_are_removed_after_an_exception(any_model):
    clean, corrupt = _pair(any_model)
    with torch.no_grad():
        before = any_model(corrupt)
        _, cache = any_model.run_with_cache(clean)
        with pytest.raises(RuntimeError), patch_activation(any_model, "blocks.0.hook_resid_pre",
                                                           cache["blocks.0.hook_resid_pre"]):
            raise RuntimeError("inside the block")
        assert _no_hooks_left(any_model)

        def failing(readout):
            raise RuntimeError("metric failed")

        with pytest.raises(RuntimeError, match="metric failed"):
            patch_positions(any_model, clean, corrupt, failing, progress=False)
        assert _no_hooks_left(any_model)
        torch.testing.assert_close(any_model(corrupt), before, rtol=0, atol=0)


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"hook": "hook_nonsense"}, UnknownHookError),
    ({"layers": [7]}, OutOfRangeError),
    ({"positions": [SEQ]}, OutOfRangeError),
    ({"read_pos": SEQ}, OutOfRangeError),
    ({"read_offset": SEQ}, OutOfRangeError),
    ({"positions": [SEQ - 1], "read_offset": 1}, OutOfRangeError),
    ({"direction": "sideways"}, InvalidArgumentError),
    ({"metric": "accuracy"}, InvalidArgumentError),
    ({"metric": LogitDiff(answer=10_000)}, VocabularyMismatchError),
    ({"metric": LogProb(target=torch.zeros(3, dtype=torch.long))}, InvalidArgumentError),
    ({"batch_size": 0}, InvalidArgumentError),
])
def test_bad_position_sweeps_raise(native_model, kwargs, error):
    clean, corrupt = _pair(native_model)
    with pytest.raises(error) as caught:
        patch_positions(native_model, clean, corrupt, **{"progress": False, **kwargs})
    assert issubclass(caught.type, ForethoughtError) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"heads": [4]}, OutOfRangeError),
    ({"hook": "hook_resid_pre"}, InvalidArgumentError),
    ({"read_offset": 1}, InvalidArgumentError),  # needs per-position patching
    ({"layers": [-3]}, OutOfRangeError),
])
def test_bad_head_sweeps_raise(native_model, kwargs, error):
    clean, corrupt = _pair(native_model)
    with pytest.raises(error):
        patch_heads(native_model, clean, corrupt, **{"progress": False, **kwargs})


@pytest.mark.usefixtures("unchecked_shapes")
def test_mismatched_or_invalid_tokens_raise(native_model):
    clean, corrupt = _pair(native_model)
    with pytest.raises(InvalidArgumentError, match="differ in shape"):
        patch_positions(native_model, clean, corrupt[:, :-1], progress=False)
    with pytest.raises(VocabularyMismatchError):
        patch_positions(native_model, clean + native_model.cfg.d_vocab, corrupt, progress=False)
    with pytest.raises(InvalidArgumentError):
        patch_positions(native_model, clean.float(), corrupt, progress=False)


def test_patch_activation_validates_its_source(native_model):
    clean, corrupt = _pair(native_model)
    with pytest.raises(OutOfRangeError):
        with patch_activation(native_model, "resid", torch.zeros(2, SEQ, 32), layer=0, positions=[SEQ]):
            pass
    with pytest.raises(InvalidArgumentError, match="no head axis"):
        with patch_activation(native_model, "resid", torch.zeros(2, SEQ, 32), layer=0, heads=[0]):
            pass
    with pytest.raises(InvalidArgumentError, match="does not fit"):
        with patch_activation(native_model, "resid", torch.zeros(2, SEQ, 16), layer=0):
            native_model(corrupt)
    assert _no_hooks_left(native_model)


def test_dropout_in_training_mode_is_refused(checkpoint_dirs):
    from forethought.models import load_model

    model = load_model(checkpoint_dirs["gpt2"], device=DEVICE).train()  # GPT-2 configs default to dropout 0.1
    clean, corrupt = _pair(model)
    with pytest.raises(InvalidArgumentError, match="eval"):
        patch_positions(model, clean, corrupt, progress=False)


def test_heatmap(native_model):
    from forethought.plots import plot_patching_heatmap

    clean, corrupt = _pair(native_model)
    figure = plot_patching_heatmap(patch_positions(native_model, clean, corrupt, progress=False), normalized=True)
    assert figure.axes[0].get_ylabel() == "residual depth"
    heads = patch_heads(native_model, clean, corrupt, positions=[1, 2], progress=False)
    assert len(plot_patching_heatmap(heads).axes) == native_model.cfg.n_heads + 1  # panels + colour bar
