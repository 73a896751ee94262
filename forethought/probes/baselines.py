"""Baselines a future-token probe must beat, and the control task that tells reading from memorising.

* **Unigram**: always predict the label distribution of the training split (per offset).

Under a top-k label space neither baseline ever predicts ``"other"``: its predictions are the best *kept* tokens,
as a probe's are, so that its top-1 is the same with and without the space whenever those tokens are kept.
* **Bigram at distance N**: predict the token at ``t + 1 + N`` from the token at ``t`` alone, with counts
  from the training split: ``p(y | x) = (c(x, y) + β·p_uni(y)) / (c(x) + β)`` with ``β = 1`` pseudo-count
  of smoothing towards the (Laplace-smoothed) unigram distribution, so input tokens never seen in training
  fall back to the unigram prediction. A probe whose accuracy matches this baseline reads nothing but the
  current token's identity.
* **Control task** (Hewitt & Liang, 2019): each input token type gets a random label drawn from the real
  task's label distribution; the same probe architecture is trained on it, and
  ``selectivity = accuracy − control accuracy``.

Counts are kept sparse (one entry per observed (token, label) pair), so a 50 K vocabulary costs memory in
proportion to the training split, not ``d_vocab × n_classes``.

Example:
    >>> import torch
    >>> current = torch.tensor([0, 1, 0, 1, 2])
    >>> labels = torch.tensor([[1, 2, 1, 2, 2]])  # one offset
    >>> bigram = BigramBaseline.fit(current, labels, n_classes=3, d_vocab=3)
    >>> bigram.score(current, labels)["top1"].tolist()
    [1.0]
    >>> UnigramBaseline.fit(labels, n_classes=3).score(labels)["top1"].tolist()
    [0.6]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from forethought.errors import DataError
from forethought.probes.targets import LabelSpace

TOP_K = (1, 5)


def _laplace_unigram(labels: Int[Tensor, " n"], n_classes: int) -> Float[Tensor, " n_classes"]:
    counts = torch.bincount(labels.long(), minlength=n_classes).double()
    return (counts + 1.0) / (counts.sum() + n_classes)


def _never(space: LabelSpace | None) -> int | None:
    """The class a baseline never predicts: ``"other"`` of a restricted space (None for the whole vocabulary)."""
    return space.other if space is not None else None


def _ranked(probs: Float[Tensor, " n_classes"], never: int | None) -> Int[Tensor, " n_kept"]:
    """Classes from most to least probable (ties by index), without ``never``."""
    order = torch.sort(-probs, stable=True).indices
    return order if never is None else order[order != never]


def _scores(log_probs_of_label: Tensor, ranks_ok: dict[int, Tensor], labels: Tensor,
            space: LabelSpace | None) -> dict[str, Tensor]:
    """Means over all targets.

    Under a restricted ``space`` an ``"other"`` target is a miss (no baseline predicts ``"other"``) and its
    cross-entropy is over the vocabulary (see :mod:`forethought.probes.targets`).
    """
    loss = -log_probs_of_label.double()
    if space is not None and space.restricted:
        inside = space.in_space(labels)
        ranks_ok = {k: ok & inside for k, ok in ranks_ok.items()}
        loss = loss + space.out_of_space_nats(labels)
    out = {f"top{k}": ok.double().mean() for k, ok in ranks_ok.items()}
    out["cross_entropy"] = loss.mean()
    out["hits"] = ranks_ok[1]
    return out


@dataclass
class UnigramBaseline:
    """The training label distribution of each offset (Laplace-smoothed), ignoring the input."""

    probs: Float[Tensor, "offset n_classes"]

    @classmethod
    def fit(cls, labels: Int[Tensor, "offset n"], n_classes: int) -> UnigramBaseline:
        """Count the Laplace-smoothed label distribution of every offset (a row of ``labels``)."""
        if labels.shape[-1] == 0:
            raise DataError("cannot fit a unigram baseline on an empty training split")
        return cls(torch.stack([_laplace_unigram(row, n_classes) for row in labels.cpu()]))

    def score(self, labels: Int[Tensor, "offset n"], space: LabelSpace | None = None
              ) -> dict[str, Float[Tensor, " offset"]]:
        """Top-1, top-5 accuracy and cross-entropy (nats) on ``labels``, one value per offset.

        Scores are over all targets of a restricted ``space``: the predictions are its most frequent *kept*
        tokens (``"other"`` is never predicted, so never a hit). ``"hits"`` holds every example's top-1 hit
        ``[offset, n]``.
        """
        rows = []
        for probs, row in zip(self.probs, labels.cpu().long(), strict=True):
            order = _ranked(probs, _never(space))
            rows.append(_scores(probs[row].log(), {k: torch.isin(row, order[:k]) for k in TOP_K}, row, space))
        return {name: torch.stack([r[name] for r in rows]) for name in rows[0]}


@dataclass
class _Pairs:
    """Sparse (input token, label) counts for one offset, keys ``token * n_classes + label`` sorted."""

    keys: Tensor
    counts: Tensor
    token_counts: Tensor  # [d_vocab]
    top: Tensor  # [d_vocab, max k]: the best labels for each input token under the smoothed model
    unigram: Tensor  # [n_classes]


@dataclass
class BigramBaseline:
    """The most likely label at ``t + 1 + N`` given the token at ``t``, counted on the training split."""

    n_classes: int
    d_vocab: int
    tables: list[_Pairs]
    beta: float = 1.0

    @classmethod
    def fit(cls, current: Int[Tensor, " n"], labels: Int[Tensor, "offset n"], n_classes: int, d_vocab: int,
            beta: float = 1.0, never: int | None = None) -> BigramBaseline:
        """Count (token at t, label at t + 1 + N) pairs for every offset.

        ``never`` is a class never predicted (``"other"`` of a top-k space): the predictions are the best of the
        other classes; the probabilities (and so the cross-entropy) still count it.
        """
        if current.numel() == 0:
            raise DataError("cannot fit a bigram baseline on an empty training split")
        current = current.cpu().long()
        tables = [cls._fit_one(current, row.long(), n_classes, d_vocab, beta, never) for row in labels.cpu()]
        return cls(n_classes=n_classes, d_vocab=d_vocab, tables=tables, beta=beta)

    @staticmethod
    def _fit_one(current: Tensor, labels: Tensor, n_classes: int, d_vocab: int, beta: float,
                 never: int | None) -> _Pairs:
        unigram = _laplace_unigram(labels, n_classes)
        keys, counts = torch.unique(current * n_classes + labels, return_counts=True)
        token_counts = torch.bincount(current, minlength=d_vocab)
        # candidate labels per input token: observed pairs ranked by smoothed score, then unigram order
        k = min(max(TOP_K), n_classes - (never is not None))
        tokens, pair_labels = keys // n_classes, keys % n_classes
        if never is not None:
            keep = pair_labels != never
            tokens, pair_labels, ranked_counts = tokens[keep], pair_labels[keep], counts[keep]
        else:
            ranked_counts = counts
        score = ranked_counts.double() + beta * unigram[pair_labels]
        order = torch.sort(-score, stable=True).indices
        order = order[torch.sort(tokens[order], stable=True).indices]  # grouped by token, best first
        tokens, pair_labels = tokens[order], pair_labels[order]
        starts = torch.searchsorted(tokens, tokens, right=False)
        rank = torch.arange(len(tokens), device=tokens.device) - starts
        observed = torch.full((d_vocab, k), -1, dtype=torch.long, device=tokens.device)
        keep = rank < k
        observed[tokens[keep], rank[keep]] = pair_labels[keep]
        fallback = _ranked(unigram, never)[:k].expand(d_vocab, k)
        candidates = torch.cat([observed, fallback], dim=1)  # [d_vocab, 2k]
        same = candidates.unsqueeze(2) == candidates.unsqueeze(1)
        earlier = torch.ones(2 * k, 2 * k, dtype=torch.bool, device=candidates.device).tril(-1)
        duplicate = (same & earlier).any(-1)
        invalid = (candidates < 0) | duplicate
        pick = torch.sort(invalid.long(), dim=1, stable=True).indices[:, :k]
        top = torch.gather(candidates, 1, pick)
        return _Pairs(keys=keys, counts=counts, token_counts=token_counts, top=top, unigram=unigram)

    def log_prob(self, current: Int[Tensor, " n"], labels: Int[Tensor, " n"], offset_index: int) -> Tensor:
        """``log p(label | current)`` under the smoothed bigram model of one offset."""
        table = self.tables[offset_index]
        key = current.long() * self.n_classes + labels.long()
        where = torch.searchsorted(table.keys, key).clamp(max=max(len(table.keys) - 1, 0))
        pair = torch.where(table.keys[where] == key, table.counts[where], 0).double()
        total = table.token_counts[current.long()].double()
        return ((pair + self.beta * table.unigram[labels.long()]) / (total + self.beta)).log()

    def predict(self, current: Int[Tensor, " n"], offset_index: int, k: int = 1) -> Int[Tensor, "n k"]:
        """The ``k`` most likely labels for each input token."""
        return self.tables[offset_index].top[current.long(), :k]

    def score(self, current: Int[Tensor, " n"], labels: Int[Tensor, "offset n"], space: LabelSpace | None = None
              ) -> dict[str, Float[Tensor, " offset"]]:
        """Top-1, top-5 accuracy and cross-entropy (nats) on ``labels``, one value per offset.

        Scores are over all targets of a restricted ``space``: ``"other"`` is never a hit (fit with
        ``never=space.other`` so that the predictions are the best kept tokens). ``"hits"`` holds every example's
        top-1 hit ``[offset, n]``.
        """
        current = current.cpu().long()
        rows = []
        for i, row in enumerate(labels.cpu().long()):
            top = self.predict(current, i, k=max(TOP_K))
            ok = {k: (top[:, :k] == row[:, None]).any(1) for k in TOP_K}
            rows.append(_scores(self.log_prob(current, row, i), ok, row, space))
        return {name: torch.stack([r[name] for r in rows]) for name in rows[0]}


def control_labels(
    train_labels: Int[Tensor, " n"], d_vocab: int, seed: int = 0
) -> Int[Tensor, " d_vocab"]:
    """A Hewitt & Liang control task: one random class per input token type.

    Each token type gets a label drawn from the empirical distribution of ``train_labels`` (the real task's
    training labels), so the control task has the real label frequencies but no relation to the future.

    Returns:
        ``table`` with ``table[token]`` = the control label of that input token.

    Example:
        >>> table = control_labels(torch.tensor([0, 0, 1]), d_vocab=5, seed=0)
        >>> table.shape, set(table.tolist()) <= {0, 1}
        (torch.Size([5]), True)
    """
    if train_labels.numel() == 0:
        raise DataError("cannot build a control task from an empty training split")
    generator = torch.Generator(device="cpu").manual_seed(seed)  # the same task on every machine
    pick = torch.randint(0, train_labels.numel(), (d_vocab,), generator=generator, device="cpu")
    return train_labels.flatten().cpu().long()[pick]
