"""Future-token transplant (the causal test of Future Lens, Pal et al. 2023).

Take the residual stream ``h_t^l`` of a source context at position ``t`` and depth ``l``, write it into the
last position of a *neutral* prompt at the same depth, let the model continue greedily for ``n_steps``
tokens, and ask how often it produces the tokens the source model itself would have produced after ``t``.
If ``h_t^l`` alone makes the model say the source's token ``t + 1 + N``, that state carries information
about the future that the model can use.

Precision@k at offset ``N`` is the fraction of sources whose own token ``N`` steps ahead (from the source
model's greedy continuation of ``tokens[:, :t + 1]``) is among the transplanted run's top ``k`` at step
``N``. Offset 0 is the token predicted right at the transplanted position.

The transplanted state stays at the prompt's last position while generating: every forward of the greedy
loop (which recomputes the whole sequence) writes it there again, which is the same as generating with a
key/value cache filled by the first, transplanted forward.

A prompt is text or token ids (a fixed prompt), or a *soft* prompt: input embeddings ``[pos, d_model]``, such
as Future Lens' learned prompt (:class:`~forethought.probes.learned_prompt.LearnedPrompts`). Both run through
the same steps: :func:`transplant_hooks` writes the states, :func:`greedy` continues (appending the embeddings
of the tokens it generates to a soft prompt), and :func:`transplanted_logits` gives the logits of one step,
differentiable with respect to a soft prompt (which is how a learned prompt is trained).

Example:
    >>> import torch
    >>> from forethought.interventions import transplant
    >>> from forethought.models import tiny_model
    >>> model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=16)
    >>> tokens = torch.randint(0, 20, (4, 6), generator=torch.Generator().manual_seed(0))
    >>> prompts = [torch.tensor([1, 2, 3])]  # token prompts; strings need a model with a tokenizer
    >>> result = transplant(model, tokens, prompts=prompts, n_steps=3, progress=False)
    >>> result.precision_table(k=1).shape  # precision@1: 3 depths and a no-transplant row, 3 offsets
    (4, 3)
    >>> float(result.precision(k=1)[-1, 0])  # the final state fixes the next token
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from forethought.errors import ContextLengthError, DataError, InvalidArgumentError, check_positive
from forethought.hook_names import RESID, hook_name, resolve_layers
from forethought.interventions._core import device_of, require_deterministic, resolve_index
from forethought.interventions.results import TransplantResult
from forethought.prompts import Prompts, as_tokens

#: Context-free prompts to transplant into (Future Lens-style); pass ``prompts=`` for your own.
NEUTRAL_PROMPTS: tuple[str, ...] = (
    "Hello! Could you please tell me more about",
    "Tell me something about",
    "The following is a short text:",
    "Here is a sentence:",
)

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

Prompt = str | Int[Tensor, " pos"] | Sequence[int] | Float[Tensor, "pos d_model"]
#: Where transplanted states go: ``(hook name, rows of the batch, states [rows, d_model])``.
Write = tuple[str, slice, Float[Tensor, "rows d_model"]]


def transplant(
    model: TransformerBridge,
    tokens: Prompts,
    *,
    position: int = -1,
    layers: Sequence[int] | int | str = "all",
    prompts: Sequence[Prompt] = NEUTRAL_PROMPTS,
    n_steps: int = 4,
    batch_size: int = 64,
    progress: bool = True,
) -> TransplantResult:
    """Transplant ``h_t^l`` of each source into neutral prompts and score the greedy continuation.

    Args:
        model: a ``TransformerBridge`` with a deterministic forward.
        tokens: source contexts ``[source, pos]`` (token tensors, or strings of equal token length); the state
            is taken at ``position`` of each.
        position: the source position ``t`` (negative counts from the end of ``tokens``).
        layers: residual depths to transplant (``"resid"`` convention: 0 is the embeddings).
        prompts: neutral prompts: strings (tokenised with ``model.to_tokens``, which adds a BOS token where
            the model's default does), 1-D token tensors or lists of token ids, or soft prompts (float tensors
            ``[pos, d_model]`` of input embeddings, e.g. ``LearnedPrompts.prompt(layer, offset=0)``).
        n_steps: how many tokens to generate and score (offsets ``0 .. n_steps - 1``).
        batch_size: sources per forward.
        progress: show a progress bar.

    Example:
        >>> import torch
        >>> from forethought.interventions import transplant
        >>> from forethought.models import tiny_model
        >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=16)
        >>> source = torch.tensor([[3, 1, 4, 1, 5]])
        >>> same = transplant(model, source, prompts=[source[0]], n_steps=3, progress=False)
        >>> bool((same.precision(k=1) == 1).all())  # the source itself as the "neutral" prompt
        True
    """
    tokens = as_tokens(model, tokens)
    check_positive("n_steps", n_steps, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    require_deterministic(model)
    t = resolve_index(position, tokens.shape[1], "position")
    layer_list = resolve_layers(model, layers, RESID)
    prompt_tokens = [_prompt_input(model, prompt, n_steps) for prompt in prompts]
    if not prompt_tokens:
        raise DataError("prompts is empty; pass at least one neutral prompt")
    prefix = tokens[:, : t + 1].to(device_of(model))
    if t + 1 + n_steps > model.cfg.n_ctx:
        raise ContextLengthError(f"position {t} + n_steps {n_steps} exceeds the model's context n_ctx="
                                 f"{model.cfg.n_ctx}")
    names = [hook_name(model, RESID, layer) for layer in layer_list]

    n_sources = len(tokens)
    ranks = torch.empty(len(prompt_tokens), len(layer_list), n_sources, n_steps, dtype=torch.long, device="cpu")
    generated = torch.empty_like(ranks)
    baseline = torch.empty(len(prompt_tokens), n_sources, n_steps, dtype=torch.long, device="cpu")
    continuation = torch.empty(n_sources, n_steps, dtype=torch.long, device="cpu")
    chunks = range(0, n_sources, batch_size)
    bar = tqdm(total=len(chunks) * len(prompt_tokens) * (len(layer_list) + 1), desc="transplant",
               disable=not progress, unit="run")
    with torch.no_grad():
        for start in chunks:
            rows = slice(start, start + batch_size)
            states = _states(model, prefix[rows], names)
            own, _ = greedy(model, prefix[rows], n_steps)
            continuation[rows] = own.cpu()
            for p, prompt in enumerate(prompt_tokens):
                run = prompt.to(prefix.device).expand(len(own), *prompt.shape)  # tokens or soft embeddings
                _, logits = greedy(model, run, n_steps)
                baseline[p, rows] = _ranks(logits, own).cpu()
                bar.update()
                for i, name in enumerate(names):
                    fwd_hooks = transplant_hooks([(name, slice(None), states[name])], len(prompt) - 1)
                    out, logits = greedy(model, run, n_steps, fwd_hooks=fwd_hooks)
                    ranks[p, i, rows], generated[p, i, rows] = _ranks(logits, own).cpu(), out.cpu()
                    bar.update()
    bar.close()
    return TransplantResult(
        ranks=ranks,
        baseline_ranks=baseline,
        generated=generated,
        continuation=continuation,
        layers=layer_list,
        prompts=[_prompt_label(p) for p in prompts],
        position=t,
    )


def greedy(
    model: TransformerBridge,
    tokens: Prompts | Float[Tensor, "batch pos d_model"],
    n_steps: int,
    fwd_hooks: Sequence[tuple[str, Any]] = (),
) -> tuple[Int[Tensor, "batch step"], Float[Tensor, "batch step d_vocab"]]:
    """Greedy continuation of ``tokens`` (a token tensor, strings, or soft input embeddings) for ``n_steps``.

    ``fwd_hooks`` are active in every forward. Returns the generated tokens and the logits each was chosen
    from. Every step recomputes the whole sequence (no cache), so hooks see every position at every step. A soft
    prompt (float ``[batch, pos, d_model]``, what the model's embedding would give) is continued with the
    embeddings of the generated tokens.

    Example:
        >>> import torch
        >>> from forethought.interventions import greedy
        >>> from forethought.models import tiny_model
        >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=16)
        >>> out, logits = greedy(model, torch.tensor([[1, 2, 3]]), n_steps=4)
        >>> out.shape, logits.shape
        (torch.Size([1, 4]), torch.Size([1, 4, 20]))
        >>> soft, _ = greedy(model, model.embed(torch.tensor([[1, 2, 3]])), n_steps=4)  # the same, from embeddings
        >>> torch.equal(soft, out)
        True
    """
    inputs = _model_inputs(model, tokens, n_steps)
    steps, step_logits = [], []
    with torch.no_grad(), model.hooks(fwd_hooks=list(fwd_hooks)):
        for _ in range(n_steps):
            last = model(inputs)[:, -1]
            step_logits.append(last)
            steps.append(last.argmax(-1))
            inputs = torch.cat([inputs, _embed_like(model, steps[-1].unsqueeze(1), inputs)], dim=1)
    return torch.stack(steps, 1), torch.stack(step_logits, 1)


def transplanted_logits(
    model: TransformerBridge,
    prompts: Int[Tensor, "batch pos"] | Float[Tensor, "batch pos d_model"],
    writes: Sequence[Write],
    n_steps: int = 1,
) -> Float[Tensor, "batch step d_vocab"]:
    """The logits of steps ``0 .. n_steps - 1`` of the greedy continuation of ``prompts``, ``writes`` transplanted.

    Step 0 is the prediction at the transplanted position (the prompt's last) itself; step ``N`` reads the
    position after ``N`` greedily generated tokens. Those are chosen without gradient and then held fixed, and
    every step's logits come from one forward over the prompt and them, so the result is differentiable with
    respect to soft ``prompts`` and equals :func:`greedy`'s logits.

    Args:
        model: a ``TransformerBridge``.
        prompts: token ids ``[batch, pos]`` or soft input embeddings ``[batch, pos, d_model]``.
        writes: ``(hook name, rows, states [rows, d_model])``: the states each hook writes into its rows.
        n_steps: how many steps' logits to return.

    Example:
        >>> import torch
        >>> from forethought.models import tiny_model
        >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=16)
        >>> prompts, states = torch.tensor([[1, 2, 3], [1, 2, 3]]), torch.randn(2, 16)
        >>> writes = [("blocks.0.hook_resid_pre", slice(None), states)]
        >>> _, logits = greedy(model, prompts, 2, fwd_hooks=transplant_hooks(writes, position=2))
        >>> torch.allclose(transplanted_logits(model, prompts, writes, n_steps=2), logits, atol=1e-5)
        True
    """
    check_positive("n_steps", n_steps, integer=True)
    inputs = _model_inputs(model, prompts, n_steps - 1)
    hooks = transplant_hooks(writes, position=inputs.shape[1] - 1)
    if n_steps > 1:
        generated, _ = greedy(model, inputs.detach(), n_steps - 1, fwd_hooks=hooks)
        with torch.no_grad():
            continued = _embed_like(model, generated, inputs)
        inputs = torch.cat([inputs, continued], dim=1)
    with model.hooks(fwd_hooks=hooks):
        return model(inputs)[:, -n_steps:]


def transplant_hooks(writes: Sequence[Write], position: int) -> list[tuple[str, Any]]:
    """Forward hooks that write each ``(hook name, rows, states)`` of ``writes`` at ``position`` of its rows.

    Example:
        >>> import torch
        >>> [name for name, _ in transplant_hooks([("blocks.0.hook_resid_pre", slice(0, 2), torch.zeros(2, 4))], 3)]
        ['blocks.0.hook_resid_pre']
    """
    by_hook: dict[str, list[tuple[slice, Tensor]]] = {}
    for name, rows, states in writes:
        by_hook.setdefault(name, []).append((rows, states))
    return [(name, _write_last(parts, position)) for name, parts in by_hook.items()]


def _states(model: TransformerBridge, prefix: Tensor, names: list[str]) -> dict[str, Float[Tensor, "batch d_model"]]:
    """The residual stream at the last position of ``prefix`` at every hook in ``names``."""
    states: dict[str, Tensor] = {}

    def keep(name: str) -> Any:
        def hook(activation: Tensor, hook: Any) -> None:
            states[name] = activation[:, -1].detach().clone()

        return hook

    with model.hooks(fwd_hooks=[(name, keep(name)) for name in names]):
        model(prefix, return_type=None)
    return states


def _write_last(parts: list[tuple[slice, Tensor]], position: int) -> Any:
    def hook(activation: Tensor, hook: Any) -> Tensor:
        activation = activation.clone()
        for rows, states in parts:
            activation[rows, position] = states.to(activation.device, activation.dtype)
        return activation

    return hook


def _model_inputs(model: TransformerBridge, inputs: Any, n_steps: int) -> Tensor:
    """Token ids ``[batch, pos]`` (checked) or soft embeddings ``[batch, pos, d_model]`` on the model's device."""
    if not (isinstance(inputs, Tensor) and inputs.is_floating_point()):
        return as_tokens(model, inputs).to(device_of(model))
    if inputs.ndim != 3 or inputs.shape[-1] != model.cfg.d_model or inputs.shape[1] == 0:
        raise InvalidArgumentError(f"soft prompts must be input embeddings [batch, pos, {model.cfg.d_model}]; got "
                                   f"shape {tuple(inputs.shape)}")
    if inputs.shape[1] + n_steps > model.cfg.n_ctx:
        raise ContextLengthError(f"prompt of {inputs.shape[1]} positions + {n_steps} steps exceeds n_ctx="
                                 f"{model.cfg.n_ctx}")
    weight = next(model.parameters())
    return inputs.to(weight.device, weight.dtype)


