"""Every intervention result: a tidy ``to_frame()``, a ``plot()`` figure and a short repr without tensors."""


import pandas as pd
import pytest
import torch
from devices import on_gpu
from matplotlib.figure import Figure

from forethought.interventions import (
    DirectionEffect,
    LogitDiff,
    PatchResult,
    TransplantResult,
    direction_effect,
    patch_heads,
    patch_positions,
    transplant,
)
from forethought.interventions.directions import DirectionEffect as DirectionEffectFromDirections
from forethought.interventions.patching import PatchResult as PatchResultFromPatching
from forethought.interventions.results import NO_SCALE, VARIES
from forethought.interventions.transplant import TransplantResult as TransplantResultFromTransplant

pytestmark = pytest.mark.usefixtures("single_thread")


def _tokens(model, n=3, seq=6, seed=0):
    return torch.randint(0, model.cfg.d_vocab, (n, seq), generator=torch.Generator().manual_seed(seed))


def _check_repr(result, name):
    text = repr(result)
    assert text.startswith(f"{name}(") and text.endswith(")")
    assert "\n" not in text and len(text) < 250 and "tensor" not in text and "DataFrame" not in text


def test_result_classes_stay_importable_from_their_modules():
    assert PatchResultFromPatching is PatchResult
    assert TransplantResultFromTransplant is TransplantResult
    assert DirectionEffectFromDirections is DirectionEffect


def test_patch_result(native_model):
    tokens = _tokens(native_model)
    corrupt = tokens.clone()
    corrupt[:, 2] = (corrupt[:, 2] + 1) % native_model.cfg.d_vocab
    result = patch_positions(native_model, tokens, corrupt, LogitDiff(3, 5), layers=[0, 2], progress=False)
    frame = result.to_frame()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 2 * tokens.shape[1]
    assert isinstance(result.plot(), Figure) and isinstance(result.plot(normalized=True, title="t"), Figure)
    _check_repr(result, "PatchResult")
    assert "depth 0, pos 2" in repr(result)  # embeddings at the corrupted position restore the most
    heads = patch_heads(native_model, tokens, corrupt, "kl", layers=[1], progress=False)
    _check_repr(heads, "PatchResult")
    assert "1 layer x 4 head" in repr(heads) and isinstance(heads.plot(), Figure)


def test_transplant_result(native_model):
    result = transplant(native_model, _tokens(native_model), layers=[0, 2], prompts=[[1, 2, 3]], n_steps=2,
                        progress=False)
    frame = result.to_frame(ks=(1,))
    assert list(frame.columns) == ["prompt", "transplanted", "depth", "offset", "k", "precision"]
    assert isinstance(result.plot(k=1), Figure)
    _check_repr(result, "TransplantResult")
    assert "precision@1 at offset 0: best 1.000 (depth 2)" in repr(result)  # the final state fixes the next token
    wide = result.precision_table(k=1)
    assert list(wide.index) == [0, 2, "none"] and float(wide.loc[2, 0]) == 1.0
    assert not hasattr(result, "table")  # the deprecated name of precision_table is gone


def test_direction_effect(native_model):
    effect = direction_effect(native_model, _tokens(native_model), torch.randn(native_model.cfg.d_model), layer=1,
                              offsets=(0, 1), n_random=2, progress=False)
    frame = effect.to_frame()
    assert frame.equals(effect.frame) and frame is not effect.frame
    assert isinstance(effect.plot(metric="top1_changed"), Figure)
    _check_repr(effect, "DirectionEffect")
    assert "2 random draws" in repr(effect) and "offsets [0, 1]" in repr(effect)
    direction_only = direction_effect(native_model, _tokens(native_model), torch.randn(native_model.cfg.d_model),
                                      layer=1, offsets=(0,), n_random=0, progress=False)
    _check_repr(direction_only, "DirectionEffect")
    assert "0 random draws" in repr(direction_only)


