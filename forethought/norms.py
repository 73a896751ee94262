"""Norm layers computed by the wrapped model's own module while nobody observes their inner hooks.

A TransformerLens 4.3 ``NormalizationBridge`` computes every LayerNorm from scratch in Python (centre, square,
mean, square root, divide, scale, shift: about ten kernels forward and as many backward, where ``F.layer_norm`` is
one), and RMSNorm bridges compute those statistics once more without a gradient before calling the wrapped module,
all so that ``hook_scale`` and ``hook_normalized`` can fire. :func:`install_native_norms` replaces, on one model's
norm bridges (instance attributes; the classes stay untouched), ``forward`` by one that calls the wrapped module
(HF's ``LayerNorm`` or ``RMSNorm``: what plain transformers computes) between ``hook_in`` and ``hook_out``
whenever ``hook_scale`` and ``hook_normalized`` have no hooks, and the bridge's own forward otherwise (e.g. under
``run_with_cache``), so those hooks stay observable and editable.

Example:
    >>> import torch
    >>> from forethought.models import tiny_model
    >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8, attention="eager")
    >>> tokens = torch.randint(0, 20, (2, 8))
    >>> bridge = model(tokens)
    >>> install_native_norms(model) > 0
    True
    >>> torch.allclose(model(tokens), bridge, atol=1e-5)
    True
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

_ATTRIBUTE = "_forethought_native_norm"


def install_native_norms(model: TransformerBridge) -> int:
    """Let every norm bridge of ``model`` run its wrapped module while its inner hooks are idle; returns how many.

    Param-free norms (``LayerNormPre``, ``RMSNormPre``) and norms without a wrapped module keep the bridge's code.
    Installing twice is a no-op.
    """
    count = 0
    for module in model.modules():
        if _replaceable(module):
            if not vars(module).get(_ATTRIBUTE):
                vars(module)[_ATTRIBUTE] = True
                vars(module)["forward"] = types.MethodType(_native_norm_forward, module)
            count += 1
    return count


def remove_native_norms(model: TransformerBridge) -> None:
    """Give every norm bridge of ``model`` back the bridge's own forward."""
    for module in model.modules():
        if vars(module).pop(_ATTRIBUTE, None):
            vars(module).pop("forward", None)


def native_norms_installed(model: TransformerBridge) -> bool:
    """Whether :func:`install_native_norms` is in effect on ``model``."""
    return any(vars(module).get(_ATTRIBUTE) for module in model.modules())


def _replaceable(module: Any) -> bool:
    from transformer_lens.model_bridge.generalized_components.normalization import NormalizationBridge
    from transformer_lens.model_bridge.generalized_components.rms_normalization import RMSNormalizationBridge

    component = getattr(module, "original_component", None)
    return (type(module) in (NormalizationBridge, RMSNormalizationBridge)
            and isinstance(component, torch.nn.Module) and not isinstance(component, torch.nn.Identity)
            and getattr(component, "weight", None) is not None)


def _inner_hooks_idle(norm: Any) -> bool:
    return not any(point._forward_hooks or point._forward_pre_hooks or point._backward_hooks
                   for point in (norm.hook_scale, norm.hook_normalized))


def _native_norm_forward(self: Any, hidden_states: Tensor, **kwargs: Any) -> Tensor:
    """The norm bridge's ``forward`` through its wrapped module while ``hook_scale``/``hook_normalized`` are idle."""
    if not _inner_hooks_idle(self):
        return type(self).forward(self, hidden_states, **kwargs)
    hidden_states = self.hook_in(hidden_states)
    result = self.original_component(hidden_states)
    return self.hook_out(result.to(hidden_states.dtype))
