"""A Future Lens view: what the probe at every depth predicts, position by position, for one prompt.

:func:`lens_view` runs the model once over a prompt, applies fitted probes (direct vocabulary probes, the
Future-Lens linear model or its learned prompt) at every probed residual depth and every position ``t``, and keeps
each probe's top predictions of token ``t + 1 + N`` for one offset ``N``. The :class:`LensView` it returns is a
grid of depths × positions with

* ``to_frame()``: a tidy table, one row per (depth, position): top token and probability, true token, hit,
  and the top 5;
* ``to_html()``: a self-contained page (no script, no server, no external assets; works offline) where
  hovering a cell shows its top 5 with probabilities; ``_repr_html_`` shows the same grid in a notebook;
* ``plot()``: a matplotlib figure for papers; ``save(path)`` writes ``.html``, ``.png`` or ``.csv``.

A *hit* is a top-1 prediction equal to the true token ``t + 1 + N``. With a top-k label space the pooled
"other" class is shown as ``<other>`` and is never a hit, even when the true token lies outside the kept
tokens: a probe cannot name a token it does not know. The last ``N + 1`` positions predict tokens past the
end of the prompt; they are shown, but count neither as hits nor as misses.

Example:
    >>> import torch
    >>> from forethought.models import tiny_model
    >>> from forethought.probes import LabelSpace, LinearProbes, Task
    >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=12, n_ctx=16)
    >>> probes = LinearProbes.zeros([0, 1], [Task(0), Task(1)], d_model=16, label_space=LabelSpace.full(12))
    >>> probes.bias[:, :, 3] = 5.0  # every probe predicts token 3
    >>> view = lens_view(model, probes, [3, 5, 3, 3], offset=1)
    >>> view.hits.tolist()  # targets t + 2 = 3, 3 (positions 0, 1); positions 2, 3 lie past the prompt
    [[True, True, False, False], [True, True, False, False]]
    >>> view
    LensView(offset=1, 2 depths × 4 positions, probes: linear; hits by depth: 0: 2/2, 1: 2/2)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from forethought.activations import collect_activations
from forethought.data.tokens import check_tokens_fit
from forethought.errors import (
    DataError,
    InvalidArgumentError,
    ModelNotAvailableError,
    VocabularyMismatchError,
    check_positive,
)
from forethought.hook_names import RESID, resolve_layers
from forethought.probes.io import load_probes
from forethought.probes.lens_render import OTHER_ID, plot_view, render_html
from forethought.probes.linear import AffineProbes, Task
from forethought.probes.targets import LabelSpace
from forethought.prompts import as_tokens
from forethought.reporting import atomic_write, save_figure, write_csv

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

OTHER = "<other>"
"""How the pooled "other" class of a top-k label space is shown."""


@dataclass(eq=False)
class LensView:
    """Top predictions of token ``t + 1 + offset`` by every probed depth at every prompt position.

    Attributes:
        prompt_ids: the prompt's token ids.
        layers: residual depths along the first axis (0 = embeddings).
        offset: the offset ``N`` shown.
        top_ids: token ids of each probe's most likely classes, best first (``-1`` for "other").
        top_probs: their probabilities.
        true_probs: the probability each probe gives the true token (NaN past the prompt's end, or where
            the true token lies outside a top-k label space).
        vocab: the text of every token id shown.
        label_space: the probes' label space.
        title: a heading for the HTML page and the figure.
        meta: provenance (probe kind, method, model name, ...).
    """

    prompt_ids: list[int]
    layers: list[int]
    offset: int
    top_ids: Int[Tensor, "layer pos k"]
    top_probs: Float[Tensor, "layer pos k"]
    true_probs: Float[Tensor, "layer pos"]
    vocab: dict[int, str]
    label_space: LabelSpace
    title: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_positions(self) -> int:
        """The number of prompt tokens (positions ``t``)."""
        return len(self.prompt_ids)

    @property
    def target_ids(self) -> list[int | None]:
        """The true token ``t + 1 + offset`` at every position (None past the prompt's end)."""
        n = self.n_positions
        return [self.prompt_ids[t + 1 + self.offset] if t + 1 + self.offset < n else None for t in range(n)]

    @property
    def scored(self) -> Tensor:
        """``[pos]``: whether the true token of a position is known (it lies inside the prompt)."""
        return torch.tensor([target is not None for target in self.target_ids], dtype=torch.bool, device="cpu")

    @property
    def hits(self) -> Tensor:
        """``[layer, pos]``: top-1 prediction == true token ("other" and positions past the prompt: False)."""
        targets = torch.tensor([OTHER_ID if target is None else target for target in self.target_ids], device="cpu")
        top = self.top_ids[..., 0]
        return (top == targets) & (top != OTHER_ID) & self.scored

    def hit_counts(self) -> dict[int, tuple[int, int]]:
        """``{depth: (hits, scored positions)}``."""
        n_scored = int(self.scored.sum())
        hits = self.hits.sum(1).tolist()
        return {layer: (int(count), n_scored) for layer, count in zip(self.layers, hits, strict=True)}

    def token_text(self, token_id: int | None) -> str:
        """The text of a token id (``"<other>"`` for the pooled class, ``""`` for None)."""
        if token_id is None:
            return ""
        if token_id == OTHER_ID:
            return OTHER
        return self.vocab.get(int(token_id), f"<{int(token_id)}>")

    def to_frame(self) -> Any:
        """A tidy DataFrame, one row per (depth, position).

        Columns: ``layer, position, offset, input_id, input_token, target_position, top_id, top_token,
        top_prob, true_id, true_token, true_prob, hit, top5_ids, top5_tokens, top5_probs``. ``top_id`` and
        ``true_id`` are nullable integers (NA for "other" and past the prompt), ``hit`` a nullable boolean
        (NA past the prompt); the ``top5_*`` columns hold lists.
        """
        import pandas as pd

        targets, hits, scored = self.target_ids, self.hits, self.scored
        rows = []
        for i, layer in enumerate(self.layers):
            for t, token in enumerate(self.prompt_ids):
                ids = [int(x) for x in self.top_ids[i, t]]
                true_prob = float(self.true_probs[i, t])
                rows.append({
                    "layer": layer, "position": t, "offset": self.offset, "input_id": token,
                    "input_token": self.token_text(token), "target_position": t + 1 + self.offset,
                    "top_id": None if ids[0] == OTHER_ID else ids[0], "top_token": self.token_text(ids[0]),
                    "top_prob": float(self.top_probs[i, t, 0]), "true_id": targets[t],
                    "true_token": self.token_text(targets[t]) if targets[t] is not None else None,
                    "true_prob": true_prob, "hit": bool(hits[i, t]) if scored[t] else None,
                    "top5_ids": [None if x == OTHER_ID else x for x in ids],
                    "top5_tokens": [self.token_text(x) for x in ids],
                    "top5_probs": [float(p) for p in self.top_probs[i, t]],
                })
        frame = pd.DataFrame(rows)
        return frame.astype({"top_id": "Int64", "true_id": "Int64", "hit": "boolean"})

    def to_html(self, full_page: bool = True) -> str:
        """The grid as HTML: a whole page (``full_page``) or a fragment for embedding (what notebooks show)."""
        return render_html(self, full_page=full_page)

    def _repr_html_(self) -> str:
        return self.to_html(full_page=False)

    def plot(self, max_chars: int = 8) -> Any:
        """A heatmap for papers; returns the ``Figure``.

        Depth runs down, position across, the top-1 token in each cell coloured by its probability, hits
        outlined; input tokens below, true tokens above.
        """
        return plot_view(self, max_chars=max_chars)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the view to ``path`` atomically.

        The suffix picks the format: ``.html`` (the page), ``.png`` (:meth:`plot`) or ``.csv`` (:meth:`to_frame`,
        the ``top5_*`` lists as JSON).
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix in (".html", ".htm"):
            text = self.to_html()
            return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        if suffix == ".png":
            return save_figure(self.plot(), path)
        if suffix == ".csv":
            frame = self.to_frame()
            for column in ("top5_ids", "top5_tokens", "top5_probs"):
                frame[column] = frame[column].map(json.dumps)
            return write_csv(path, frame)
        raise InvalidArgumentError(f"cannot save a lens view as {str(path)!r}; use a .html, .png or .csv path")

    def __repr__(self) -> str:
        counts = ", ".join(f"{layer}: {hits}/{n}" for layer, (hits, n) in self.hit_counts().items())
        return (f"LensView(offset={self.offset}, {len(self.layers)} depths × {self.n_positions} positions, "
                f"probes: {self.meta.get('method') or self.meta.get('kind', '?')}; hits by depth: {counts})")


def lens_view(
    model: TransformerBridge,
    probes: AffineProbes | str | os.PathLike,
    prompt: str | Sequence[int] | Int[Tensor, " pos"],
    offset: int = 0,
    *,
    layers: Sequence[int] | None = None,
    k: int = 5,
    title: str | None = None,
) -> LensView:
    """Apply fitted probes to one prompt and keep the top ``k`` predictions of token ``t + 1 + offset``.

    Args:
        model: the ``TransformerBridge`` the probes were fitted on.
        probes: the probes of any method (:class:`LinearProbes`, :class:`FutureLens`, :class:`LearnedPrompts`,
            as fitted by :func:`probe_sweep` or the ``fit_*`` functions), or a directory written by
            :func:`save_probes`.
        prompt: text (tokenised with the model's tokenizer, no special tokens, as the sweeps' corpora are)
            or token ids.
        offset: the offset ``N`` to show; the probes must have a (non-control) task for it.
        layers: the residual depths to show (default: every depth the probes have).
        k: how many predictions to keep per cell (the HTML tooltip shows them all).
        title: a heading (default: names the probes and the offset).

    Raises:
        InvalidArgumentError: the probes have no task for ``offset``, or lack a requested depth.
        VocabularyMismatchError: the probes were fitted on a model of another width or vocabulary.
        DataError: the prompt is empty.
    """
    check_positive("k", k, integer=True)
    if isinstance(probes, (str, os.PathLike)):
        probes = load_probes(probes, model=model)
    if not isinstance(probes, AffineProbes):
        raise InvalidArgumentError(f"probes must be fitted probes (LinearProbes, FutureLens, LearnedPrompts, ...) or a "
                                   f"probe directory; got {type(probes).__name__}")
    _check_fits(model, probes)
    tokens = prompt_tokens(model, prompt)
    task = _task(probes, offset)
    shown = list(probes.layers) if layers is None else [int(layer) for layer in layers]
    missing = [layer for layer in shown if layer not in probes.layers]
    if missing or not shown:
        raise InvalidArgumentError(f"layers={shown!r} are not all among the probes' depths {list(probes.layers)}")
    resolve_layers(model, shown, RESID)  # raises for a depth the model does not have

    acts = collect_activations(model, tokens, hooks=[RESID], layers=shown, batch_size=1, progress=False,
                               split_between_processes=False)
    collected = acts.layers_by_hook[RESID]
    features = acts[RESID][[collected.index(layer) for layer in shown], 0]  # [layer, pos, d_model]
    probe = _one_task(probes, shown, task)
    with torch.no_grad():
        probs = probe.logits(features)[:, 0].float().softmax(-1).cpu()  # [layer, pos, n_classes]
    space = probes.label_space
    shown_probs = probs  # "other" is never shown as a prediction: rank the kept tokens only
    if space.other is not None:
        shown_probs = probs.index_fill(-1, torch.tensor([space.other], device=probs.device), -1.0)
    top_probs, top_classes = shown_probs.topk(min(k, space.n_classes - (space.other is not None)), dim=-1)
    top_probs = torch.gather(probs, -1, top_classes)
    top_ids = class_token_ids(space)[top_classes]

    prompt_ids = tokens[0].tolist()
    view = LensView(prompt_ids=prompt_ids, layers=shown, offset=offset, top_ids=top_ids, top_probs=top_probs,
                    true_probs=_true_probs(probs, prompt_ids, offset, space), vocab={}, label_space=space,
                    meta={"kind": probes.kind, "method": probes.meta.get("method", probes.kind),
                          "model_name": probes.meta.get("model_name", ""), "label_space": space.name})
    view.vocab = token_texts(model, {*prompt_ids, *top_ids.flatten().tolist()} - {OTHER_ID})
    view.title = title if title is not None else (
        f"Future Lens view: {view.meta['method']} probes, offset N={offset} (top-1 guess of token t+1+N)")
    return view


def prompt_tokens(model: TransformerBridge, prompt: str | Sequence[int] | Tensor) -> Int[Tensor, "1 pos"]:
    """A prompt as token ids ``[1, pos]``, checked to fit: ids as they are, text as forethought tokenises it.

    Text goes through :func:`forethought.prompts.as_tokens` like every string prompt: the model's tokenizer, with a
    BOS token first exactly when the model was trained so.
    """
    if isinstance(prompt, str):
        if getattr(model, "tokenizer", None) is None:
            raise ModelNotAvailableError("the model has no tokenizer to cut a text prompt with; pass token ids")
        if not prompt:
            raise DataError("the prompt is empty; pass at least one token")
        return as_tokens(model, prompt, "prompt").long()
    else:
        tokens = torch.as_tensor(prompt, device=prompt.device if isinstance(prompt, Tensor) else "cpu")
        if tokens.ndim == 2 and tokens.shape[0] == 1:
            tokens = tokens[0]
        if tokens.ndim != 1 or not (tokens.dtype in (torch.int64, torch.int32) or tokens.numel() == 0):
            raise InvalidArgumentError(f"prompt ids must be a flat sequence of integers; got {tokens.dtype} of "
                                       f"shape {tuple(tokens.shape)}")
    if tokens.numel() == 0:
        raise DataError("the prompt is empty; pass at least one token")
    tokens = tokens.long()[None]
    check_tokens_fit(model, tokens)
    return tokens


def class_token_ids(space: LabelSpace) -> Int[Tensor, " n_classes"]:
    """The token id of every class of ``space`` (``-1`` for "other")."""
    if space.token_ids is None:
        return torch.arange(space.d_vocab, device="cpu")
    return torch.tensor([*space.token_ids, OTHER_ID], dtype=torch.long, device="cpu")


def token_texts(model: TransformerBridge, ids: set[int]) -> dict[int, str]:
    """The decoded text of each token id (``"<id>"`` without a tokenizer)."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return {i: f"<{i}>" for i in ids}
    return {i: tokenizer.decode([i]) for i in sorted(ids)}


def _check_fits(model: TransformerBridge, probes: AffineProbes) -> None:
    if probes.d_model != model.cfg.d_model or probes.label_space.d_vocab != model.cfg.d_vocab:
        raise VocabularyMismatchError(
            f"the probes were fitted on d_model={probes.d_model}, d_vocab={probes.label_space.d_vocab}; this "
            f"model has d_model={model.cfg.d_model}, d_vocab={model.cfg.d_vocab}")
    hook = probes.meta.get("hook", RESID)
    if hook != RESID:
        raise InvalidArgumentError(f"the probes read hook {hook!r}; a lens view reads the residual stream "
                                   f"({RESID!r}) only")


def _task(probes: AffineProbes, offset: int) -> Task:
    offsets = [task.offset for task in probes.tasks if not task.control]
    if isinstance(offset, bool) or not isinstance(offset, int) or Task(offset) not in probes.tasks:
        if not offsets:
            raise InvalidArgumentError("these are control-task probes (they predict random labels, not tokens); "
                                       "pass the probes of the real task")
        raise InvalidArgumentError(f"offset={offset!r} is not among the probes' offsets {offsets}")
    return Task(offset)


def _one_task(probes: AffineProbes, layers: list[int], task: Task) -> AffineProbes:
    """The probes of ``layers`` and one task (decoding one task only keeps a Future Lens's logits small)."""
    return probes.select(layers=layers, tasks=[task])


def _true_probs(probs: Tensor, prompt_ids: list[int], offset: int, space: LabelSpace) -> Tensor:
    """``[layer, pos]`` probability of the true token's class; NaN past the prompt or for an "other" token."""
    out = torch.full(probs.shape[:2], float("nan"), device=probs.device)
    n = len(prompt_ids)
    for t in range(n - 1 - offset):
        cls = int(space.encode(torch.tensor(prompt_ids[t + 1 + offset], device="cpu")))
        if cls != space.other:
            out[:, t] = probs[:, t, cls]
    return out