# -- PatchResult: masked cells, signs, restoration by the metric's direction, labels of all examples ------------

ISSUE_CLEAN, ISSUE_CORRUPT = ["If the object is a list, the"], ["If the object is a tuple, the"]


def _synthetic_patch(values, clean, corrupt, metric="kl", direction="denoise"):
    """A [1 layer, n pos] PatchResult with one example from plain lists."""
    column = lambda xs: torch.tensor(xs, dtype=torch.float32).reshape(1, -1, 1)  # noqa: E731
    n = len(values)
    return PatchResult(per_example=column(values), clean_baseline=column(clean), corrupt_baseline=column(corrupt),
                       dims=("depth", "pos"), coords={"depth": [0], "pos": list(range(n))},
                       read_positions=torch.arange(n).reshape(1, n), metric=metric, hook="resid",
                       direction=direction)


def test_cells_without_a_baseline_difference_are_nan_with_a_reason_never_inf():
    # float noise between the baselines (1e-9) used to give ±inf; an exact tie gave 0/0
    result = _synthetic_patch([0.0, 1e-9, 0.3], clean=[0.0, 0.0, 0.0], corrupt=[0.0, 2e-9, 0.5])
    normalized = result.normalized()
    assert not normalized.isinf().any()
    assert normalized[0, :2].isnan().all() and abs(normalized[0, 2].item() - 0.4) < 1e-6
    frame = result.to_frame()
    assert frame["note"].tolist()[:2] == [NO_SCALE] * 2 and frame["note"].iloc[2] == ""
    assert frame["normalized"].iloc[:2].isna().all()


def test_the_issue_prompt_pair_gives_no_inf_and_no_negative_zero(native_model):
    result = patch_positions(native_model, ISSUE_CLEAN, ISSUE_CORRUPT, "kl", read_offset=1, progress=False)
    normalized = result.normalized()
    assert not normalized.isinf().any()
    assert normalized[:, 0].isnan().all()  # before the edited token the KL of both runs is 0: nothing to restore
    for tensor in (normalized, result.effect()):
        finite = tensor[~tensor.isnan()]
        assert not (torch.signbit(finite) & (finite == 0)).any(), "no -0.0 anywhere"
    for kl in (result.values, result.per_example, result.clean_baseline, result.corrupt_baseline):
        assert (kl >= 0).all() and not torch.signbit(kl).any()
    assert "-0.0" not in repr(result)
    frame = result.to_frame(per_example=True)
    shown = frame[["value", "normalized", "clean", "corrupt"]]
    if on_gpu():  # other kernels' float32 noise may leave a genuine -1e-6 where the CPU computes 0 exactly
        shown = shown.mask(shown.abs() < 5e-5, 0.0)  # below what 4 decimals show
    assert not any(str(v).startswith("-0.0000") for v in shown.map(lambda x: f"{x:.4f}").to_numpy().ravel())


def test_kl_is_never_negative():
    from forethought.interventions import kl_divergence

    logits = torch.randn(64, 300, generator=torch.Generator().manual_seed(0)) * 30
    kl = kl_divergence(logits, logits + 1e-7)
    assert (kl >= 0).all() and not torch.signbit(kl).any()


def test_repr_names_the_most_restored_cell_for_kl_not_the_largest_kl():
    # denoising KL: the cell with KL 0.01 (corrupt 0.5) restores 98 %; the one with KL 0.9 restores nothing
    result = _synthetic_patch([0.9, 0.01, 0.4], clean=[0.0, 0.0, 0.0], corrupt=[0.5, 0.5, 0.5])
    text = repr(result)
    assert "most restored 0.980" in text and "pos 1" in text and "largest |value|" not in text
    assert result.effect()[0, 1].item() == pytest.approx(0.98)
    noised = _synthetic_patch([0.9, 0.01, 0.4], clean=[0.0, 0.0, 0.0], corrupt=[0.5, 0.5, 0.5], direction="noise")
    assert "most destroyed 1.800" in repr(noised) and "pos 0" in repr(noised)
    nothing = _synthetic_patch([0.0, 0.0], clean=[0.0, 0.0], corrupt=[0.0, 0.0])
    assert "no cell has a clean-corrupt difference" in repr(nothing)


