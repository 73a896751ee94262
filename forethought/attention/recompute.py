"""Recompute a layer's attention from its hooked q, k, v with a chosen view of the past.

This is the machinery behind :func:`~forethought.myopic_training.myopic` and
:func:`~forethought.attention.ablation.ablate_past`. Each attention layer's ``hook_q``, ``hook_k``, ``hook_v`` (and,
for rotary models, ``hook_cos``/``hook_sin``; for layers with query/key norms, ``hook_q_normed``/``hook_k_normed``;
and the projection inputs ``k.hook_in``/``v.hook_in``) are captured during the forward; at ``hook_z`` (the input
of the output projection) the attention output is recomputed with each query ``t`` seeing its own key/value
``k_t, v_t`` and a *past* key/value ``k_i, v_i`` (``i < t``) chosen by the caller: detached, recomputed from a
detached input, zero, a mean, ...

What the families of current studies add is recomputed exactly (:class:`Geometry`): query/key norms (Qwen3,
OLMo-2, Gemma-3: the bridge's ``hook_k`` is the projection *before* the norm, so the normalised hooks are read, and a
key recomputed from a detached input goes through the layer's own norm), sliding windows (Mistral, Gemma-2/3: a
banded causal mask, HF's rule ``t - window < i <= t``), soft-capped scores (Gemma-2: ``cap * tanh(s / cap)`` before
the mask) and the HF module's score scale (Gemma's ``query_pre_attn_scalar``).

Only hook points that fire and take edits on every supported backend are used (``hook_attn_scores`` edits are
discarded on ``boot_native`` models), and every recomputation is checked against the model's own output, so a
backend whose attention differs (dropout, ALiBi, attention sinks, norms after rotary, another rotary layout, a
native model's soft cap) raises :class:`~forethought.errors.UnsupportedArchitectureError`, naming the feature where
it is recognised, instead of silently giving wrong gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from forethought.errors import UnsupportedArchitectureError

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

#: Hooks captured per layer (relative to ``blocks.{layer}.attn.``).
QKV_HOOKS = ("hook_q", "hook_k", "hook_v")
ROTARY_HOOKS = ("hook_cos", "hook_sin")
#: The normalised query and key, on layers with query/key norms (captured where the hooks exist).
NORM_HOOKS = ("hook_q_normed", "hook_k_normed")
INPUT_HOOKS = ("k.hook_in", "v.hook_in")


@dataclass
class LayerCapture:
    """Tensors captured from one attention layer during the current forward pass."""

    tensors: dict[str, Tensor] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Tensor:
        if name not in self.tensors:
            raise UnsupportedArchitectureError(
                f"attention hook {name!r} did not fire on this model; forethought cannot recompute its attention"
            )
        return self.tensors[name]


@dataclass
class Geometry:
    """What is needed to recompute attention scores from hooked q and k.

    ``window``: the layer's sliding window (query ``t`` sees keys ``t - window < i <= t``), None for full causal
    attention. ``softcap``: scores become ``softcap * tanh(scores / softcap)`` before the mask and softmax (Gemma-2).
    ``qk_norm``: where the layer normalises queries and keys, per position and before rotary: ``"pre_reshape"``
    (over the whole projection, OLMo-2), ``"post_reshape"`` (over each head, Qwen3, Gemma-3), or None; the hooked
    ``hook_q_normed``/``hook_k_normed`` are then the query and key the scores are made of.
    """

    n_heads: int
    n_kv_heads: int
    d_head: int
    scale: float
    rotary: bool
    architecture: str
    window: int | None = None
    softcap: float | None = None
    qk_norm: str | None = None

    def fusable(self, seq_len: int) -> bool:
        """Whether plain causal attention (a fused kernel) computes this layer for ``seq_len`` positions.

        A sliding window at least as long as the sequence masks nothing beyond the causal mask.
        """
        return self.softcap is None and (self.window is None or self.window >= seq_len)


def geometry(model: TransformerBridge, layer: int) -> Geometry:
    """Read the attention geometry of ``layer`` from the model config; refuse what cannot be recomputed."""
    cfg = model.cfg
    architecture = str(getattr(cfg, "architecture", None) or type(model).__name__)
    positional = getattr(cfg, "positional_embedding_type", "standard")
    if positional not in ("standard", "rotary"):
        raise UnsupportedArchitectureError(
            f"{architecture} uses {positional!r} positional embeddings; forethought recomputes attention only for "
            "'standard' (learned/absolute) and HF 'rotary' models"
        )
    for flag in ("use_local_attn", "use_qk_norm"):
        if getattr(cfg, flag, False):
            raise UnsupportedArchitectureError(f"{architecture} sets {flag}; its attention cannot be recomputed")
    attn = model.blocks[layer].attn
    hf_attn = getattr(attn, "original_component", None)
    for feature, present in unsupported_features(attn, hf_attn, cfg).items():
        if present:
            raise UnsupportedArchitectureError(
                f"{architecture} uses {feature} in layer {layer}; forethought cannot recompute its attention exactly"
            )
    softcap = getattr(hf_attn, "attn_logit_softcapping", None)
    if softcap is None and getattr(cfg, "attn_scores_soft_cap", -1.0) > 0:  # native models: not reproduced
        raise UnsupportedArchitectureError(f"{architecture} soft-caps attention scores; it cannot be recomputed")
    attn_scale = getattr(cfg, "attn_scale", -1.0)
    scale = 1.0 / (attn_scale if attn_scale and attn_scale > 0 else math.sqrt(cfg.d_head))
    if not getattr(cfg, "use_attn_scale", True):
        scale = 1.0
    if getattr(cfg, "scale_attn_by_inverse_layer_idx", False):
        scale /= layer + 1
    hf_scale = getattr(hf_attn, "scaling", None)
    if isinstance(hf_scale, (int, float)) and _reads_hf_scaling(attn):  # Gemma's query_pre_attn_scalar, ...
        scale = float(hf_scale)
    return Geometry(
        n_heads=cfg.n_heads,
        n_kv_heads=getattr(cfg, "n_key_value_heads", None) or cfg.n_heads,
        d_head=cfg.d_head,
        scale=scale,
        rotary=positional == "rotary",
        architecture=architecture,
        window=sliding_window(model, layer),
        softcap=float(softcap) if softcap is not None else None,
        qk_norm=getattr(attn, "_qk_norm_phase", None),
    )


def unsupported_features(attn: Any, hf_attn: Any, cfg: Any) -> dict[str, bool]:
    """Attention features forethought does not recompute, each with whether layer ``attn`` has it."""
    hf_cfg = getattr(hf_attn, "config", None)
    return {
        "query/key norms after rotary": bool(getattr(cfg, "qk_norm_after_rope", False)),
        "a per-head query/key norm weight": bool(getattr(attn, "_qk_norm_per_head", False)),
        "a gated query projection": bool(getattr(cfg, "gated_q_proj", False)),
        "attention sinks": getattr(hf_attn, "sinks", None) is not None,
        "a learned key multiplier": getattr(hf_attn, "key_multiplier", None) is not None,
        "clipped q/k/v": getattr(hf_cfg, "clip_qkv", None) is not None,
        "interleaved rotary pairs": bool(getattr(cfg, "rotary_interleaved_cos_sin", False)
                                         or getattr(cfg, "rotary_adjacent_pairs", False)),
    }


def _reads_hf_scaling(attn: Any) -> bool:
    """Whether the bridge's attention multiplies its scores by the HF module's ``scaling`` (rotary bridges do)."""
    from transformer_lens.model_bridge.generalized_components.position_embeddings_attention import (
        PositionEmbeddingsAttentionBridge,
    )

    return isinstance(attn, PositionEmbeddingsAttentionBridge)


def sliding_window(model: TransformerBridge, layer: int) -> int | None:
    """The sliding window of ``layer`` from the HF config (None: full causal attention, or a native model).

    HF's rule: with ``layer_types``, a layer typed ``"sliding_attention"`` has the config's ``sliding_window``; without
    it (Mistral, Phi-3), every layer has it when it is set.
    """
    hf_config = getattr(getattr(model, "original_model", None), "config", None)
    hf_config = getattr(hf_config, "text_config", None) or hf_config
    window = getattr(hf_config, "sliding_window", None)
    if not isinstance(window, int) or window <= 0 or getattr(hf_config, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(hf_config, "layer_types", None)
    if layer_types is not None and layer < len(layer_types) and layer_types[layer] != "sliding_attention":
        return None
    return window


def capture_hooks(model: TransformerBridge, layers: list[int], captures: dict[int, LayerCapture],
                  with_inputs: bool) -> list[tuple[str, Callable]]:
    """Forward hooks that store each layer's q, k, v (and cos/sin, projection inputs) in ``captures``."""
    names = [*QKV_HOOKS, *ROTARY_HOOKS, *NORM_HOOKS, *(INPUT_HOOKS if with_inputs else ())]
    hook_dict = model.hook_dict  # a bridge rebuilds it on every access
    hooks = []
    for layer in layers:
        for name in names:
            full = f"blocks.{layer}.attn.{name}"
            if full not in hook_dict:
                if name in ROTARY_HOOKS or name in NORM_HOOKS:
                    continue
                raise UnsupportedArchitectureError(
                    f"{type(model).__name__} has no hook {full!r}; forethought cannot recompute its attention"
                )
            hooks.append((full, _store(captures[layer], name)))
    return hooks


