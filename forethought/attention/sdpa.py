"""forethought's attention kernel under the bridge: fused scaled-dot-product attention from the hooked q, k, v.

TransformerLens 4.3 bridges recompute attention eagerly, with an explicit ``[batch, head, T, T]`` softmax, and
have no switch for SDPA. :func:`install_sdpa` replaces, on one model's attention modules (instance attributes,
the classes stay untouched), the part that turns q, k, v into the attention output:

* joint-QKV bridges (GPT-2, GPT-NeoX): ``_reconstruct_attention(q, k, v, **kwargs)``, which runs after the hooked
  q, k, v projections;
* the position-embedding bridge (Llama and other plain rotary families): ``forward``, rewritten with the same
  hook calls in the same order (``hook_in``, ``hook_q/k/v``, ``hook_cos/sin``, ``hook_rot_q/k``, ``hook_z``,
  ``hook_out``);
* ``boot_native`` models: the native attention module's ``forward``.

Every hook except ``hook_attn_scores`` and ``hook_pattern`` fires and keeps its edits. Whenever one of those two
has a hook (e.g. ``run_with_cache``), or the call is one the kernel does not reproduce (a padding mask, a filled
KV cache, active attention dropout, ``use_attn_result``, split q/k/v inputs, soft-capping, q/k norms, a sliding
window shorter than the sequence, ...), the bridge's own eager code runs instead, so patterns stay observable and
nothing silently changes. (Families whose layers the kernel does not install on, such as Qwen3, OLMo-2, Gemma-2
and Gemma-3, run the bridge's eager attention throughout.)

The kernel computes causal attention with one fused call (the flash kernel on CPU, ``scaled_dot_product_attention``
elsewhere). :func:`~forethought.myopic_training.myopic` registers a *view* with the kernel, so that a myopic step
computes attention once (fused attention over the detached past plus an O(T) diagonal correction) instead of
recomputing it on top of the model's own.

Example:
    >>> import torch
    >>> from forethought.models import tiny_model
    >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8, attention="eager")
    >>> tokens = torch.randint(0, 20, (2, 8))
    >>> eager = model(tokens)
    >>> with sdpa_attention(model):
    ...     fused = model(tokens)
    >>> torch.allclose(fused, eager, atol=1e-5), sdpa_installed(model)
    (True, False)
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from forethought.attention.fused import causal_attention
from forethought.errors import check_choice

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

#: How a model's attention is computed: forethought's fused kernel, or the bridge's eager ``[T, T]`` softmax.
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")

#: ``view(layer, q, k, v, scale)`` -> attention output ``[batch, head, pos, d_head]``, or None for plain attention.
View = Callable[[int, Tensor, Tensor, Tensor, float], "Tensor | None"]

_ATTRIBUTE = "_forethought_sdpa"


class KernelState:
    """What one model's replaced attention modules share: the active views and the layers a view handled."""

    def __init__(self) -> None:
        self.views: list[View] = []
        self.handled: set[int] = set()
        self.hf_attn_implementation: str | None = None
        #: Each layer's sliding window (None: full causal attention); the kernel runs a windowed layer only while
        #: the sequence fits in its window (where the band masks nothing beyond the causal mask).
        self.windows: dict[int, int | None] = {}

    def windowed(self, layer: int, seq_len: int) -> bool:
        """True when ``layer`` has a sliding window shorter than ``seq_len``: the kernel must not compute it."""
        window = self.windows.get(layer)
        return window is not None and window < seq_len

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        """Causal attention of one layer (``[batch, head, pos, d]``, k/v may have fewer heads).

        The innermost view computes it when one is active and takes this call.
        """
        if self.views:
            out = self.views[-1](layer, q, k, v, scale)
            if out is not None:
                self.handled.add(layer)
                return out
        return causal_attention(q, k, v, scale)

    def take(self, layer: int) -> bool:
        """True (once) when a view computed ``layer``'s attention in the current forward."""
        if layer in self.handled:
            self.handled.discard(layer)
            return True
        return False


def check_attention(attention: str) -> None:
    """Raise unless ``attention`` is one of :data:`ATTENTION_IMPLEMENTATIONS`."""
    check_choice("attention", attention, ATTENTION_IMPLEMENTATIONS)


def kernel_state(model: TransformerBridge) -> KernelState | None:
    """The model's kernel state when :func:`install_sdpa` is in effect, else None."""
    for block in model.blocks:
        for module in (block.attn, getattr(block.attn, "original_component", None)):
            entry = _entry(module)
            if entry is not None:
                return entry[0]
    return None


def sdpa_installed(model: TransformerBridge) -> bool:
    """Whether forethought's fused attention kernel is installed on ``model``."""
    return kernel_state(model) is not None


