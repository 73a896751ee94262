"""Local myopia, and a model together with the forward its regime scores it with (:class:`RegimeModel`).

The regimes themselves (vanilla, myopic, local-myopic, bigram, and any you add) are :mod:`forethought.regimes`.

**Local myopia, precisely.** Let ``θ`` be the trained model and ``φ`` a frozen model of the same attention shape
run on the same tokens. In every layer ``l`` and for every query position ``t``, attention uses

* the query, key and value of position ``t`` computed by ``θ`` (from ``θ``'s own residual stream at ``t``), and
* the keys and values of every earlier position ``i < t`` computed by ``φ`` at layer ``l`` (constants).

So position ``t``'s output depends on ``θ`` only through what ``θ`` computes *at* ``t``: the gradient of the loss at
``t`` never reaches ``θ``'s computation at earlier positions, as in strict myopic training, but the past it reads
is a vanilla model's, which *was* trained to pre-cache. Unlike :func:`~forethought.myopic_training.myopic`, this
changes the forward pass: a local-myopic model is always evaluated with its frozen partner. With ``φ`` an exact
copy of ``θ`` the forward equals ``θ``'s vanilla forward and the gradient equals the strict myopic gradient.

Example:
    >>> import torch
    >>> from forethought.models import copy_model, tiny_model
    >>> model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
    >>> past = copy_model(model).requires_grad_(False)
    >>> tokens = torch.randint(0, 20, (2, 8))
    >>> with local_myopic(model, past):
    ...     loss = model(tokens, return_type="loss")
    >>> torch.allclose(loss, model(tokens, return_type="loss"), atol=1e-6)
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from forethought.attention.recompute import (
    LayerCapture,
    RecomputedAttention,
    attend,
    attention_dropout_active,
    capture_hooks,
    check_matches,
    expand_kv,
    geometry,
    qkv,
)
from forethought.errors import InvalidArgumentError, UnsupportedArchitectureError
from forethought.regimes import get_regime

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@contextmanager
def local_myopic(model: TransformerBridge, past_model: TransformerBridge) -> Iterator[Any]:
    """Let a frozen ``past_model`` supply every earlier position's keys and values inside the ``with`` block.

    Each call of ``model`` first runs ``past_model`` on the same input (without gradients) and records its keys
    and values in every layer; ``model``'s attention then combines its own query, key and value at each position
    with ``past_model``'s keys and values at earlier positions (see the module docstring).

    Args:
        model: the trained ``TransformerBridge``.
        past_model: a separate model with the same layers and attention heads (e.g. a frozen copy of a vanilla
            model); it is only run, never trained.

    Raises:
        InvalidArgumentError: ``past_model`` is ``model`` itself or has another attention shape.
        UnsupportedArchitectureError: the attention cannot be recomputed exactly, or dropout is active.
    """
    if past_model is None or past_model is model:
        raise InvalidArgumentError("local_myopic needs a separate past_model (e.g. a frozen copy of a vanilla model)")
    layers = list(range(model.cfg.n_layers))
    geometries = {layer: geometry(model, layer) for layer in layers}
    if past_model.cfg.n_layers != model.cfg.n_layers:
        raise InvalidArgumentError(
            f"past_model has {past_model.cfg.n_layers} layers, the model {model.cfg.n_layers}; they must match"
        )
    past_geometries = {layer: geometry(past_model, layer) for layer in layers}
    for layer in layers:
        mine, theirs = geometries[layer], past_geometries[layer]
        if (mine.n_kv_heads, mine.d_head, mine.rotary) != (theirs.n_kv_heads, theirs.d_head, theirs.rotary):
            raise InvalidArgumentError(
                f"past_model's layer {layer} attention ({theirs.n_kv_heads} kv heads of {theirs.d_head}) does not "
                f"match the model's ({mine.n_kv_heads} kv heads of {mine.d_head})"
            )
    past_captures = {layer: LayerCapture() for layer in layers}
    past_kv: dict[int, tuple[Tensor, Tensor]] = {}
    checked: set[int] = set()

    def run_past_model(module: Any, args: tuple, kwargs: dict) -> None:
        inputs = args[0] if args else kwargs.get("input")
        hooks = capture_hooks(past_model, layers, past_captures, with_inputs=False)
        with torch.no_grad(), past_model.hooks(fwd_hooks=hooks):
            past_model(inputs, return_type=None)
        for layer in layers:
            _, k, v = qkv(past_captures[layer], past_geometries[layer])
            past_kv[layer] = (k, v)
            past_captures[layer].tensors.clear()

    def make_z(layer: int, capture: LayerCapture, z: Tensor) -> Tensor:
        geo = geometries[layer]
        if attention_dropout_active(model, layer):
            raise UnsupportedArchitectureError(
                f"attention dropout is active in layer {layer}; local myopia needs model.eval() or dropout 0"
            )
        if layer not in past_kv:
            raise UnsupportedArchitectureError("local_myopic: the past model's keys and values were not recorded")
        q, k, v = qkv(capture, geo)
        k_past, v_past = past_kv.pop(layer)
        if k_past.shape != k.shape:
            raise InvalidArgumentError(
                f"past_model's keys have shape {tuple(k_past.shape)}, the model's {tuple(k.shape)}; they must match"
            )
        k_self, v_self, k_past, v_past = (expand_kv(x, geo.n_heads) for x in (k, v, k_past, v_past))
        if layer not in checked:  # once per context: the recomputation reproduces the model's own attention
            check_matches(attend(q, k_self, v_self, k_self, v_self, geo.scale), z, layer, geo, "local myopia")
            checked.add(layer)
        return attend(q, k_self, v_self, k_past.to(k_self.dtype), v_past.to(v_self.dtype), geo.scale).to(z.dtype)

    handle = model.register_forward_pre_hook(run_past_model, with_kwargs=True)
    try:
        with RecomputedAttention(model, layers, make_z):
            yield model
    finally:
        handle.remove()
        past_kv.clear()


@dataclass
class RegimeModel:
    """A model together with the forward pass its regime evaluates it with.

    Attributes:
        model: the trained ``TransformerBridge``.
        regime: the name of a registered regime (:data:`forethought.regimes.REGIMES`).
        past_model: the frozen model that supplies the past (``"local-myopic"`` only).

    Example:
        >>> from forethought.models import tiny_model
        >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> with RegimeModel(model, "bigram").forward_context():
        ...     logits = model(torch.zeros(1, 4, dtype=torch.long))
    """

    model: TransformerBridge
    regime: str = "vanilla"
    past_model: TransformerBridge | None = None

    def __post_init__(self) -> None:
        if get_regime(self.regime).needs_past_model and self.past_model is None:
            raise InvalidArgumentError(f"regime {self.regime!r} needs past_model (the frozen model supplying the past)")

    def forward_context(self) -> AbstractContextManager:
        """The context in which to run ``model`` to evaluate it as its regime defines."""
        return get_regime(self.regime).forward_context(self.model, self.past_model)