def _embed_like(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], inputs: Tensor) -> Tensor:
    """``tokens`` in the form of ``inputs``: as they are, or their input embeddings (for a soft prompt)."""
    return model.embed(tokens).to(inputs.dtype) if inputs.is_floating_point() else tokens


def _ranks(logits: Float[Tensor, "batch step d_vocab"], targets: Int[Tensor, "batch step"]) -> Tensor:
    """Rank of each target among the logits (0 = top; ties resolved in the target's favour)."""
    target_logits = logits.gather(-1, targets.unsqueeze(-1))
    return (logits > target_logits).sum(-1)


def _prompt_input(model: TransformerBridge, prompt: Any, n_steps: int) -> Tensor:
    """A prompt's token ids ``[pos]``, or a soft prompt's embeddings ``[pos, d_model]``, checked to fit."""
    if isinstance(prompt, Tensor) and prompt.is_floating_point():
        if prompt.ndim != 2:
            raise InvalidArgumentError(f"a soft prompt must be input embeddings [pos, {model.cfg.d_model}]; got "
                                       f"shape {tuple(prompt.shape)}")
        _model_inputs(model, prompt[None], n_steps)
        return prompt
    if isinstance(prompt, str):
        ids = as_tokens(model, prompt, "prompt")[0]
    elif isinstance(prompt, Tensor) or (isinstance(prompt, Sequence) and all(isinstance(x, int) for x in prompt)):
        ids = torch.as_tensor(prompt, device=prompt.device if isinstance(prompt, Tensor) else "cpu")
    else:
        raise InvalidArgumentError(f"prompt {prompt!r} is not a string, a 1-D token tensor, a list of token ids or "
                                   "a soft prompt [pos, d_model]")
    if ids.ndim != 1 or ids.numel() == 0 or ids.is_floating_point():
        raise InvalidArgumentError(f"a token prompt must be a non-empty 1-D integer tensor; got shape "
                                   f"{tuple(ids.shape)} and dtype {ids.dtype}")
    as_tokens(model, ids.long(), "prompt")
    if len(ids) + n_steps > model.cfg.n_ctx:
        raise ContextLengthError(f"prompt of {len(ids)} tokens + n_steps {n_steps} exceeds n_ctx={model.cfg.n_ctx}")
    return ids.long()


def _prompt_label(prompt: Any) -> str | list[int]:
    """How a prompt is recorded in a result: its text, its token ids, or a soft prompt's size."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Tensor) and prompt.is_floating_point():
        return f"<soft prompt of {len(prompt)} embeddings>"
    return [int(x) for x in prompt]