def install_sdpa(model: TransformerBridge) -> int:
    """Install the fused attention kernel on every attention layer it can reproduce; returns how many.

    Layers of other kinds keep the bridge's eager attention. Installing twice is a no-op.
    """
    if sdpa_installed(model):
        return sum(_replaced(block.attn) for block in model.blocks)
    from forethought.attention.recompute import sliding_window

    state = KernelState()
    count = 0
    for layer, block in enumerate(model.blocks):
        state.windows[layer] = sliding_window(model, layer)
        count += _install_layer(block.attn, state, layer)
    hf_config = getattr(getattr(model, "original_model", None), "config", None)
    if count and hasattr(hf_config, "_attn_implementation"):
        # HF builds no [T, T] mask for SDPA when nothing is padded; the bridge's eager fallback masks causally itself.
        state.hf_attn_implementation = hf_config._attn_implementation
        hf_config._attn_implementation = "sdpa"
    return count


def remove_sdpa(model: TransformerBridge) -> None:
    """Give every attention layer back the bridge's own (eager) attention."""
    state = kernel_state(model)
    if state is None:
        return
    for block in model.blocks:
        for module in (block.attn, getattr(block.attn, "original_component", None)):
            if _entry(module) is None:
                continue
            for name in ("_reconstruct_attention", "forward", _ATTRIBUTE):
                vars(module).pop(name, None)
    hf_config = getattr(getattr(model, "original_model", None), "config", None)
    if state.hf_attn_implementation is not None and hf_config is not None:
        hf_config._attn_implementation = state.hf_attn_implementation


@contextmanager
def sdpa_attention(model: TransformerBridge, enabled: bool = True) -> Iterator[TransformerBridge]:
    """Run the ``with`` block with the fused kernel installed (``enabled``) or with the eager attention.

    The model's previous state is restored on exit.
    """
    was = sdpa_installed(model)
    if enabled and not was:
        install_sdpa(model)
    elif not enabled and was:
        remove_sdpa(model)
    try:
        yield model
    finally:
        if was and not sdpa_installed(model):
            install_sdpa(model)
        elif not was and sdpa_installed(model):
            remove_sdpa(model)


@contextmanager
def kernel_view(model: TransformerBridge, view: View) -> Iterator[KernelState | None]:
    """Let ``view`` compute attention inside the ``with`` block; yields the kernel state (None: not installed)."""
    state = kernel_state(model)
    if state is None:
        yield None
        return
    state.views.append(view)
    try:
        yield state
    finally:
        state.views.remove(view)
        state.handled.clear()


def _entry(module: Any) -> tuple | None:
    """The kernel's entry on this very module (bridges delegate unknown attributes to the wrapped module)."""
    return None if module is None else vars(module).get(_ATTRIBUTE)


def _set(module: Any, name: str, value: Any) -> None:
    """An instance attribute on this very module (a bridge's ``__setattr__`` may forward to the wrapped one)."""
    vars(module)[name] = value


def _replaced(module: Any) -> bool:
    return _entry(module) is not None or _entry(getattr(module, "original_component", None)) is not None


def _install_layer(attn: Any, state: KernelState, layer: int) -> int:
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge
    from transformer_lens.model_bridge.generalized_components.joint_qkv_attention import JointQKVAttentionBridge
    from transformer_lens.model_bridge.generalized_components.joint_qkv_position_embeddings_attention import (
        JointQKVPositionEmbeddingsAttentionBridge,
    )
    from transformer_lens.model_bridge.generalized_components.position_embeddings_attention import (
        PositionEmbeddingsAttentionBridge,
    )

    if type(attn) in (JointQKVAttentionBridge, JointQKVPositionEmbeddingsAttentionBridge):
        _set(attn, _ATTRIBUTE, (state, layer))
        _set(attn, "_reconstruct_attention", types.MethodType(_joint_qkv_attention, attn))
        return 1
    if type(attn) is PositionEmbeddingsAttentionBridge and _plain_rotary(attn):
        _set(attn, _ATTRIBUTE, (state, layer))
        _set(attn, "forward", types.MethodType(_rotary_forward, attn))
        return 1
    native = getattr(attn, "original_component", None)
    if type(attn) is AttentionBridge and type(native).__name__ == "NativeAttention":
        _set(native, _ATTRIBUTE, (state, layer, attn))
        _set(native, "forward", types.MethodType(_native_forward, native))
        return 1
    return 0


def patterns_observed(attn: Any) -> bool:
    """True when a hook on ``hook_attn_scores`` or ``hook_pattern`` of this attention bridge is active."""
    for name in ("hook_attn_scores", "hook_pattern"):
        point = getattr(attn, name, None)
        if point is not None and (point._forward_hooks or point._forward_pre_hooks or point._backward_hooks):
            return True
    return False