def _store(capture: LayerCapture, name: str) -> Callable:
    def hook(tensor: Tensor, hook: Any) -> None:
        capture.tensors[name] = tensor

    return hook


def heads(tensor: Tensor, n_heads: int, d_head: int) -> Float[Tensor, "batch pos head d_head"]:
    """``[batch, pos, n * d_head]`` or ``[batch, pos, n, d_head]`` → ``[batch, pos, n, d_head]``."""
    if tensor.ndim == 3:
        tensor = tensor.unflatten(-1, (n_heads, d_head))
    return tensor


def rotate(x: Float[Tensor, "batch pos head d_head"], capture: LayerCapture) -> Tensor:
    """Apply the layer's rotary embedding (HF layout: rotate-half on the first ``rotary_dim`` features)."""
    cos, sin = capture["hook_cos"], capture["hook_sin"]
    if cos.ndim == 3:
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # [batch or 1, pos, 1, rotary_dim]
    rotary_dim = cos.shape[-1]
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    half = rotary_dim // 2
    rotated_half = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
    return torch.cat((x_rot * cos.to(x.dtype) + rotated_half * sin.to(x.dtype), x_pass), dim=-1)


def expand_kv(x: Float[Tensor, "batch pos kv_head d_head"], n_heads: int) -> Float[Tensor, "batch pos head d_head"]:
    """Repeat grouped key/value heads so that head ``h`` uses kv head ``h // (n_heads // n_kv_heads)``."""
    if x.shape[2] == n_heads:
        return x
    return x.repeat_interleave(n_heads // x.shape[2], dim=2)


def attend(
    q: Float[Tensor, "batch pos head d_head"],
    k_self: Float[Tensor, "batch pos head d_head"],
    v_self: Float[Tensor, "batch pos head d_head"],
    k_past: Float[Tensor, "batch pos head d_head"],
    v_past: Float[Tensor, "batch pos head d_head"],
    scale: float,
    window: int | None = None,
    softcap: float | None = None,
) -> Float[Tensor, "batch pos head d_head"]:
    """Causal attention in which each query reads its own key/value from one tensor and earlier ones from another.

    Query ``t`` sees ``k_self[t], v_self[t]`` for itself and ``k_past[i], v_past[i]`` for every earlier ``i``
    (only ``i > t - window`` with a sliding ``window``). Scores are soft-capped, ``softcap * tanh(s / softcap)``,
    before the mask when ``softcap`` is given. With ``k_past is k_self`` and ``v_past is v_self`` it is ordinary
    attention.
    """
    q, k_self, v_self, k_past, v_past = (x.transpose(1, 2) for x in (q, k_self, v_self, k_past, v_past))
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k_past) * scale
    own = (q * k_self).sum(-1) * scale  # [batch, head, pos]
    n = q.shape[2]
    eye = torch.eye(n, dtype=torch.bool, device=q.device)
    future = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)
    if window is not None and window < n:  # keys at i <= t - window fall outside query t's window
        future = future | torch.ones(n, n, dtype=torch.bool, device=q.device).tril(-window)
    scores = torch.where(eye, own.unsqueeze(-1), scores)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(future, float("-inf"))
    wide = torch.float64 if q.dtype == torch.float64 else torch.float32  # the wider of float32 and q's dtype
    pattern = scores.to(wide).softmax(dim=-1).to(q.dtype)
    own_weight = pattern.diagonal(dim1=-2, dim2=-1).unsqueeze(-1)  # [batch, head, pos, 1]
    out = pattern @ v_past + own_weight * (v_self - v_past)
    return out.transpose(1, 2)


