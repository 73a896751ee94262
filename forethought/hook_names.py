"""Hook names, the shared language of forethought: resolve and validate them against a model.

A *hook template* is a hook name without its ``blocks.{layer}.`` prefix (``"hook_resid_post"``,
``"attn.hook_z"``, ``"ln1.hook_out"``). The special template ``"resid"`` is the residual stream at
``n_layers + 1`` depths: depth 0 is the embedding output (``blocks.0.hook_resid_pre``) and depth ``l`` is the
output of block ``l - 1`` (``blocks.{l-1}.hook_resid_post``).

Example:
    >>> from forethought.models import tiny_model
    >>> model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
    >>> hook_name(model, "hook_resid_post", 1)
    'blocks.1.hook_resid_post'
    >>> hook_name(model, "resid", 0)
    'blocks.0.hook_resid_pre'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from forethought.errors import OutOfRangeError, UnknownHookError, choices_text

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

RESID = "resid"


def n_depths(model: TransformerBridge, template: str) -> int:
    """How many layers a template has: ``n_layers + 1`` for ``"resid"``, else ``n_layers``."""
    return model.cfg.n_layers + 1 if template == RESID else model.cfg.n_layers


def check_layer(model: TransformerBridge, layer: int, template: str = "") -> int:
    """Return ``layer`` (negative counts from the end) or raise :class:`OutOfRangeError`."""
    n = n_depths(model, template)
    if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer < n:
        raise OutOfRangeError(f"layer={layer!r} is out of range; this model has layers 0..{n - 1}"
                              + (" for 'resid' (0 = embeddings)" if template == RESID else ""))
    return layer % n


def resolve_layers(model: TransformerBridge, layers: Any, template: str = "") -> list[int]:
    """``"all"``, an int or a list of ints → a sorted list of valid layer indices."""
    if layers == "all" or layers is None:
        return list(range(n_depths(model, template)))
    if isinstance(layers, int):
        layers = [layers]
    return sorted({check_layer(model, layer, template) for layer in layers})


def hook_name(model: TransformerBridge, template: str, layer: int | None = None) -> str:
    """Full hook name for a template at a layer (or a full, layer-less name such as ``"ln_final.hook_out"``)."""
    if template == RESID:
        layer = check_layer(model, layer, RESID)
        return "blocks.0.hook_resid_pre" if layer == 0 else f"blocks.{layer - 1}.hook_resid_post"
    hooks = model.hook_dict
    if layer is None or template.startswith("blocks.") or template in hooks:
        if template not in hooks:
            raise UnknownHookError(f"unknown hook {template!r}; {_known(hooks)}")
        return template
    name = f"blocks.{check_layer(model, layer)}.{template}"
    if name not in hooks:
        raise UnknownHookError(f"unknown hook template {template!r}; {_known(hooks)}")
    return name


def _known(hooks: Any) -> str:
    templates = sorted({name.split(".", 2)[2] for name in hooks if name.startswith("blocks.0.")})
    return f"per-layer templates: 'resid', {choices_text(templates, limit=40)}"