def _dropout_active(attn: Any, names: tuple[str, ...] = ("attn_dropout", "attention_dropout")) -> bool:
    if not attn.training:
        return False
    hf = attn.original_component
    for name in names:
        dropout = getattr(hf, name, None)
        if isinstance(dropout, torch.nn.Dropout) and dropout.p > 0:
            return True
        if isinstance(dropout, float) and dropout > 0:
            return True
    return False


def _cache_filled(attn: Any, kwargs: dict) -> bool:
    cache = kwargs.get("past_key_values")
    if cache is None:
        cache = kwargs.get("layer_past")
    if cache is None:
        return False
    layer = getattr(attn, "_layer_idx", None)
    try:
        return cache.get_seq_length(layer or 0) > 0
    except (AttributeError, TypeError, IndexError):
        return True


def _same_kind(q: Tensor, k: Tensor, v: Tensor) -> bool:
    return q.dtype == k.dtype == v.dtype and q.device == k.device == v.device and q.shape[1] % k.shape[1] == 0


def _joint_qkv_attention(self: Any, q: Tensor, k: Tensor, v: Tensor, **kwargs: Any) -> tuple:
    """``JointQKVAttentionBridge._reconstruct_attention`` through the fused kernel (GPT-2, GPT-NeoX)."""
    from transformer_lens.model_bridge.generalized_components.joint_qkv_position_embeddings_attention import (
        JointQKVPositionEmbeddingsAttentionBridge,
    )

    state, layer = vars(self)[_ATTRIBUTE]
    eager = type(self)._reconstruct_attention
    cfg = self.config
    if (
        kwargs.get("attention_mask") is not None
        or state.windowed(layer, q.shape[1])
        or patterns_observed(self)
        or getattr(self, "_reorder_and_upcast_attn", False)
        or bool(getattr(cfg, "use_attn_result", False))
        or _dropout_active(self)
        or _cache_filled(self, kwargs)
        or not self.is_causal
        or getattr(self, "is_cross_attention", False)
    ):
        return eager(self, q, k, v, **kwargs)
    num_heads = cfg.n_heads
    num_kv_heads = getattr(cfg, "n_key_value_heads", None) or num_heads
    q, k, v, batch_size, seq_len, head_dim = self._reshape_qkv_to_heads(q, k, v, num_heads, num_kv_heads)
    rotary = isinstance(self, JointQKVPositionEmbeddingsAttentionBridge)
    if rotary:
        position_embeddings = kwargs.get("position_embeddings")
        if position_embeddings is not None and isinstance(position_embeddings, tuple):
            cos, sin = self._apply_position_embedding_hooks(position_embeddings)
            q, k = self._apply_rotary_pos_emb(q, k, cos, sin)
    k, v = self._update_kv_cache(k, v, **kwargs)
    scale = head_dim ** (-0.5)
    if not rotary and getattr(cfg, "scale_attn_by_inverse_layer_idx", False) and self._layer_idx is not None:
        scale /= float(self._layer_idx + 1)
    if not _same_kind(q, k, v):
        k, v = k.to(q.dtype), v.to(q.dtype)
    out = state.attend(layer, q, k, v, scale)
    out = self._reshape_attn_output(out, batch_size, seq_len, num_heads, head_dim)
    return (self._apply_output_projection(out), None)


def _plain_rotary(attn: Any) -> bool:
    """Whether a position-embedding bridge is plain rotary attention (Llama-like) that the kernel reproduces."""
    hf = attn.original_component
    cfg = attn.config
    hf_cfg = getattr(hf, "config", None)
    rope = getattr(hf_cfg, "rope_parameters", None)
    return not (
        hf is None
        or getattr(cfg, "gated_q_proj", False)
        or getattr(hf, "key_multiplier", None) is not None
        or "q_norm" in attn.submodules
        or "k_norm" in attn.submodules
        or getattr(hf_cfg, "clip_qkv", None) is not None
        or getattr(cfg, "rotary_interleaved_cos_sin", False)
        or getattr(cfg, "rotary_adjacent_pairs", False)
        or (isinstance(rope, dict) and rope.get("llama_4_scaling_beta") is not None)
        or getattr(hf, "attn_logit_softcapping", None) is not None
        or getattr(hf, "sinks", None) is not None
        or attn._modules.get("gate") is not None
        or not hasattr(hf, "head_dim")
    )