def check_matches(recomputed: Tensor, actual: Tensor, layer: int, geo: Geometry, what: str) -> None:
    """Raise unless the recomputed attention output equals the model's own (up to rounding)."""
    full_precision = actual.dtype in (torch.float32, torch.float64) and not _autocast_enabled()
    tolerance = 1e-4 if full_precision else 3e-2
    error = (recomputed.detach().float() - actual.detach().float()).abs().max().item()
    size = actual.detach().float().abs().max().item()
    if not error <= tolerance * (1.0 + size):
        raise UnsupportedArchitectureError(
            f"cannot guarantee {what} on {geo.architecture}: layer {layer}'s recomputed attention differs from the "
            f"model's by {error:.2e} (active attention dropout? call model.eval() or set dropout to 0; otherwise the "
            f"attention uses scaling/masking forethought does not reproduce; it assumed {_assumed(geo)})"
        )


def _assumed(geo: Geometry) -> str:
    """The geometry a recomputation used, in words (for error messages)."""
    parts = [f"scale {geo.scale:.4g}", "rotary" if geo.rotary else "no rotary",
             f"window {geo.window}" if geo.window else "no window",
             f"soft cap {geo.softcap:g}" if geo.softcap else "no soft cap",
             f"{geo.qk_norm} q/k norm" if geo.qk_norm else "no q/k norm"]
    return ", ".join(parts)