def test_plot_shows_restoration_bright_where_restored():
    result = _synthetic_patch([0.9, 0.01, 0.4], clean=[0.0, 0.0, 0.0], corrupt=[0.5, 0.5, 0.5])
    figure = result.plot()
    mesh = figure.axes[0].collections[0]
    shown = mesh.get_array().ravel()
    assert list(shown) == pytest.approx([-0.8, 0.98, 0.2])  # the fraction restored, not the raw KL
    assert "restored" in figure.axes[-1].get_ylabel()
    raw = result.plot(normalized=False)
    assert raw.axes[0].collections[0].cmap.name == "viridis_r"  # low KL (clean) is bright
    assert "lower = closer to clean" in raw.axes[-1].get_ylabel()


def test_token_labels_come_from_all_examples(native_model):
    clean = torch.tensor([[5, 6, 7, 8], [5, 9, 7, 8]])
    corrupt = clean.clone()
    corrupt[:, 2] = 10
    result = patch_positions(native_model, clean, corrupt, "kl", progress=False)
    decode = native_model.tokenizer.decode
    assert result.labels == [decode([5]), VARIES, decode([7]), decode([8])]
    assert result.to_frame().query("depth == 0")["token"].tolist() == result.labels


# -- one name per layer convention: "depth" is a residual depth, no sentinel -1 -------------------------------------


def test_transplant_frame_has_no_sentinel_depth(native_model):
    result = transplant(native_model, _tokens(native_model), layers=[0, 2], prompts=[[1, 2, 3]], n_steps=2,
                        progress=False)
    frame = result.to_frame(ks=(1,))
    assert "layer" not in frame.columns and not (frame["depth"] == -1).any()
    untouched = frame[~frame["transplanted"]]
    assert len(untouched) == 2 and untouched["depth"].isna().all()  # one per offset, depth missing
    assert frame.loc[frame["transplanted"], "depth"].tolist() == [0, 2, 0, 2]
    assert str(frame["depth"].dtype) == "Int64" and frame["transplanted"].dtype == bool
    assert result.precision_table(k=1).index.name == "depth"


def test_direction_effect_names_its_residual_depth(native_model):
    n = native_model.cfg.n_layers
    effect = direction_effect(native_model, _tokens(native_model), torch.randn(native_model.cfg.d_model), layer=-1,
                              offsets=(0,), n_random=0, progress=False)
    assert effect.depth == n and (effect.frame["depth"] == n).all()  # -1 is the final depth, stored as such
    assert f"resid depth {n}" in repr(effect)
    inside = direction_effect(native_model, _tokens(native_model), torch.randn(native_model.cfg.d_model), layer=1,
                              hook="hook_resid_mid", offsets=(0,), n_random=0, progress=False)
    assert (inside.frame["layer"] == 1).all() and "depth" not in inside.frame.columns


def test_patch_result_names_residual_depths(native_model):
    tokens = _tokens(native_model)
    corrupt = tokens.clone()
    corrupt[:, 2] = (corrupt[:, 2] + 1) % native_model.cfg.d_vocab
    resid = patch_positions(native_model, tokens, corrupt, "kl", progress=False)
    assert resid.dims == ("depth", "pos") and resid.coords["depth"] == [0, 1, 2]
    assert list(resid.to_frame().columns[:2]) == ["depth", "pos"] and "3 depth x 6 pos" in repr(resid)
    assert resid.plot().axes[0].get_ylabel() == "residual depth"
    block = patch_positions(native_model, tokens, corrupt, "kl", hook="hook_attn_out", progress=False)
    assert block.dims == ("layer", "pos") and block.coords["layer"] == [0, 1]
