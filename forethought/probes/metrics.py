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


def _check(logits: Tensor, labels: Tensor) -> None:
    if logits.ndim < 2 or logits.shape[-2] != labels.shape[-1]:
        raise InvalidArgumentError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree; "
                                   "expected logits [..., n, n_classes] and labels [..., n]")


def correct_at_k(logits: Float[Tensor, "*batch n n_classes"], labels: Int[Tensor, "*batch n"],
                 k: int) -> Float[Tensor, "*batch n"]:
    """1.0 where the label is among the ``k`` highest logits (ties count as correct only if within top-k)."""
    _check(logits, labels)
    k = min(k, logits.shape[-1])
    labels = labels.to(logits.device).long().expand(logits.shape[:-1])
    top = logits.topk(k, dim=-1).indices
    return (top == labels.unsqueeze(-1)).any(-1).float()


def top_k_accuracy(logits: Float[Tensor, "*batch n n_classes"], labels: Int[Tensor, "*batch n"],
                   k: int = 1) -> Float[Tensor, "*batch"]:
    """Fraction of examples whose label is among the ``k`` highest logits (``k`` is capped at ``n_classes``)."""
    return correct_at_k(logits, labels, k).mean(-1)


def token_cross_entropy(logits: Float[Tensor, "*batch n n_classes"],
                        labels: Int[Tensor, "*batch n"]) -> Float[Tensor, "*batch n"]:
    """Per-example cross-entropy ``-log softmax(logits)[label]`` in nats."""
    _check(logits, labels)
    labels = labels.to(logits.device).long().expand(logits.shape[:-1])
    return -torch.gather(F.log_softmax(logits.float(), dim=-1), -1, labels.unsqueeze(-1)).squeeze(-1)


def cross_entropy(logits: Float[Tensor, "*batch n n_classes"],
                  labels: Int[Tensor, "*batch n"]) -> Float[Tensor, "*batch"]:
    """Mean cross-entropy in nats."""
    return token_cross_entropy(logits, labels).mean(-1)


class MetricAccumulator:
    """Sums top-1, top-5 and cross-entropy over chunks of examples, for data too large to score at once.

    Example:
        >>> acc = MetricAccumulator()
        >>> acc.add(torch.tensor([[[2.0, 0.0], [0.0, 1.0]]]), torch.tensor([[0, 0]]))
        >>> acc.result()["top1"].tolist()
        [0.5]
    """

    def __init__(self, ks: tuple[int, ...] = (1, 5)):
        self.ks = ks
        self.sums: dict[str, Tensor] = {}
        self.count = 0

    def add(self, logits: Float[Tensor, "*batch n n_classes"], labels: Int[Tensor, "*batch n"]) -> None:
        parts = {f"top{k}": correct_at_k(logits, labels, k).sum(-1) for k in self.ks}
        parts["cross_entropy"] = token_cross_entropy(logits, labels).sum(-1)
        for name, value in parts.items():
            value = value.double().cpu()
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.count += logits.shape[-2]

    def result(self) -> dict[str, Tensor]:
        """Means over every example added so far."""
        if self.count == 0:
            raise InvalidArgumentError("no examples were scored; the test split is empty")
        return {name: total / self.count for name, total in self.sums.items()}