def _autocast_enabled() -> bool:
    """Under autocast the model's own attention ran in lower precision, even where its output is float32."""
    return any(torch.is_autocast_enabled(device) for device in ("cpu", "cuda"))


def attention_dropout_active(model: TransformerBridge, layer: int) -> bool:
    """True when an attention dropout module of ``layer`` would drop anything in the current mode."""
    if not model.training:
        return False
    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.blocks[layer].attn.modules())


class RecomputedAttention(AbstractContextManager):
    """Hooks that replace each chosen layer's ``hook_z`` with ``make_z(layer, capture, z)``.

    ``make_z`` receives the layer's captured tensors and the model's own z (``[batch, pos, head, d_head]``) and
    returns the replacement. Hooks are removed on exit, also when the body raises.
    """

    def __init__(self, model: TransformerBridge, layers: list[int],
                 make_z: Callable[[int, LayerCapture, Tensor], Tensor],
                 with_inputs: bool = False):
        self.model = model
        self.layers = layers
        self.make_z = make_z
        self.with_inputs = with_inputs
        self.captures = {layer: LayerCapture() for layer in layers}
        self._context: Any = None

    def __enter__(self) -> RecomputedAttention:
        hooks = capture_hooks(self.model, self.layers, self.captures, self.with_inputs)
        hook_dict = self.model.hook_dict
        for layer in self.layers:
            name = f"blocks.{layer}.attn.hook_z"
            if name not in hook_dict:
                raise UnsupportedArchitectureError(f"{type(self.model).__name__} has no hook {name!r}")
            hooks.append((name, self._replace_z(layer)))
        self._context = self.model.hooks(fwd_hooks=hooks)
        self._context.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        for capture in self.captures.values():
            capture.tensors.clear()
        self._context.__exit__(*exc)

    def _replace_z(self, layer: int) -> Callable:
        geo = geometry(self.model, layer)

        def hook(z: Tensor, hook: Any) -> Tensor:
            capture = self.captures[layer]
            shape = z.shape
            z_heads = heads(z, geo.n_heads, geo.d_head)
            try:
                new = self.make_z(layer, capture, z_heads)
            finally:
                capture.tensors.clear()
            return new.reshape(shape)

        return hook


def qkv(capture: LayerCapture, geo: Geometry) -> tuple[Tensor, Tensor, Tensor]:
    """The layer's live query (rotated), key (rotated, kv heads) and value (kv heads), ``[batch, pos, head, d]``."""
    if geo.qk_norm is not None:
        q = normed_heads(capture["hook_q_normed"], geo.qk_norm, geo.n_heads, geo.d_head)
        k = normed_heads(capture["hook_k_normed"], geo.qk_norm, geo.n_kv_heads, geo.d_head)
    else:
        q = heads(capture["hook_q"], geo.n_heads, geo.d_head)
        k = heads(capture["hook_k"], geo.n_kv_heads, geo.d_head)
    v = heads(capture["hook_v"], geo.n_kv_heads, geo.d_head)
    if geo.rotary:
        q, k = rotate(q, capture), rotate(k, capture)
    return q, k, v


def normed_heads(tensor: Tensor, phase: str, n_heads: int, d_head: int) -> Float[Tensor, "batch pos head d_head"]:
    """A ``hook_q_normed``/``hook_k_normed`` tensor as ``[batch, pos, head, d_head]``.

    The bridge fires them on ``[batch, pos, head * d_head]`` for a norm over the whole projection (``"pre_reshape"``,
    OLMo-2) and on ``[batch, head, pos, d_head]`` for a norm over each head (``"post_reshape"``, Qwen3, Gemma-3).
    """
    if phase == "pre_reshape":
        return heads(tensor, n_heads, d_head)
    return tensor.transpose(1, 2)


def apply_qk_norm(attn: Any, name: str, projected: Tensor, geo: Geometry, n_heads: int) -> Tensor:
    """Heads ``[batch, pos, head, d_head]`` of a q or k projection output, through the layer's own norm ``name``.

    The HF norm module runs (live weights), on the layout the bridge gives it: the flat projection for
    ``"pre_reshape"``, each head's features for ``"post_reshape"``.
    """
    norm = getattr(getattr(attn, name, None), "original_component", None)
    if not callable(norm):
        raise UnsupportedArchitectureError(f"{geo.architecture} has no module {name!r} to normalise with")
    if geo.qk_norm == "pre_reshape":
        return heads(norm(projected), n_heads, geo.d_head)
    return norm(heads(projected, n_heads, geo.d_head))


@contextmanager
def installed(hooks: RecomputedAttention, model: TransformerBridge) -> Iterator[Any]:
    """Hold ``hooks`` on the model inside the ``with`` block and give the block the model.

    The arguments were checked when the context manager was made, not when it is entered.
    """
    with hooks:
        yield model
