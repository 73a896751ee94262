"""Every intervention result: a tidy ``to_frame()``, a ``plot()`` figure and a short repr without tensors."""

import warnings

import pandas as pd
import pytest
import torch
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
    assert "layer 0, pos 2" in repr(result)  # embeddings at the corrupted position restore the most
    heads = patch_heads(native_model, tokens, corrupt, "kl", layers=[1], progress=False)
    _check_repr(heads, "PatchResult")
    assert "1 layer x 4 head" in repr(heads) and isinstance(heads.plot(), Figure)


def test_transplant_result(native_model):
    result = transplant(native_model, _tokens(native_model), layers=[0, 2], prompts=[[1, 2, 3]], n_steps=2,
                        progress=False)
    frame = result.to_frame(ks=(1,))
    assert list(frame.columns) == ["prompt", "layer", "offset", "k", "precision"]
    assert isinstance(result.plot(k=1), Figure)
    _check_repr(result, "TransplantResult")
    assert "precision@1 at offset 0: best 1.000 (layer 2)" in repr(result)  # the final state fixes the next token
    wide = result.precision_table(k=1)
    assert list(wide.index) == [0, 2, "none"] and float(wide.loc[2, 0]) == 1.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = result.table(k=1)
    assert old.equals(wide) and any(issubclass(w.category, DeprecationWarning) for w in caught)


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
