"""Prompts as tokens: one place where strings become the ``[batch, pos]`` integer tensors every function takes.

Wherever forethought accepts tokens, it also accepts a string or a list of strings. They are tokenised here and
nowhere else (interventions, activations, the lens view, greedy generation all call :func:`as_tokens`), with the
model's own tokenizer, one string at a time, and stacked.

Whether a BOS token is prepended follows the model's own training convention, :func:`prepends_bos` (TransformerLens'
``model.cfg.default_prepend_bos``). Models forethought trains learn from sequences cut out of a stream of documents
joined by EOS, which never start with a BOS token: :func:`~forethought.models.tiny_model` says so
(``prepend_bos=False``), the training runners set it on the models they train, run manifests record it
(``"prepend_bos"``), and :func:`~forethought.models.save_model` / :func:`~forethought.models.load_model` and
:func:`~forethought.runs.load_run` carry it along. Other models keep TransformerLens' default for their
architecture. Strings that tokenise to different lengths are refused: the batch would
need padding and an attention mask, which the interventions do not handle; pass prompts of equal token
length, or token tensors.

Example:
    >>> import torch
    >>> from forethought.models import tiny_model
    >>> from forethought.prompts import as_tokens
    >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
    >>> as_tokens(model, torch.tensor([1, 2, 3]))  # a 1-D tensor is a batch of one
    tensor([[1, 2, 3]])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Int
from torch import Tensor

from forethought.data.tokens import check_tokens_fit
from forethought.errors import InvalidArgumentError

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

#: What every ``tokens`` argument accepts.
Prompts = str | Sequence[str] | Int[Tensor, "batch pos"] | Int[Tensor, " pos"]

__all__ = ["Prompts", "as_tokens", "prepends_bos", "set_prepends_bos"]


def prepends_bos(model: TransformerBridge) -> bool:
    """Whether string prompts for ``model`` start with a BOS token: the convention it was trained with.

    Example:
        >>> from forethought.models import tiny_model
        >>> prepends_bos(tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8))  # trained without
        False
    """
    return bool(getattr(model.cfg, "default_prepend_bos", True))


def set_prepends_bos(model: TransformerBridge, prepend_bos: bool) -> TransformerBridge:
    """Record on ``model`` whether its prompts start with a BOS token (see the module docstring); returns it."""
    if not isinstance(prepend_bos, bool):
        raise InvalidArgumentError(f"prepend_bos={prepend_bos!r} is not allowed; expected True or False")
    model.cfg.default_prepend_bos = prepend_bos
    return model


def as_tokens(model: TransformerBridge, prompts: Any, name: str = "tokens") -> Int[Tensor, "batch pos"]:
    """Integer tokens ``[batch, pos]`` for ``model`` from a string, a list of strings or a token tensor.

    Tensors are kept as they are (a 1-D tensor becomes a batch of one; no copy, no device move); strings are
    tokenised on the CPU, with a BOS token first exactly when :func:`prepends_bos` says the model was trained
    so. Either way the tokens are checked against the model (ids in its vocabulary, length within its context).

    Args:
        model: a ``TransformerBridge``; strings need ``model.tokenizer``.
        prompts: a string, a non-empty list of strings that tokenise to the same length, or an integer tensor
            ``[batch, pos]`` or ``[pos]``.
        name: the argument's name, for error messages.

    Raises:
        InvalidArgumentError: a value of another type, strings and no tokenizer, or strings of different
            token lengths.

    Example:
        >>> import torch
        >>> from forethought.data import load_texts, train_tokenizer
        >>> from forethought.models import tiny_model
        >>> tokenizer = train_tokenizer(load_texts("builtin")[:5], vocab_size=300)
        >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=len(tokenizer), n_ctx=16,
        ...                    tokenizer=tokenizer)
        >>> tokens = as_tokens(model, ["x", "y"])  # one string at a time, as model.to_tokens does it
        >>> torch.equal(tokens, torch.cat([model.to_tokens("x"), model.to_tokens("y")]))
        True
        >>> as_tokens(model, ["x", "a longer one"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        forethought.errors.InvalidArgumentError: tokens tokenise to different lengths (1, 9 tokens); ...
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(prompts, Tensor):
        tokens = prompts.unsqueeze(0) if prompts.ndim == 1 else prompts
    elif isinstance(prompts, Sequence) and prompts and all(isinstance(p, str) for p in prompts):
        tokens = _tokenize(model, list(prompts), name)
    else:
        shown = f"an empty {type(prompts).__name__}" if isinstance(prompts, Sequence) and not prompts else \
            type(prompts).__name__
        raise InvalidArgumentError(f"{name} must be a string, a list of strings or an integer torch.Tensor "
                                   f"[batch, pos]; got {shown}")
    check_tokens_fit(model, tokens)
    return tokens


def _tokenize(model: TransformerBridge, texts: list[str], name: str) -> Int[Tensor, "batch pos"]:
    """Tokenise each text alone with the model's tokenizer and stack them; refuse ragged batches."""
    if getattr(model, "tokenizer", None) is None:
        raise InvalidArgumentError(f"{name} are strings, but the model has no tokenizer (model.tokenizer is None); "
                                   "pass integer token tensors [batch, pos] instead")
    bos = prepends_bos(model)
    rows = [model.to_tokens(text, prepend_bos=bos, move_to_device=False, truncate=False)[0].cpu() for text in texts]
    lengths = [len(row) for row in rows]
    if len(set(lengths)) > 1:
        shown = ", ".join(str(n) for n in lengths[:8]) + (", ..." if len(lengths) > 8 else "")
        raise InvalidArgumentError(f"{name} tokenise to different lengths ({shown} tokens); pass prompts of equal "
                                   "token length, or integer token tensors [batch, pos] (padding is not supported)")
    return torch.stack(rows)
