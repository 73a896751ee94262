"""Myopic attention through fused scaled-dot-product attention: O(T) extra memory instead of ``[T, T]`` scores.

:func:`~forethought.attention.recompute.attend` builds the myopic attention from an eager ``[batch, head,
T, T]`` softmax. For :func:`~forethought.myopic_training.myopic` that is more than needed, because there the own
and the past keys and values of every position are equal *in value* (the past ones are detached, recomputed from
a detached input, or mixed with the live ones); only where gradients flow differs. The myopic gradient then has
this structure:

* the query gradient is the vanilla one (the scores do not depend on how the past is detached), and the past keys
  and values receive the vanilla gradient *minus* the diagonal term (query ``t`` reading position ``t``);
* position ``t``'s own key and value receive gradient only through that diagonal term.

The diagonal term needs only ``p_tt``, the weight each query gives to its own position, which the log-sum-exp of
the fused kernel yields in O(T·d): ``p_tt = exp(scale · q_t·k_t − lse_t)``. So :func:`fused_attend` runs one
fused causal attention over the past keys and values (its backward gives the query and the full key/value
gradients) and :class:`SplitDiagonal` moves the diagonal term from the past keys and values to the own ones.

Example:
    >>> import torch
    >>> from forethought.attention.recompute import attend
    >>> q, k, v = (torch.randn(1, 5, 2, 4, requires_grad=True) for _ in range(3))
    >>> fused = fused_attend(q, k, v, k.detach(), v.detach(), scale=0.5)
    >>> eager = attend(q, k, v, k.detach(), v.detach(), scale=0.5)
    >>> torch.allclose(fused, eager, atol=1e-6)
    True
    >>> grads = [torch.autograd.grad(out.sum(), (q, k, v)) for out in (fused, eager)]
    >>> all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*grads))
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

#: The CPU flash-attention kernel behind ``scaled_dot_product_attention``; it also returns the log-sum-exp.
_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
#: CUDA's flash-attention kernel (float16 and bfloat16); it returns the log-sum-exp with the output.
_CUDA_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention", None)
#: CUDA's memory-efficient attention kernel (float32 too); it returns the log-sum-exp when asked.
_CUDA_EFFICIENT = getattr(torch.ops.aten, "_scaled_dot_product_efficient_attention", None)
#: ``kernel(q, k, v, scale) -> (out, lse)``: causal attention and its raw log-sum-exp from one fused call.
Kernel = Callable[[Tensor, Tensor, Tensor, float], tuple[Tensor, Tensor]]
#: (device type, index, dtype, d_head) → the CUDA kernel :func:`_cuda_kernel` chose there (None: none agreed).
_CUDA_KERNELS: dict[tuple[str, int | None, torch.dtype, int], Kernel | None] = {}


def fused_supported(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether :func:`fused_attend` can compute this attention (same dtype and device, whole kv-head groups)."""
    return (
        q.dtype == k.dtype == v.dtype
        and q.device == k.device == v.device
        and q.shape[-1] == k.shape[-1] == v.shape[-1]
        and k.shape[2] == v.shape[2]
        and q.shape[2] % k.shape[2] == 0
    )


def fused_attend(
    q: Float[Tensor, "batch pos head d_head"],
    k_self: Float[Tensor, "batch pos kv_head d_head"],
    v_self: Float[Tensor, "batch pos kv_head d_head"],
    k_past: Float[Tensor, "batch pos kv_head d_head"],
    v_past: Float[Tensor, "batch pos kv_head d_head"],
    scale: float,
) -> Float[Tensor, "batch pos head d_head"]:
    """Causal attention with the gradient of :func:`~forethought.attention.recompute.attend`.

    It is right when ``k_self == k_past`` and ``v_self == v_past`` in value (only their gradients differ).
    Query ``t`` reads ``k_past[i], v_past[i]`` at ``i < t`` and ``k_self[t], v_self[t]`` at ``t``. Key/value
    heads may be grouped (``head = kv_head * group``, head ``h`` reading kv head ``h // group``); they are never
    expanded. The values are those of fused attention over ``k_past, v_past``; with ``k_self`` differing from
    ``k_past`` in value the gradient would be wrong, so use ``attend`` there.
    """
    out = fused_attention(*(x.transpose(1, 2) for x in (q, k_self, v_self, k_past, v_past)), scale=scale)
    return out.transpose(1, 2)


