"""What a future-token probe predicts: labels per offset, the label space, the model's own predictions.

Offset convention (Future Lens): a probe reads the hidden state at position ``t``; offset ``N = 0`` is the
token being predicted now (``t + 1``) and offset ``N = k`` is token ``t + 1 + k``. All offsets of a sweep
share the positions ``t = 0 .. seq_len - 2 - max(offsets)`` so that every (layer, offset) probe is scored on
the same examples.

A :class:`LabelSpace` maps tokens to the classes a probe predicts: the whole vocabulary, or the ``k`` most
frequent future tokens of the training split plus one ``"other"`` class (index ``k``) for the rest. The
restricted space saves memory; it never changes what counts as right. ``"other"`` is a training class (it
absorbs the probability of the pooled tokens) but never a prediction: top-1 and top-5 take the best *kept*
tokens. Every method, the model's own greedy prediction and every baseline are scored against the true token
over *all* targets: a target outside the kept tokens is a miss whatever is predicted, and its
cross-entropy is that of the vocabulary distribution that spreads the ``"other"`` probability evenly over
the pooled tokens (:meth:`LabelSpace.out_of_space_nats`). Report :meth:`LabelSpace.coverage` (the share of
targets inside the space, an upper bound on any top-1) beside such numbers.

Example:
    >>> import torch
    >>> tokens = torch.tensor([[5, 6, 7, 8, 9]])
    >>> future_labels(tokens, offsets=[0, 2]).tolist()  # positions t = 0, 1 (shared by both offsets)
    [[[6, 7]], [[8, 9]]]
    >>> space = LabelSpace.top_k(torch.tensor([3, 3, 3, 4, 4, 5]), k=2, d_vocab=10)
    >>> space.encode(torch.tensor([3, 4, 5, 9])).tolist()  # 5 and 9 fall in "other" (class 2)
    [0, 1, 2, 2]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from forethought.errors import DataError, InvalidArgumentError, OutOfRangeError


def check_offsets(offsets: Sequence[int], seq_len: int) -> list[int]:
    """Validate offsets against the sequence length and return them sorted and de-duplicated.

    An offset ``N`` needs token ``t + 1 + N`` to exist for at least ``t = 0``, so ``N <= seq_len - 2``.
    """
    if isinstance(offsets, int):
        offsets = [offsets]
    offsets = list(offsets)
    if not offsets:
        raise InvalidArgumentError("offsets is empty; pass at least one offset such as [0, 1, 2, 3]")
    for offset in offsets:
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidArgumentError(f"offset={offset!r} is not allowed; expected integers >= 0")
        if offset > seq_len - 2:
            raise OutOfRangeError(f"offset={offset} is out of range for sequences of {seq_len} tokens; "
                                  f"offsets must be <= seq_len - 2 = {seq_len - 2}")
    return sorted(set(offsets))


def n_positions(seq_len: int, offsets: Sequence[int]) -> int:
    """How many positions per sequence every offset can be probed at: ``seq_len - 1 - max(offsets)``."""
    return seq_len - 1 - max(offsets)


def future_labels(tokens: Int[Tensor, "seq pos"], offsets: Sequence[int]) -> Int[Tensor, "offset seq probe_pos"]:
    """The token at ``t + 1 + N`` for every offset ``N`` and every shared probe position ``t``."""
    offsets = check_offsets(offsets, tokens.shape[1])
    n = n_positions(tokens.shape[1], offsets)
    return torch.stack([tokens[:, 1 + offset : 1 + offset + n] for offset in offsets])


def model_predictions(
    predictions: Int[Tensor, "seq pos"], offsets: Sequence[int]
) -> Int[Tensor, "offset seq probe_pos"]:
    """The model's own greedy prediction of token ``t + 1 + N``, for every offset and probe position.

    ``predictions[s, p]`` is the argmax of the model's logits at position ``p`` (its prediction of token
    ``p + 1`` given the true prefix), so the label for offset ``N`` at position ``t`` is
    ``predictions[s, t + N]``: what the model itself will predict for token ``t + 1 + N`` once it gets there.
    """
    offsets = check_offsets(offsets, predictions.shape[1])
    n = n_positions(predictions.shape[1], offsets)
    return torch.stack([predictions[:, offset : offset + n] for offset in offsets])


@dataclass(frozen=True)
class LabelSpace:
    """The classes a probe predicts: the whole vocabulary, or ``k`` tokens plus an ``"other"`` class.

    Attributes:
        d_vocab: the model's vocabulary size.
        token_ids: the kept tokens, most frequent first (class ``i`` is ``token_ids[i]``), or None for the
            whole vocabulary (class ``i`` is token ``i``).
    """

    d_vocab: int
    token_ids: tuple[int, ...] | None = None

    @classmethod
    def full(cls, d_vocab: int) -> LabelSpace:
        """Every token is its own class (``d_vocab`` classes)."""
        return cls(d_vocab=d_vocab)

    @classmethod
    def top_k(cls, labels: Int[Tensor, "..."], k: int, d_vocab: int) -> LabelSpace:
        """The ``k`` most frequent tokens of ``labels`` (ties broken by token id) plus ``"other"``."""
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise InvalidArgumentError(f"top_k={k!r} is not allowed; expected a positive integer")
        if labels.numel() == 0:
            raise DataError("cannot choose the top-k labels from an empty training split")
        counts = torch.bincount(labels.flatten().long(), minlength=d_vocab)
        # stable sort on -count keeps lower token ids first among equal counts
        order = torch.sort(-counts, stable=True).indices
        kept = [int(i) for i in order[: min(k, d_vocab)] if counts[i] > 0]
        return cls(d_vocab=d_vocab, token_ids=tuple(kept))

    @property
    def restricted(self) -> bool:
        """Whether the space keeps only some tokens (plus ``"other"``) rather than the whole vocabulary."""
        return self.token_ids is not None

    @property
    def n_classes(self) -> int:
        """The number of classes: ``d_vocab``, or the kept tokens plus ``"other"``."""
        return self.d_vocab if self.token_ids is None else len(self.token_ids) + 1

    @property
    def other(self) -> int | None:
        """The index of the ``"other"`` class, or None for the whole vocabulary."""
        return None if self.token_ids is None else len(self.token_ids)

    @property
    def name(self) -> str:
        """``"vocab"`` for the whole vocabulary, else ``"top{k}+other"``."""
        return "vocab" if self.token_ids is None else f"top{len(self.token_ids)}+other"

    def _lookup(self, device: torch.device) -> Tensor:
        table = torch.full((self.d_vocab,), len(self.token_ids), dtype=torch.long, device=device)
        table[torch.tensor(self.token_ids, dtype=torch.long, device=device)] = torch.arange(
            len(self.token_ids), device=device)
        return table

    def encode(self, tokens: Int[Tensor, "*shape"]) -> Int[Tensor, "*shape"]:
        """Token ids → class indices."""
        tokens = tokens.long()
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.d_vocab):
            raise InvalidArgumentError(f"token ids must lie in [0, {self.d_vocab}); got "
                                       f"[{int(tokens.min())}, {int(tokens.max())}]")
        return tokens if self.token_ids is None else self._lookup(tokens.device)[tokens]

    def project_logits(self, logits: Float[Tensor, "... d_vocab"]) -> Float[Tensor, "... n_classes"]:
        """Vocabulary logits → class logits: kept tokens as they are, ``"other"`` = logsumexp of the rest.

        The softmax of the result is exactly the vocabulary distribution with the tokens outside the top
        ``k`` pooled into one class.
        """
        if logits.shape[-1] != self.d_vocab:
            raise InvalidArgumentError(f"expected logits over {self.d_vocab} tokens, got {logits.shape[-1]}")
        if self.token_ids is None:
            return logits
        kept = torch.tensor(self.token_ids, dtype=torch.long, device=logits.device)
        rest = torch.ones(self.d_vocab, dtype=torch.bool, device=logits.device)
        rest[kept] = False
        other = torch.logsumexp(logits[..., rest], dim=-1, keepdim=True) if rest.any() else \
            torch.full_like(logits[..., :1], float("-inf"))
        return torch.cat([logits[..., kept], other], dim=-1)

    def nll(self, logits: Float[Tensor, "... d_vocab"], labels: Int[Tensor, "..."]) -> Float[Tensor, "..."]:
        """``−log p(label)`` under vocabulary ``logits``: the cross-entropy of :meth:`project_logits` and ``labels``.

        Computed without building the class logits: the label's token under the vocabulary's log-softmax, and for
        ``"other"`` the log of the pooled tokens' summed probabilities (a matrix-vector product; a sum of positive
        terms, so no cancellation), several times faster than projecting on a CPU.

        Example:
            >>> import torch.nn.functional as F
            >>> space = LabelSpace(d_vocab=6, token_ids=(4, 1))
            >>> logits, labels = torch.randn(5, 6), torch.tensor([0, 1, 2, 2, 0])
            >>> torch.allclose(space.nll(logits, labels), F.cross_entropy(space.project_logits(logits), labels,
            ...                                                           reduction="none"))
            True
        """
        log_p = F.log_softmax(logits, dim=-1)
        labels = labels.to(logits.device).long()
        if self.token_ids is None:
            return -log_p.gather(-1, labels[..., None]).squeeze(-1)
        kept = torch.tensor(self.token_ids, dtype=torch.long, device=logits.device)
        token = kept[labels.clamp(max=len(kept) - 1)]  # "other" picks any kept token here; replaced below
        picked = log_p.gather(-1, token[..., None]).squeeze(-1)
        pooled = torch.ones(self.d_vocab, dtype=logits.dtype, device=logits.device).index_fill_(0, kept, 0.0)
        other = (log_p.exp() @ pooled).clamp(min=torch.finfo(logits.dtype).tiny).log()
        return -torch.where(labels == self.other, other, picked)

    @property
    def n_pooled(self) -> int:
        """How many vocabulary tokens the ``"other"`` class pools (0 for the whole vocabulary)."""
        return 0 if self.token_ids is None else self.d_vocab - len(self.token_ids)

    def in_space(self, labels: Int[Tensor, "*shape"]) -> Tensor:
        """True where a class label is a kept token (not ``"other"``): the only targets a prediction can hit."""
        if self.token_ids is None:
            return torch.ones_like(labels, dtype=torch.bool)
        return labels != self.other

    def out_of_space_nats(self, labels: Int[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
        """What to add to a class cross-entropy to make it a cross-entropy over the vocabulary.

        ``log(n_pooled)`` where the label is ``"other"`` (its probability is spread evenly over the pooled
        tokens), 0 elsewhere.

        Example:
            >>> space = LabelSpace(d_vocab=10, token_ids=(3, 4))
            >>> space.out_of_space_nats(torch.tensor([0, 2])).tolist()  # 8 tokens pooled in class 2
            [0.0, 2.0794415416798357]
        """
        if self.token_ids is None:
            return torch.zeros(labels.shape, dtype=torch.float64, device=labels.device)
        return (~self.in_space(labels)).double() * math.log(max(self.n_pooled, 1))

    def coverage(self, tokens: Int[Tensor, "..."]) -> float:
        """The fraction of ``tokens`` that are not in the ``"other"`` class (1.0 for the whole vocabulary)."""
        if self.token_ids is None or tokens.numel() == 0:
            return 1.0
        return float((self.encode(tokens) != self.other).double().mean())

    def to_dict(self) -> dict:
        """The space as a JSON-ready dict (``d_vocab``, ``token_ids``)."""
        return {"d_vocab": self.d_vocab, "token_ids": None if self.token_ids is None else list(self.token_ids)}

    @classmethod
    def from_dict(cls, data: dict) -> LabelSpace:
        """The space stored by :meth:`to_dict`."""
        ids = data.get("token_ids")
        return cls(d_vocab=int(data["d_vocab"]), token_ids=None if ids is None else tuple(int(i) for i in ids))

