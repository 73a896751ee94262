"""Future Lens' learned prompt: a soft prompt per (layer, offset) that lets the model read a transplanted state.

For probed depth ``ℓ`` and offset ``N`` a prompt of ``P`` input embeddings ``E[ℓ, N]`` is run through the frozen
model with the hidden state ``h_t^ℓ`` of a source written into its last position at depth ``ℓ`` (the transplant
of :mod:`forethought.interventions.transplant`, one mechanism for fixed and learned prompts); the model continues
greedily for ``N`` tokens and its logits at step ``N`` predict the source's token ``t + 1 + N``. Only ``h_t^ℓ``
reaches the prediction: no source token is shown to the model. This is the "learned prompt causal intervention"
of Pal et al., *Future Lens* (CoNLL 2023), with the model's own greedy continuation in place of the source's
tokens.

:func:`fit_learned_prompt` starts every prompt from the embeddings of a neutral prompt (untrained,
``max_epochs=0``, it *is* the fixed-prompt transplant) and trains all of them at once with AdamW on the prompts
only, the model frozen, against the model's own distribution of token ``t + 1 + N`` (Future Lens' KL objective,
from the final-layer residual at ``t + N``) or against class labels, with per-probe early stopping on held-out
examples (:func:`~forethought.probes.stacked.train_stacked`). The prompt of offset ``N`` is trained on every step
``k <= N`` of its continuation whose offset is probed (all of them for offsets ``0..N``), so that the tokens it
generates on the way are right too: they are chosen greedily, without gradient, as when scoring. Each minibatch
runs one batched forward per offset (after ``N`` greedy steps) over every layer's prompt and every example.

Cost: scoring or training ``n`` examples runs ``L·n`` rows of ``P + N`` positions through the model per offset,
``N + 1`` times; the prompts hold ``L·O·P·d`` floats.

Example:
    >>> import torch
    >>> from forethought.models import tiny_model
    >>> from forethought.interventions import transplant
    >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=12, n_ctx=16)
    >>> states = torch.randn(2, 40, 16)  # depths 0 and 1 at 40 positions
    >>> future = torch.randn(2, 40, 16)  # the final-layer residual at t and t + 1
    >>> prompts = fit_learned_prompt(states, future, model=model, offsets=[0, 1],
    ...                              config=LearnedPromptConfig(max_epochs=1, progress=False))
    >>> prompts.logits(states).shape  # [layer, offset, n, d_vocab]
    torch.Size([2, 2, 40, 12])
    >>> sources = torch.randint(0, 12, (3, 5), generator=torch.Generator().manual_seed(0))
    >>> transplant(model, sources, layers=[1], prompts=[prompts.prompt(layer=1, offset=0)], n_steps=2,
    ...            progress=False).ranks.shape  # the learned prompt in the transplant of Future Lens
    torch.Size([1, 1, 3, 2])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from forethought.errors import (
    ContextLengthError,
    DataError,
    InvalidArgumentError,
    VocabularyMismatchError,
    check_positive,
    choices_text,
)
from forethought.hook_names import RESID, hook_name
from forethought.interventions._core import require_deterministic
from forethought.interventions.transplant import NEUTRAL_PROMPTS, transplanted_logits
from forethought.probes.early_stopping import MinibatchFitConfig
from forethought.probes.future_lens import check_lens_fits, decode
from forethought.probes.linear import ModelProbes, Task
from forethought.probes.stacked import TensorBatches, train_stacked
from forethought.probes.targets import LabelSpace
from forethought.probes.vocabulary import split_held_out
from forethought.prompts import as_tokens

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

#: What a learned prompt is trained to predict: the model's own distribution, or the true token's class.
OBJECTIVES = ("model", "tokens")
#: Logits held at once by one forward of a prompt batch (rows × positions × vocabulary), to bound memory.
LOGITS_PER_FORWARD = 2**24


@dataclass
class LearnedPromptConfig(MinibatchFitConfig):
    """Settings of :func:`fit_learned_prompt`.

    Attributes:
        prompt: the text or token ids every prompt starts from (None: the first of
            :data:`~forethought.interventions.transplant.NEUTRAL_PROMPTS` for a model with a tokenizer, else
            ``prompt_length`` token ids drawn with ``seed``).
        prompt_length: the prompt's length when ``prompt`` is None and the model has no tokenizer.
        objective: ``"model"`` (in a sweep; the soft cross-entropy with the model's own distribution of token
            ``t + 1 + N``, Future Lens' KL up to a constant) or ``"tokens"`` (cross-entropy with the true token's
            class).
        max_epochs: training epochs at most (0: the untrained prompt, i.e. the fixed-prompt transplant).

    The other fields are those of :class:`~forethought.probes.early_stopping.MinibatchFitConfig`.
    """

    prompt: str | tuple[int, ...] | None = None
    prompt_length: int = 8
    objective: str = "model"
    lr: float = 1e-2
    weight_decay: float = 0.0
    batch_size: int = 64
    max_epochs: int = 10
    patience: int = 2
    eval_batch_size: int = 512

    min_epochs = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("prompt_length", self.prompt_length, integer=True)
        if self.objective not in OBJECTIVES:
            raise InvalidArgumentError(f"objective={self.objective!r} is unknown; choose from "
                                       f"{choices_text(OBJECTIVES)}")


class LearnedPrompts(ModelProbes):
    """One soft prompt per (layer, task): the model's continuation after the transplanted state is the prediction.

    Attributes:
        weight: the prompts' input embeddings, ``[layer, task, d_model, prompt]`` (the axes of every probe kind's
            weight, ``[layer, task, d_model, d_out]``; :meth:`prompt` gives one as ``[prompt, d_model]``).
        bias: zeros ``[layer, task, prompt]``, unused (every probe kind stores the same four tensors).
        mean, scale: zeros and ones ``[layer, d_model]``: states are transplanted as they are.
        model: the model the prompts run through. A reference only, as :class:`~forethought.probes.FutureLens`'s:
            not a submodule, not saved, not moved by ``.to()``.

    The other attributes, and calling the probes as ``probes(h, layer=, offset=)``, are those of
    :class:`~forethought.probes.linear.AffineProbes`; the logits are over the label space.
    """

    kind = "learned_prompt"

    def _check_shapes(self) -> None:
        n_layers, n_tasks, d_model, length = self.weight.shape
        expected = {"bias": (n_layers, n_tasks, length), "mean": (n_layers, d_model), "scale": (n_layers, d_model)}
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise InvalidArgumentError(f"{name} has shape {tuple(getattr(self, name).shape)}; expected {shape}")
        super()._check_shapes()
        if self.model is not None:
            check_lens_fits(self.model, d_model, self.label_space.d_vocab)

    @property
    def prompt_length(self) -> int:
        """The number of positions of every prompt."""
        return self.weight.shape[3]

    def prompt(self, layer: int, offset: int) -> Float[Tensor, "prompt d_model"]:
        """The soft prompt of ``layer`` and ``offset``: input embeddings to pass to :func:`transplant` as a prompt."""
        return self.select(layers=[layer], tasks=[Task(offset)]).weight[0, 0].T

    def _head(self, x: Float[Tensor, "layer n d_model"], layers: slice, tasks: slice
              ) -> Float[Tensor, "layer task n n_classes"]:
        if self.model is None:
            raise InvalidArgumentError("these prompts have no model to run through; pass model= to load_probes")
        logits = prompt_logits(self.model, self.weight[layers, tasks].transpose(2, 3), self.layers[layers],
                               [task.offset for task in self.tasks[tasks]], x)
        return self.label_space.project_logits(logits)


def prompt_logits(
    model: TransformerBridge,
    prompts: Float[Tensor, "layer task prompt d_model"],
    layers: Sequence[int],
    offsets: Sequence[int],
    states: Float[Tensor, "layer n d_model"],
) -> Float[Tensor, "layer task n d_vocab"]:
    """Vocabulary logits of every (layer, offset) prompt with every state transplanted into it at its depth.

    The logits of offset ``N`` are those of step ``N`` of the greedy continuation (see
    :func:`continuation_logits`), differentiable in ``prompts``.
    """
    return torch.stack([continuation_logits(model, prompts[:, j], layers, offset, states)[:, :, -1]
                        for j, offset in enumerate(offsets)], dim=1)


def continuation_logits(
    model: TransformerBridge,
    prompts: Float[Tensor, "layer prompt d_model"],
    layers: Sequence[int],
    offset: int,
    states: Float[Tensor, "layer n d_model"],
) -> Float[Tensor, "layer n step d_vocab"]:
    """The logits of steps ``0 .. offset`` of each layer's prompt continued greedily after its transplanted states.

    Every layer's rows run in one batch (:func:`~forethought.interventions.transplant.transplanted_logits`), in
    chunks of examples that bound the logits held at once.
    """
    n_layers, n, length = states.shape[0], states.shape[1], prompts.shape[1]
    names = [hook_name(model, RESID, layer) for layer in layers]
    size = max(1, LOGITS_PER_FORWARD // (n_layers * (length + offset) * model.cfg.d_vocab))
    parts = []
    for start in range(0, n, size):
        chunk = states[:, start : start + size]
        rows = chunk.shape[1]
        inputs = prompts[:, None].expand(-1, rows, -1, -1).reshape(n_layers * rows, length, -1)
        writes = [(name, slice(i * rows, (i + 1) * rows), chunk[i]) for i, name in enumerate(names)]
        logits = transplanted_logits(model, inputs, writes, n_steps=offset + 1)
        parts.append(logits.view(n_layers, rows, offset + 1, -1))
    return torch.cat(parts, dim=1)


def initial_prompt(model: TransformerBridge, config: LearnedPromptConfig) -> Float[Tensor, "prompt d_model"]:
    """The input embeddings every prompt starts from (see :attr:`LearnedPromptConfig.prompt`), in float32."""
    weight = next(model.parameters())
    if config.prompt is not None:
        ids = as_tokens(model, config.prompt if isinstance(config.prompt, str) else
                        torch.tensor(config.prompt, dtype=torch.long, device="cpu"), "prompt")[0]
    elif getattr(model, "tokenizer", None) is not None:
        ids = as_tokens(model, NEUTRAL_PROMPTS[0], "prompt")[0]
    else:
        generator = torch.Generator(device="cpu").manual_seed(config.seed)
        ids = torch.randint(0, model.cfg.d_vocab, (config.prompt_length,), generator=generator, device="cpu")
    with torch.no_grad():
        return model.embed(ids[None].to(weight.device))[0].float()


def fit_learned_prompt(
    features: Float[Tensor, "layer n d_model"],
    targets: Float[Tensor, "offset n d_model"] | Int[Tensor, "offset n"],
    *,
    model: TransformerBridge,
    val_features: Float[Tensor, "layer n_val d_model"] | None = None,
    val_targets: Float[Tensor, "offset n_val d_model"] | Int[Tensor, "offset n_val"] | None = None,
    config: LearnedPromptConfig | None = None,
    layers: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
    label_space: LabelSpace | None = None,
) -> LearnedPrompts:
    """Train a soft prompt for every (layer, offset), the model frozen; see the module docstring.

    Args:
        features: hidden states ``[layer, n, d_model]`` at positions ``t``, read at the residual depths ``layers``.
        targets: the final-layer residual at ``t + N`` per offset ``[offset, n, d_model]`` (objective
            ``"model"``), or the class of token ``t + 1 + N`` in ``label_space`` ``[offset, n]`` (``"tokens"``).
        model: the model the prompts run through (left unchanged).
        val_features: held-out features for early stopping (default: ``val_fraction`` of the training
            examples).
        val_targets: the held-out targets, given with ``val_features``.
        config: fitting settings (``max_epochs=0``: the untrained prompts, the fixed-prompt transplant).
        layers: the residual depths of the features (default ``0..L-1``); each prompt is transplanted at its own.
        offsets: the offsets of the targets (default ``0..O-1``).
        label_space: the classes the logits are projected to (default: the whole vocabulary).

    Returns:
        :class:`LearnedPrompts` on the fitting device; ``meta`` records the epochs and each prompt's best epoch.
    """
    config = config or LearnedPromptConfig()
    device = torch.device(config.device) if config.device is not None else next(model.parameters()).device
    require_deterministic(model)
    layers = list(layers) if layers is not None else list(range(features.shape[0]))
    offsets = list(offsets) if offsets is not None else list(range(targets.shape[0]))
    label_space = label_space or LabelSpace.full(model.cfg.d_vocab)
    _check_examples(model, features, targets, layers, offsets, label_space, config.objective)
    start = initial_prompt(model, config).to(device)
    length = start.shape[0]
    if length + max(offsets) > model.cfg.n_ctx:
        raise ContextLengthError(f"a prompt of {length} positions + offset {max(offsets)} exceeds the model's "
                                 f"n_ctx={model.cfg.n_ctx}; choose a shorter prompt")
    d_model = model.cfg.d_model
    prompts = LearnedPrompts(
        weight=start.T.expand(len(layers), len(offsets), -1, -1).clone(),
        bias=torch.zeros(len(layers), len(offsets), length, device=device),
        mean=torch.zeros(len(layers), d_model, device=device), scale=torch.ones(len(layers), d_model, device=device),
        layers=layers, tasks=[Task(offset) for offset in offsets], label_space=label_space,
        meta={"method": "learned_prompt", "config": asdict(config), "epochs": 0}, model=model)
    if config.max_epochs == 0:
        return prompts
    if (val_features is None) != (val_targets is None):
        raise InvalidArgumentError("pass both val_features and val_targets, or neither")
    features, targets, val_features, val_targets = split_held_out(features, targets, val_features, val_targets,
                                                                  config)
    _check_examples(model, val_features, val_targets, layers, offsets, label_space, config.objective, "held-out")
    weight = prompts.weight.detach().transpose(2, 3).clone().requires_grad_(True)  # [layer, task, prompt, d]

    # the prompt of offset N is trained on every step k <= N that is among the offsets, so that the tokens it
    # generates on the way to step N are right too (they are chosen greedily, without gradient)
    steps = [[k for k, step in enumerate(offsets) if step <= offset] for offset in offsets]

    def loss(x: Tensor, y: Tensor) -> Tensor:  # [layer, task]: summed over the examples and trained steps
        per_task = []
        for j, offset in enumerate(offsets):
            logits = continuation_logits(model, weight[:, j], layers, offset, x.to(device)).float()
            logits = logits[:, :, [offsets[k] for k in steps[j]]]  # [layer, n, step, V]
            if config.objective == "tokens":
                log_q = F.log_softmax(label_space.project_logits(logits), dim=-1)
                labels = y[steps[j]].to(device).T  # [n, step]
                nll = -log_q.gather(-1, labels[None, :, :, None].expand(len(layers), -1, -1, 1))[..., 0]
            else:
                with torch.no_grad():
                    target = F.softmax(decode(model, y[steps[j]].transpose(0, 1)).float(), dim=-1)  # [n, step, V]
                nll = -(target * F.log_softmax(logits, dim=-1)).sum(-1)
            per_task.append(nll.sum((1, 2)))
        return torch.stack(per_task, dim=1)

    fitted = train_stacked([(weight, config.weight_decay)], loss, TensorBatches(features, targets, axis=1),
                           TensorBatches(val_features, val_targets, axis=1), config, desc="learned prompt",
                           masks=[lambda improved: improved[:, :, None, None]])
    with torch.no_grad():
        prompts.weight.copy_(fitted.best[0].transpose(2, 3))
    prompts.meta.update(epochs=fitted.stopper.epochs, best_epoch=fitted.stopper.best_epoch.tolist())
    return prompts


def _check_examples(model: TransformerBridge, features: Tensor, targets: Tensor, layers: list[int],
                    offsets: list[int], space: LabelSpace, objective: str, what: str = "training") -> None:
    """Refuse features and targets that do not describe the same examples, or do not fit the model."""
    expected = "[offset, n, d_model] (final-layer residuals)" if objective == "model" else "[offset, n] (classes)"
    shape_ok = targets.ndim == (3 if objective == "model" else 2) and targets.is_floating_point() == (
        objective == "model")
    if features.ndim != 3 or not shape_ok or features.shape[1] != targets.shape[1]:
        raise InvalidArgumentError(f"objective={objective!r} expects {what} features [layer, n, d_model] and targets "
                                   f"{expected} over the same examples; got {tuple(features.shape)} and "
                                   f"{targets.dtype} {tuple(targets.shape)}")
    if features.shape[1] == 0:
        raise DataError(f"the {what} split is empty; the prompts need at least one example")
    if len(layers) != features.shape[0] or len(offsets) != targets.shape[0]:
        raise InvalidArgumentError(f"{len(layers)} layers and {len(offsets)} offsets do not match features of "
                                   f"{features.shape[0]} layers and targets of {targets.shape[0]} offsets")
    check_lens_fits(model, features.shape[2], space.d_vocab)
    if objective == "model" and targets.shape[2] != model.cfg.d_model:
        raise VocabularyMismatchError(f"target residuals have width {targets.shape[2]}; the model's d_model is "
                                      f"{model.cfg.d_model}")
    if objective == "tokens" and targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= space.n_classes):
        raise InvalidArgumentError(f"class labels must lie in [0, {space.n_classes}); got [{int(targets.min())}, "
                                   f"{int(targets.max())}]")
    for layer in layers:
        hook_name(model, RESID, layer)  # raises for a depth the model does not have