def fused_attention(
    q: Float[Tensor, "batch head pos d_head"],
    k_self: Float[Tensor, "batch kv_head pos d_head"],
    v_self: Float[Tensor, "batch kv_head pos d_head"],
    k_past: Float[Tensor, "batch kv_head pos d_head"],
    v_past: Float[Tensor, "batch kv_head pos d_head"],
    scale: float,
) -> Float[Tensor, "batch head pos d_head"]:
    """:func:`fused_attend` in the kernels' head-major layout.

    One fused attention call over the past keys and values plus the O(T) diagonal correction (:class:`SplitDiagonal`).
    """
    out, lse = attention_with_lse(q, k_past, v_past, scale=scale)
    return SplitDiagonal.apply(out, q, k_self, v_self, k_past, v_past, lse, scale)


def causal_attention(
    q: Float[Tensor, "batch head pos d_head"],
    k: Float[Tensor, "batch kv_head pos d_head"],
    v: Float[Tensor, "batch kv_head pos d_head"],
    scale: float,
) -> Float[Tensor, "batch head pos d_head"]:
    """Causal attention through the same fused kernel as :func:`attention_with_lse`; kv heads may be grouped.

    Using the same kernel makes a vanilla forward and a myopic one equal bit for bit. Where no checked CUDA kernel
    runs, grouped kv heads are expanded first on CUDA, as Hugging Face's SDPA attention does (``enable_gqa`` would
    send float32 inputs to the math kernel, which builds the ``[T, T]`` scores).
    """
    if _CPU_FLASH is not None and q.device.type == "cpu":
        return _CPU_FLASH(q, k, v, 0.0, True, scale=scale)[0]
    kernel = _cuda_kernel(q.device, q.dtype, q.shape[-1]) if q.device.type == "cuda" else None
    if kernel is not None:
        return kernel(q, k, v, scale)[0]
    group = q.shape[1] // k.shape[1]
    if group > 1 and q.device.type == "cuda":
        k, v, group = _expand_kv(q, k), _expand_kv(q, v), 1
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=group > 1)


def wide_dtype(dtype: torch.dtype) -> torch.dtype:
    """The wider of float32 and ``dtype``: where softmax sums and log-sum-exps are computed."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def attention_with_lse(
    q: Float[Tensor, "batch head pos d_head"],
    k: Float[Tensor, "batch kv_head pos d_head"],
    v: Float[Tensor, "batch kv_head pos d_head"],
    scale: float,
) -> tuple[Float[Tensor, "batch head pos d_head"], Float[Tensor, "batch head pos"]]:
    """Causal attention (differentiable) and each query's log-sum-exp of scores (a constant, :func:`wide_dtype`).

    On CPU one call of the flash-attention kernel gives both; on CUDA one call of the flash (half precision) or
    memory-efficient kernel, once a check on a small input of the same dtype and head size has shown it agrees with
    the reference (:func:`_cuda_kernel`). Elsewhere the output comes from ``scaled_dot_product_attention`` and the
    log-sum-exp from :func:`causal_logsumexp`.
    """
    if _CPU_FLASH is not None and q.device.type == "cpu":
        out, lse = _CPU_FLASH(q, k, v, 0.0, True, scale=scale)
        return out, lse.detach().to(wide_dtype(q.dtype))
    kernel = _cuda_kernel(q.device, q.dtype, q.shape[-1]) if q.device.type == "cuda" else None
    if kernel is not None:
        out, lse = kernel(q, k, v, scale)
        return out, lse[..., : q.shape[2]].detach().to(wide_dtype(q.dtype))
    return causal_attention(q, k, v, scale), causal_logsumexp(q, k, scale)


def _expand_kv(q: Tensor, kv: Tensor) -> Tensor:
    """Grouped key/value heads repeated to one per query head."""
    group = q.shape[1] // kv.shape[1]
    return kv.repeat_interleave(group, dim=1) if group > 1 else kv


def _flash(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """CUDA's flash kernel; grouped kv heads as they are (the kernel reads each kv head for its query group)."""
    return _CUDA_FLASH(q, k, v, 0.0, True, False, scale=scale)[:2]


