"""Scores of probe predictions: top-k accuracy and cross-entropy, batched over any leading axes.

Every function takes logits ``[..., n, n_classes]`` and labels ``[..., n]`` (leading axes broadcast, e.g.
``[layer, task, n, C]`` against ``[task, n]``) and returns one number per leading index, so a whole
(layer × offset) grid is scored in one call. Cross-entropy is in nats.

Example:
    >>> import torch
    >>> logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 3.0, 1.0]]])  # [1, n=2, C=3]
    >>> labels = torch.tensor([[0, 2]])
    >>> top_k_accuracy(logits, labels, k=1).tolist()
    [0.5]
    >>> top_k_accuracy(logits, labels, k=2).tolist()
    [1.0]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from forethought.errors import InvalidArgumentError
from forethought.probes.targets import LabelSpace


def _check(logits: Tensor, labels: Tensor) -> None:
    if logits.ndim < 2 or logits.shape[-2] != labels.shape[-1]:
        raise InvalidArgumentError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree; "
                                   "expected logits [..., n, n_classes] and labels [..., n]")


def correct_at_k(logits: Float[Tensor, "*batch n n_classes"], labels: Int[Tensor, "*lead n"],
                 k: int, never: int | None = None) -> Float[Tensor, "*batch n"]:
    """1.0 where the label is among the ``k`` highest logits (ties count as correct only if within top-k).

    ``never`` is a class that is never predicted (the ``"other"`` class of a top-k label space): the ``k`` best
    of the remaining classes are taken, so a label ``never`` is always a miss.

    Example:
        >>> logits = torch.tensor([[[0.0, 1.0, 9.0]]])  # class 2 ("other") has the highest logit
        >>> correct_at_k(logits, torch.tensor([[1]]), k=1, never=2).tolist()  # the best kept class is 1
        [[1.0]]
    """
    _check(logits, labels)
    if never is not None:
        logits = logits.clone()
        logits[..., never] = float("-inf")
    k = min(k, logits.shape[-1] - (never is not None))
    labels = labels.to(logits.device).long().expand(logits.shape[:-1])
    top = logits.topk(k, dim=-1).indices
    hit = (top == labels.unsqueeze(-1)).any(-1)
    return (hit if never is None else hit & (labels != never)).float()


def top_k_accuracy(logits: Float[Tensor, "*batch n n_classes"], labels: Int[Tensor, "*lead n"],
                   k: int = 1, never: int | None = None) -> Float[Tensor, "*batch"]:
    """Fraction of examples whose label is among the ``k`` highest logits (``k`` is capped at ``n_classes``).

    ``never``: a class never predicted (see :func:`correct_at_k`).
    """
    return correct_at_k(logits, labels, k, never).mean(-1)


def token_cross_entropy(logits: Float[Tensor, "*batch n n_classes"],
                        labels: Int[Tensor, "*lead n"]) -> Float[Tensor, "*batch n"]:
    """Per-example cross-entropy ``-log softmax(logits)[label]`` in nats."""
    _check(logits, labels)
    labels = labels.to(logits.device).long().expand(logits.shape[:-1])
    return -torch.gather(F.log_softmax(logits.float(), dim=-1), -1, labels.unsqueeze(-1)).squeeze(-1)


def cross_entropy(logits: Float[Tensor, "*batch n n_classes"],
                  labels: Int[Tensor, "*lead n"]) -> Float[Tensor, "*batch"]:
    """Mean cross-entropy in nats."""
    return token_cross_entropy(logits, labels).mean(-1)


class MetricAccumulator:
    """Sums top-1, top-5 and cross-entropy over chunks of examples, for data too large to score at once.

    With a restricted ``space`` (top-k + ``"other"``) the scores are over all targets, as the label space
    demands (see :mod:`forethought.probes.targets`): ``"other"`` is never a prediction (top-1 and top-5 take
    the best *kept* tokens), so a label ``"other"`` is a miss; its cross-entropy adds
    :meth:`~forethought.probes.targets.LabelSpace.out_of_space_nats`, and ``top1_in_space`` (top-1 over the
    targets inside the space only) is added to the result. With ``n_groups``, the top-1 hits are also summed per
    group (e.g. per sequence, for a bootstrap over sequences): :attr:`group_hits` ``[..., n_groups]`` and
    :attr:`group_counts` ``[n_groups]``, on the CPU in float64.

    Example:
        >>> acc = MetricAccumulator()
        >>> acc.add(torch.tensor([[[2.0, 0.0], [0.0, 1.0]]]), torch.tensor([[0, 0]]))
        >>> acc.result()["top1"].tolist()
        [0.5]
        >>> from forethought.probes.targets import LabelSpace
        >>> acc = MetricAccumulator(space=LabelSpace(d_vocab=5, token_ids=(0, 2)))  # class 2 is "other"
        >>> logits = torch.tensor([[[0.0, 1.0, 9.0], [0.0, 1.0, 9.0]]])  # "other" has the highest logit
        >>> acc.add(logits, torch.tensor([[1, 2]]))  # the best kept class (1) hits; an "other" target never does
        >>> acc.result()["top1"].tolist()
        [0.5]
    """

    def __init__(self, ks: tuple[int, ...] = (1, 5), space: LabelSpace | None = None, n_groups: int | None = None):
        self.ks = ks
        self.space = space if space is not None and space.restricted else None
        self.n_groups = n_groups
        self.sums: dict[str, Tensor] = {}
        self.count = 0
        self.in_space_count: Tensor | None = None
        self.group_hits: Tensor | None = None
        self.group_counts: Tensor | None = None

    def _sum(self, name: str, value: Tensor) -> None:  # sums stay on the logits' device until result()
        value = value.double()
        self.sums[name] = self.sums[name] + value if name in self.sums else value

    def add(self, logits: Float[Tensor, "*batch n n_classes"], labels: Int[Tensor, "*lead n"],
            groups: Int[Tensor, " n"] | None = None) -> None:
        """Add the scores of one chunk of examples (``groups``: each example's group, when summing per group)."""
        never = None if self.space is None else self.space.other
        hits = {k: correct_at_k(logits, labels, k, never) for k in self.ks}
        loss = token_cross_entropy(logits, labels)
        if self.space is not None:
            inside = self.space.in_space(labels.to(logits.device)).expand(logits.shape[:-1])
            loss = loss + self.space.out_of_space_nats(labels.to(logits.device)).to(loss)
            self._sum("top1_in_space", hits[self.ks[0]].sum(-1))
            count = inside.sum(-1).double()
            self.in_space_count = count if self.in_space_count is None else self.in_space_count + count
        for k, hit in hits.items():
            self._sum(f"top{k}", hit.sum(-1))
        self._sum("cross_entropy", loss.sum(-1))
        if self.n_groups is not None:
            if groups is None:
                raise InvalidArgumentError("this accumulator sums per group; pass groups=... to add()")
            hit = hits[self.ks[0]].double()
            groups = groups.to(hit.device).long()
            per_group = torch.zeros((*hit.shape[:-1], self.n_groups), dtype=torch.float64, device=hit.device)
            per_group.scatter_add_(-1, groups.expand(hit.shape), hit)
            counts = torch.bincount(groups, minlength=self.n_groups).double()
            self.group_hits = per_group if self.group_hits is None else self.group_hits + per_group
            self.group_counts = counts if self.group_counts is None else self.group_counts + counts
        self.count += logits.shape[-2]

    def result(self) -> dict[str, Tensor]:
        """Means over every example added so far (``top1_in_space`` over the in-space ones; NaN if none), on the CPU.

        ``group_hits`` and ``group_counts`` stay where the logits were; :meth:`groups` reads them back.
        """
        if self.count == 0:
            raise InvalidArgumentError("no examples were scored; the test split is empty")
        out = {name: total / self.count for name, total in self.sums.items() if name != "top1_in_space"}
        if "top1_in_space" in self.sums:
            count = self.in_space_count
            out["top1_in_space"] = torch.where(count > 0, self.sums["top1_in_space"] / count.clamp(min=1),
                                               torch.full_like(count, float("nan")))
        return {name: value.cpu() for name, value in out.items()}

    def groups(self) -> tuple[Tensor, Tensor]:
        """Top-1 hits ``[..., n_groups]`` and examples ``[n_groups]`` summed per group, on the CPU."""
        if self.group_hits is None or self.group_counts is None:
            raise InvalidArgumentError("no examples were summed per group; pass n_groups= and groups= to add()")
        return self.group_hits.cpu(), self.group_counts.cpu()