def _rotary_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
    """``PositionEmbeddingsAttentionBridge.forward`` for plain rotary attention, through the fused kernel.

    The hook calls are those of the bridge's own forward, in its order; everything else runs the bridge's forward.
    """
    from transformer_lens.utilities.hf_utils import get_rotary_pct_from_config
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    state, layer = vars(self)[_ATTRIBUTE]
    cfg = self.config
    hidden = kwargs.get("hidden_states", args[0] if args else None)
    if (
        kwargs.get("attention_mask") is not None
        or not isinstance(hidden, Tensor)
        or state.windowed(layer, hidden.shape[-2])
        or kwargs.get("position_embeddings") is None
        or patterns_observed(self)
        or bool(getattr(cfg, "use_split_qkv_input", False))
        or bool(getattr(cfg, "use_attn_in", False))
        or bool(getattr(cfg, "use_attn_result", False))
        or _dropout_active(self)
        or _cache_filled(self, kwargs)
        or not self.is_causal
        or getattr(self, "is_cross_attention", False)
    ):
        return type(self).forward(self, *args, **kwargs)
    hf_attn = self.original_component
    if "hidden_states" in kwargs:
        hidden_states = kwargs.pop("hidden_states")
    else:
        hidden_states, args = args[0], args[1:]
    position_embeddings = kwargs.pop("position_embeddings")
    kwargs.pop("attention_mask", None)
    hidden_states = self.hook_in(hidden_states)
    input_shape = hidden_states.shape[:-1]
    head_dim = hf_attn.head_dim
    hidden_shape = (*input_shape, -1, head_dim)
    query = self.q(hidden_states).view(hidden_shape).transpose(1, 2)
    key = self.k(hidden_states).view(hidden_shape).transpose(1, 2)
    value = self.v(hidden_states).view(hidden_shape).transpose(1, 2)
    cos, sin = self._apply_position_embedding_hooks(position_embeddings)
    rotary_dim = cos.shape[-1]
    if rotary_dim * 2 == head_dim and get_rotary_pct_from_config(cfg) == 1.0:
        cos, sin = torch.cat([cos, cos], dim=-1), torch.cat([sin, sin], dim=-1)
        query, key = apply_rotary_pos_emb(query, key, cos, sin)
    elif rotary_dim < head_dim:
        q_rot, k_rot = apply_rotary_pos_emb(query[..., :rotary_dim], key[..., :rotary_dim], cos, sin)
        query = torch.cat([q_rot, query[..., rotary_dim:]], dim=-1)
        key = torch.cat([k_rot, key[..., rotary_dim:]], dim=-1)
    else:
        query, key = apply_rotary_pos_emb(query, key, cos, sin)
    if hasattr(self, "hook_rot_q"):
        query = self.hook_rot_q(query)
    if hasattr(self, "hook_rot_k"):
        key = self.hook_rot_k(key)
    key, value = self._update_kv_cache(key, value, **kwargs)
    if not _same_kind(query, key, value):
        key, value = key.to(query.dtype), value.to(query.dtype)
    out = state.attend(layer, query, key, value, getattr(hf_attn, "scaling", head_dim**-0.5))
    out = out.transpose(1, 2).contiguous().reshape(*input_shape, -1)
    out = self._pre_output_projection(out)
    o_weight = getattr(getattr(getattr(self, "o", None), "original_component", None), "weight", None)
    if isinstance(o_weight, torch.Tensor) and o_weight.dtype.is_floating_point and out.dtype != o_weight.dtype:
        out = out.to(dtype=o_weight.dtype)
    return self.hook_out(self.o(out)), None


def _native_forward(self: Any, hidden_states: Tensor, attention_mask: Tensor | None = None,
                    position_ids: Tensor | None = None, pattern_fn: Callable | None = None, **kwargs: Any) -> Any:
    """The native attention module's forward through the fused kernel (no pattern: the bridge fires none)."""
    state, layer, bridge = vars(self)[_ATTRIBUTE]
    if (attention_mask is not None or not self.causal or self.attn_scores_soft_cap > 0
            or patterns_observed(bridge)):
        return type(self).forward(self, hidden_states, attention_mask=attention_mask, position_ids=position_ids,
                                  pattern_fn=pattern_fn, **kwargs)
    batch, seq, _ = hidden_states.shape
    q = self.q(hidden_states).view(batch, seq, self.n_heads, self.d_head).transpose(1, 2)
    k = self.k(hidden_states).view(batch, seq, self.n_kv_heads, self.d_head).transpose(1, 2)
    v = self.v(hidden_states).view(batch, seq, self.n_kv_heads, self.d_head).transpose(1, 2)
    if self.rotary is not None:
        q, k = self.rotary.apply_rope(q, k, position_ids=position_ids)
    if not _same_kind(q, k, v):
        k, v = k.to(q.dtype), v.to(q.dtype)
    out = state.attend(layer, q, k, v, 1.0 / self.scale)
    return self.o(out.transpose(1, 2).contiguous().view(batch, seq, -1)), None
