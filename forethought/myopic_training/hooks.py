"""The myopic gradient, as a context manager of TransformerLens hooks.

``myopic(model, mode, beta)`` leaves every forward value bit-for-bit unchanged and makes the gradient of the
loss at position ``t`` reach only what position ``t`` computes itself:

* ``"strict"``: in every layer, query ``t`` sees the keys and values of positions ``i < t`` as constants;
* ``"cutgrad"``: query ``t`` sees past keys/values recomputed from the *detached* attention input with the live
  ``W_K, W_V`` (the weights learn through the past, the past's hidden states do not);
* ``beta``: past keys/values are ``(1 - beta) * myopic + beta * live`` (``beta=1`` is vanilla).

Where forethought's attention kernel is installed (:mod:`forethought.attention.sdpa`, the default), the kernel
itself computes each layer's attention once, myopically: fused attention over the past keys and values (equal in
value to the live ones, so the forward is the vanilla one bit for bit) plus the O(T) diagonal correction of
:func:`~forethought.attention.fused.fused_attention`. Elsewhere (eager models, layers whose patterns are hooked,
``attention="eager"``) it works by replacing each attention output ``z`` with ``z.detach() + (r - r.detach())``,
where ``r`` is the attention recomputed from the hooked q, k, v with the myopic view of the past: the value is the
model's own ``z``, the gradient is ``r``'s. ``r`` comes from fused attention with a diagonal gradient correction
(:func:`~forethought.attention.fused.fused_attend`, O(T) extra memory) or, as the reference and where that
cannot run, from the eager ``[T, T]`` softmax of :func:`~forethought.attention.recompute.attend`. The same
recomputation, with another view of the past, is :func:`~forethought.attention.ablation.ablate_past`.

Example:
    >>> import torch
    >>> from forethought.models import tiny_model
    >>> model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
    >>> tokens = torch.randint(0, 20, (2, 8))
    >>> with myopic(model, mode="strict"):
    ...     loss = model(tokens, return_type="loss")
    ...     loss.backward()
    >>> torch.equal(loss.detach(), model(tokens, return_type="loss").detach())
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, Literal

from torch import Tensor

from forethought.attention.fused import fused_attend, fused_attention, fused_supported
from forethought.attention.recompute import (
    LayerCapture,
    RecomputedAttention,
    apply_qk_norm,
    attend,
    attention_dropout_active,
    check_matches,
    expand_kv,
    geometry,
    heads,
    qkv,
    rotate,
)
from forethought.attention.sdpa import kernel_view
from forethought.errors import InvalidArgumentError, UnsupportedArchitectureError, check_choice
from forethought.options import MODES

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

#: How :func:`myopic` recomputes attention for the gradient.
ATTENTION = ("auto", "fused", "eager")


def myopic(model: TransformerBridge, mode: Literal["strict", "cutgrad"] = "strict", beta: float = 0.0,
           attention: Literal["auto", "fused", "eager"] = "auto") -> AbstractContextManager[Any]:
    """Make gradients myopic inside the ``with`` block; forward values stay exactly those of the model.

    Args:
        model: a ``TransformerBridge`` (``boot_native``, or HF-backed GPT-2, GPT-NeoX, Llama, Qwen2, Qwen3, Gemma-2,
            Gemma-3, Mistral, OLMo-2, Phi-3). With query/key norms, ``"strict"`` holds the past's *normalised*
            keys constant (the norm's gain, like ``W_K``, does not learn through the past); ``"cutgrad"`` recomputes
            them through the live norm. Layers with a sliding window shorter than the sequence, or soft-capped
            scores, take the eager recomputation.
        mode: ``"strict"`` (past keys/values are constants) or ``"cutgrad"`` (past attention inputs are
            constants; ``W_K, W_V`` still learn through the past).
        beta: interpolation towards the vanilla gradient, in ``[0, 1]``.
        attention: how the attention is recomputed for the gradient: ``"fused"`` (scaled-dot-product attention
            plus a diagonal correction, O(T) extra memory), ``"eager"`` (a ``[T, T]`` softmax, the reference),
            or ``"auto"``: fused wherever it can run (matching dtypes and devices, plain causal attention), eager
            otherwise.

    Raises:
        UnsupportedArchitectureError: the model's attention cannot be recomputed exactly (checked on every
            forward), attention dropout is active in training mode, or ``attention="fused"`` cannot run.
    """
    check_choice("mode", mode, MODES)
    check_choice("attention", attention, ATTENTION)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta <= 1.0:
        raise InvalidArgumentError(f"beta={beta!r} is not allowed; expected a number in [0, 1]")
    layers = list(range(model.cfg.n_layers))
    geometries = {layer: geometry(model, layer) for layer in layers}

    recompute = RecomputedAttention(model, layers, lambda layer, capture, z: make_z(layer, capture, z),
                                    with_inputs=mode == "cutgrad")

    def past_view(layer: int, capture: LayerCapture, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Past keys/values ``[batch, kv_head, pos, d]`` with the gradient of the mode's view of the past.

        They equal the live ``k, v`` in value, so the forward stays the vanilla one bit for bit.
        """
        k_past, v_past = k.detach(), v.detach()
        if mode == "cutgrad":  # the gradient of keys/values recomputed from the detached projection input
            k_cut, v_cut = (x.transpose(1, 2) for x in _from_detached_input(model, layer, capture, geometries[layer]))
            k_past = k_past + (1 - beta) * (k_cut - k_cut.detach())
            v_past = v_past + (1 - beta) * (v_cut - v_cut.detach())
        if beta:
            k_past, v_past = k_past + beta * (k - k.detach()), v_past + beta * (v - v.detach())
        return k_past, v_past

    def kernel(layer: int, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor | None:
        """The installed kernel's myopic attention for ``layer`` (None: leave it to the ``hook_z`` route)."""
        if (attention == "eager" or not fused_supported(*(x.transpose(1, 2) for x in (q, k, v)))
                or not geometries[layer].fusable(q.shape[2])):
            return None
        if attention_dropout_active(model, layer):
            raise UnsupportedArchitectureError(
                f"attention dropout is active in layer {layer}; myopic gradients need model.eval() or dropout 0"
            )
        capture = recompute.captures[layer]
        if geometries[layer].rotary:  # the same architectures as the hook_z route (rotary needs hook_cos/sin)
            capture["hook_cos"]
        k_past, v_past = past_view(layer, capture, k, v)
        return fused_attention(q, k, v, k_past, v_past, scale)

    def make_z(layer: int, capture: LayerCapture, z: Tensor) -> Tensor:
        if state is not None and state.take(layer):  # the kernel computed this layer's attention myopically
            return z
        geo = geometries[layer]
        if attention_dropout_active(model, layer):
            raise UnsupportedArchitectureError(
                f"attention dropout is active in layer {layer}; myopic gradients need model.eval() or dropout 0"
            )
        q, k, v = qkv(capture, geo)
        if mode == "strict":
            k_past, v_past = k.detach(), v.detach()
        else:
            k_past, v_past = _from_detached_input(model, layer, capture, geo)
        if beta:
            k_past, v_past = (1 - beta) * k_past + beta * k, (1 - beta) * v_past + beta * v
        fused = attention != "eager" and fused_supported(q, k_past, v_past) and geo.fusable(q.shape[1])
        if attention == "fused" and not fused:
            raise UnsupportedArchitectureError(
                f"attention='fused' cannot run layer {layer} of {geo.architecture} (q {q.dtype} on {q.device}, "
                f"k {k_past.dtype} on {k_past.device}, sliding window {geo.window}, soft cap {geo.softcap}, "
                f"{q.shape[1]} positions); use attention='auto' or 'eager'"
            )
        if fused:  # own and past keys/values are equal in value: the fused path applies
            recomputed = fused_attend(q, k, v, k_past, v_past, geo.scale)
        else:
            k_self, v_self, k_past, v_past = (expand_kv(x, geo.n_heads) for x in (k, v, k_past, v_past))
            banded = {name: value for name, value in (("window", geo.window), ("softcap", geo.softcap)) if value}
            recomputed = attend(q, k_self, v_self, k_past, v_past, geo.scale, **banded)
        check_matches(recomputed, z, layer, geo, f"myopic gradients ({mode})")
        return z.detach() + (recomputed - recomputed.detach())

    state = None

    @contextmanager
    def context() -> Iterator[Any]:
        nonlocal state
        with kernel_view(model, kernel) as state, recompute:
            yield model

    return context()


def _from_detached_input(model: TransformerBridge, layer: int, capture: LayerCapture,
                         geo: Any) -> tuple[Tensor, Tensor]:
    """Keys and values recomputed from the detached projection inputs with the live projection weights."""
    attn = model.blocks[layer].attn
    projected = []
    for name in ("k", "v"):
        projection = getattr(getattr(attn, name, None), "_original_component", None)
        if not callable(projection):
            raise UnsupportedArchitectureError(
                f"{geo.architecture} has no separate {name} projection at blocks.{layer}.attn.{name}; "
                "use mode='strict'"
            )
        projected.append(projection(capture[f"{name}.hook_in"].detach()))
    k_past, v_past = (heads(x, geo.n_kv_heads, geo.d_head) for x in projected)
    if geo.qk_norm is not None:  # the key as attention reads it: through the layer's k norm, with its live weights
        k_past = apply_qk_norm(attn, "k_norm", projected[0], geo, geo.n_kv_heads)
    if geo.rotary:
        k_past = rotate(k_past, capture)
    return k_past, v_past
