"""Recompute a layer's attention from its hooked q, k, v with a chosen view of the past.

This is the machinery behind :func:`~forethought.myopic_training.myopic` and
:func:`~forethought.attention.ablation.ablate_past`. Each attention layer's ``hook_q``, ``hook_k``, ``hook_v`` (and,
for rotary models, ``hook_cos``/``hook_sin``, and the projection inputs ``k.hook_in``/``v.hook_in``) are
captured during the forward; at ``hook_z`` (the input of the output projection) the attention output is
recomputed with each query ``t`` seeing its own key/value ``k_t, v_t`` and a *past* key/value ``k_i, v_i``
(``i < t``) chosen by the caller: detached, recomputed from a detached input, zero, a mean, ...

Only hook points that fire and take edits on every supported backend are used (``hook_attn_scores`` edits are
discarded on ``boot_native`` models), and every recomputation is checked against the model's own output, so a
backend whose attention differs (dropout, soft-capping, ALiBi, sliding windows, another rotary layout) raises
:class:`~forethought.errors.UnsupportedArchitectureError` instead of silently giving wrong gradients.
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
    """What is needed to recompute attention scores from hooked q and k."""

    n_heads: int
    n_kv_heads: int
    d_head: int
    scale: float
    rotary: bool
    architecture: str


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
    if getattr(cfg, "attn_scores_soft_cap", -1.0) > 0:
        raise UnsupportedArchitectureError(f"{architecture} soft-caps attention scores; it cannot be recomputed")
    attn_scale = getattr(cfg, "attn_scale", -1.0)
    scale = 1.0 / (attn_scale if attn_scale and attn_scale > 0 else math.sqrt(cfg.d_head))
    if not getattr(cfg, "use_attn_scale", True):
        scale = 1.0
    if getattr(cfg, "scale_attn_by_inverse_layer_idx", False):
        scale /= layer + 1
    return Geometry(
        n_heads=cfg.n_heads,
        n_kv_heads=getattr(cfg, "n_key_value_heads", None) or cfg.n_heads,
        d_head=cfg.d_head,
        scale=scale,
        rotary=positional == "rotary",
        architecture=architecture,
    )


def capture_hooks(model: TransformerBridge, layers: list[int], captures: dict[int, LayerCapture],
                  with_inputs: bool) -> list[tuple[str, Callable]]:
    """Forward hooks that store each layer's q, k, v (and cos/sin, projection inputs) in ``captures``."""
    names = [*QKV_HOOKS, *ROTARY_HOOKS, *(INPUT_HOOKS if with_inputs else ())]
    hooks = []
    for layer in layers:
        for name in names:
            full = f"blocks.{layer}.attn.{name}"
            if full not in model.hook_dict:
                if name in ROTARY_HOOKS:
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
) -> Float[Tensor, "batch pos head d_head"]:
    """Causal attention in which each query reads its own key/value from one tensor and earlier ones from another.

    Query ``t`` sees ``k_self[t], v_self[t]`` for itself and ``k_past[i], v_past[i]`` for every earlier ``i``.
    With ``k_past is k_self`` and ``v_past is v_self`` it is ordinary attention.
    """
    q, k_self, v_self, k_past, v_past = (x.transpose(1, 2) for x in (q, k_self, v_self, k_past, v_past))
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k_past) * scale
    own = (q * k_self).sum(-1) * scale  # [batch, head, pos]
    n = q.shape[2]
    eye = torch.eye(n, dtype=torch.bool, device=q.device)
    future = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)
    scores = torch.where(eye, own.unsqueeze(-1), scores).masked_fill(future, float("-inf"))
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
            "attention uses scaling/masking forethought does not reproduce)"
        )


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
        for layer in self.layers:
            name = f"blocks.{layer}.attn.hook_z"
            if name not in self.model.hook_dict:
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
    q = heads(capture["hook_q"], geo.n_heads, geo.d_head)
    k = heads(capture["hook_k"], geo.n_kv_heads, geo.d_head)
    v = heads(capture["hook_v"], geo.n_kv_heads, geo.d_head)
    if geo.rotary:
        q, k = rotate(q, capture), rotate(k, capture)
    return q, k, v


@contextmanager
def installed(hooks: RecomputedAttention, model: TransformerBridge) -> Iterator[Any]:
    """Hold ``hooks`` on the model inside the ``with`` block and give the block the model.

    The arguments were checked when the context manager was made, not when it is entered.
    """
    with hooks:
        yield model