def _flash_expanded(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """CUDA's flash kernel with grouped kv heads expanded first."""
    return _flash(q, _expand_kv(q, k), _expand_kv(q, v), scale)


def _efficient(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """CUDA's memory-efficient kernel (kv heads expanded; its log-sum-exp is padded past the sequence)."""
    return _CUDA_EFFICIENT(q, _expand_kv(q, k), _expand_kv(q, v), None, True, 0.0, True, scale=scale)[:2]


def _cuda_kernel(device: torch.device, dtype: torch.dtype, d_head: int) -> Kernel | None:
    """The fastest fused kernel that runs and agrees with the reference here, or None (checked once per key).

    Candidates in order: flash with grouped kv heads, flash with them expanded (float16/bfloat16 only), the
    memory-efficient kernel. Each is checked per device, dtype and head size, on a small random input with grouped
    kv heads, forward and backward, against ``scaled_dot_product_attention`` and :func:`causal_logsumexp` in
    float32; a kernel that is missing, refuses the dtype or head size (CUDA has none for some head sizes, such as
    1) or disagrees is passed over.
    """
    key = (device.type, device.index, dtype, d_head)
    if key not in _CUDA_KERNELS:
        half = dtype in (torch.float16, torch.bfloat16)
        candidates = [(_flash, _CUDA_FLASH), (_flash_expanded, _CUDA_FLASH)] if half else []
        if dtype in (torch.float32, torch.float16, torch.bfloat16):
            candidates.append((_efficient, _CUDA_EFFICIENT))
        _CUDA_KERNELS[key] = next((kernel for kernel, op in candidates
                                   if op is not None and _agrees(kernel, device, dtype, d_head)), None)
    return _CUDA_KERNELS[key]


def _agrees(kernel: Kernel, device: torch.device, dtype: torch.dtype, d_head: int) -> bool:
    """Whether ``kernel`` runs here and its output, log-sum-exp and gradients match the float32 reference."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    q, k, v, weight = (torch.randn(2, heads, 37, d_head, generator=generator, device="cpu").to(device)
                       for heads in (4, 2, 2, 4))  # grouped kv heads, as Llama-style models have
    inputs = [x.to(dtype).requires_grad_(True) for x in (q, k, v)]
    reference_inputs = [x.detach().float().requires_grad_(True) for x in inputs]  # the same values, in float32
    q, k = reference_inputs[0].detach(), reference_inputs[1].detach()
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2

    def close(ours: Tensor, reference: Tensor) -> bool:
        return bool(ours.isfinite().all()) and float((ours.float() - reference).norm()) <= tolerance * float(
            reference.norm())

    try:
        with torch.autocast(device.type, enabled=False):
            out, lse = kernel(*inputs, 0.25)
            grads = torch.autograd.grad((out.float() * weight).sum(), inputs)
            q_ref, k_ref, v_ref = reference_inputs
            reference = F.scaled_dot_product_attention(q_ref, _expand_kv(q_ref, k_ref), _expand_kv(q_ref, v_ref),
                                                       is_causal=True, scale=0.25)
            reference_grads = torch.autograd.grad((reference * weight).sum(), reference_inputs)
    except (RuntimeError, TypeError, NotImplementedError):
        return False
    return (close(out, reference.detach()) and close(lse[..., : q.shape[2]], causal_logsumexp(q, k, 0.25))
            and all(close(ours, theirs) for ours, theirs in zip(grads, reference_grads, strict=True)))


@torch.no_grad()
def causal_logsumexp(
    q: Float[Tensor, "batch head pos d_head"],
    k: Float[Tensor, "batch kv_head pos d_head"],
    scale: float,
    block: int | None = None,
) -> Float[Tensor, "batch head pos"]:
    """``logsumexp_{i <= t}(scale · q_t·k_i)`` in :func:`wide_dtype`, ``block`` queries at a time (default ``d_head``).

    No more than ``[batch, head, block, pos]`` scores exist at once.

    Example:
        >>> q, k = torch.randn(1, 2, 6, 4), torch.randn(1, 1, 6, 4)
        >>> scores = (q @ k.transpose(-1, -2) * 0.5).masked_fill(torch.ones(6, 6).triu(1).bool(), -float("inf"))
        >>> torch.allclose(causal_logsumexp(q, k, 0.5, block=4), scores.logsumexp(-1))
        True
    """
    batch, n_heads, n, d_head = q.shape
    n_kv = k.shape[1]
    block = block or max(d_head, 1)
    wide = wide_dtype(q.dtype)
    grouped = q.to(wide).unflatten(1, (n_kv, n_heads // n_kv))  # [batch, kv_head, group, pos, d]
    keys = k.to(wide).unsqueeze(2).transpose(-1, -2)  # [batch, kv_head, 1, d, pos]
    out = []
    for start in range(0, n, block):
        stop = min(start + block, n)
        scores = grouped[..., start:stop, :] @ keys[..., :stop] * scale  # [batch, kv_head, group, block, stop]
        future = torch.arange(stop, device=q.device) > torch.arange(start, stop, device=q.device).unsqueeze(-1)
        out.append(scores.masked_fill_(future, float("-inf")).logsumexp(-1))
    return torch.cat(out, dim=-1).flatten(1, 2)


class SplitDiagonal(torch.autograd.Function):
    """Identity on the attention output whose backward moves the diagonal term from past to own keys/values.

    ``apply(out, q, k_self, v_self, k_past, v_past, lse, scale)`` returns ``out``; ``out`` must be causal
    attention over ``k_past, v_past`` (``[batch, head, pos, d]``; kv heads may be grouped) and ``lse`` its
    log-sum-exp. In backward the gradient reaches ``out`` unchanged (so the fused attention backward adds the
    vanilla query, past-key and past-value gradients), and with ``p_t = exp(scale · q_t·k_t − lse_t)`` and
    ``ds_t = p_t · g_t·(v_t − out_t)``, the own value gets ``p_t g_t``, the own key ``scale · ds_t q_t``, and the
    past value and key the negatives of those.
    """

    @staticmethod
    def forward(ctx: Any, out: Tensor, q: Tensor, k_self: Tensor, v_self: Tensor, k_past: Tensor, v_past: Tensor,
                lse: Tensor, scale: float) -> Tensor:
        """Return ``out`` unchanged, keeping what backward needs."""
        ctx.save_for_backward(out, q, k_self, v_self, lse)
        ctx.scale = scale
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        """Pass ``grad`` to ``out`` and move the diagonal term's gradient from past to own keys and values."""
        out, q, k, v, lse = ctx.saved_tensors
        n_kv = k.shape[1]
        group = q.shape[1] // n_kv
        wanted = ctx.needs_input_grad
        if not any(wanted[2:6]):
            return grad, None, None, None, None, None, None, None

        wide = wide_dtype(q.dtype)

        def grouped(x: Tensor) -> Tensor:  # [batch, head, ...] -> [batch, kv_head, group, ...], widened
            return x.to(wide).unflatten(1, (n_kv, group))

        q_g, out_g, grad_g, lse_g = grouped(q), grouped(out), grouped(grad), grouped(lse)
        k_g, v_g = k.to(wide).unsqueeze(2), v.to(wide).unsqueeze(2)  # [batch, kv_head, 1, pos, d]
        own = ((q_g * k_g).sum(-1) * ctx.scale - lse_g).exp()  # p_tt, [batch, kv_head, group, pos]
        d_v = (own.unsqueeze(-1) * grad_g).sum(2)  # [batch, kv_head, pos, d]
        d_score = own * (grad_g * (v_g - out_g)).sum(-1)
        d_k = (d_score.unsqueeze(-1) * q_g).sum(2) * ctx.scale
        d_k, d_v = d_k.to(k.dtype), d_v.to(v.dtype)
        return (
            grad,
            None,
            d_k if wanted[2] else None,
            d_v if wanted[3] else None,
            -d_k if wanted[4] else None,
            -d_v if wanted[5] else None,
            None,
            None,
        )
