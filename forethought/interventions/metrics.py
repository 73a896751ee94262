"""Patching metrics: what a patched run is scored by, read at one position of its logits.

A metric sees a :class:`Readout` (the patched run's logits at the read position, and those of the unpatched
clean and corrupted runs at the same position) and returns one value per example. Token arguments
(``answer``, ``wrong``, ``target``) accept an int, a ``[batch]`` tensor (one token per example), a
``[batch, pos]`` tensor (a token per example *and* read position: useful when the read position moves
with the patched one), or ``None`` for a default taken from the unpatched runs.

Example:
    >>> import torch
    >>> from forethought.interventions import KLToClean, LogitDiff, Readout
    >>> logits = torch.tensor([[2.0, 0.0, 1.0]])
    >>> readout = Readout(logits=logits, clean=logits, corrupt=logits.flip(-1), pos=0)
    >>> LogitDiff(answer=0, wrong=2)(readout)
    tensor([1.])
    >>> KLToClean()(readout)
    tensor([0.])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from forethought.errors import InvalidArgumentError, VocabularyMismatchError, choices_text

TokenSpec = int | Int[Tensor, " batch"] | Int[Tensor, "batch pos"] | None


@dataclass(frozen=True)
class Readout:
    """Logits at one read position: of the patched run and of the unpatched clean and corrupted runs."""

    logits: Float[Tensor, "batch d_vocab"]
    clean: Float[Tensor, "batch d_vocab"]
    corrupt: Float[Tensor, "batch d_vocab"]
    pos: int


class Metric(ABC):
    """A per-example score of a patched run at one read position."""

    name: str = "metric"

    @abstractmethod
    def __call__(self, readout: Readout) -> Float[Tensor, " batch"]:
        """Score ``readout.logits``."""

    def check(self, batch: int, seq: int, d_vocab: int) -> None:  # noqa: B027 - optional, no-op by default
        """Raise a :class:`~forethought.errors.ForethoughtError` if the metric cannot be read on such runs."""


@dataclass(frozen=True)
class LogitDiff(Metric):
    """``logit[answer] - logit[wrong]``; by default the clean run's top token against the corrupted run's."""

    answer: TokenSpec = None
    wrong: TokenSpec = None
    name: str = "logit_diff"

    def __call__(self, readout: Readout) -> Float[Tensor, " batch"]:
        """The patched logit of ``answer`` minus that of ``wrong``, per example."""
        answer = select_tokens(self.answer, readout, default=readout.clean)
        wrong = select_tokens(self.wrong, readout, default=readout.corrupt)
        return _gather(readout.logits, answer) - _gather(readout.logits, wrong)

    def check(self, batch: int, seq: int, d_vocab: int) -> None:
        """Raise if ``answer`` or ``wrong`` does not fit a run of this shape and vocabulary."""
        check_token_spec(self.answer, "answer", batch, seq, d_vocab)
        check_token_spec(self.wrong, "wrong", batch, seq, d_vocab)


@dataclass(frozen=True)
class LogProb(Metric):
    """Log-probability of ``target`` (by default the clean run's top token at the read position)."""

    target: TokenSpec = None
    name: str = "log_prob"

    def __call__(self, readout: Readout) -> Float[Tensor, " batch"]:
        """The patched run's log-probability of ``target``, per example."""
        target = select_tokens(self.target, readout, default=readout.clean)
        return _gather(readout.logits.float().log_softmax(-1), target)

    def check(self, batch: int, seq: int, d_vocab: int) -> None:
        """Raise if ``target`` does not fit a run of this shape and vocabulary."""
        check_token_spec(self.target, "target", batch, seq, d_vocab)


@dataclass(frozen=True)
class KLToClean(Metric):
    """``KL(clean || patched)`` of the next-token distributions, in nats (0 = the clean prediction)."""

    name: str = "kl"

    def __call__(self, readout: Readout) -> Float[Tensor, " batch"]:
        """``KL(clean || patched)`` per example, in nats."""
        return kl_divergence(readout.clean, readout.logits)


@dataclass(frozen=True)
class FunctionMetric(Metric):
    """Wraps a plain function ``readout -> [batch]`` as a metric."""

    function: Callable[[Readout], Tensor]
    name: str = "metric"

    def __call__(self, readout: Readout) -> Float[Tensor, " batch"]:
        """The wrapped function's value on ``readout``, as a tensor."""
        value = self.function(readout)
        return torch.as_tensor(value, device=value.device if isinstance(value, Tensor) else readout.logits.device)


METRICS: dict[str, type[Metric]] = {"logit_diff": LogitDiff, "log_prob": LogProb, "kl": KLToClean}


def resolve_metric(metric: Any) -> Metric:
    """A :class:`Metric`, a metric name (``"logit_diff"``, ``"log_prob"``, ``"kl"``) or a function of a readout.

    Example:
        >>> from forethought.interventions import resolve_metric
        >>> resolve_metric("kl").name
        'kl'
    """
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        if metric not in METRICS:
            raise InvalidArgumentError(f"metric={metric!r} is unknown; choose one of {choices_text(METRICS)}, "
                                       "or pass a Metric such as LogitDiff(answer, wrong)")
        return METRICS[metric]()
    if callable(metric):
        return FunctionMetric(metric, name=getattr(metric, "__name__", "metric"))
    raise InvalidArgumentError(f"metric={metric!r} is not a metric; pass a name, a Metric or a function")


def kl_divergence(reference: Float[Tensor, "batch d_vocab"], other: Float[Tensor, "batch d_vocab"]
                  ) -> Float[Tensor, " batch"]:
    """``KL(softmax(reference) || softmax(other))`` per row, in nats; never below 0 (float rounding is clamped)."""
    log_p, log_q = reference.float().log_softmax(-1), other.float().log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).clamp_min(0.0)


def select_tokens(spec: TokenSpec, readout: Readout, default: Tensor) -> Int[Tensor, " batch"]:
    """The ``[batch]`` token ids a token spec names at ``readout.pos`` (``None``: ``default``'s top token)."""
    batch = readout.logits.shape[0]
    device = readout.logits.device
    if spec is None:
        return default.argmax(-1)
    if isinstance(spec, int):
        return torch.full((batch,), spec, device=device)
    spec = spec.to(device)
    if spec.ndim == 2:
        spec = spec[:, readout.pos]
    return spec.expand(batch)


def check_token_spec(spec: TokenSpec, name: str, batch: int, seq: int, d_vocab: int) -> None:
    """Raise if a token spec does not fit runs of ``[batch, seq]`` tokens over ``d_vocab`` logits."""
    if spec is None:
        return
    if isinstance(spec, bool) or not isinstance(spec, (int, Tensor)):
        raise InvalidArgumentError(f"{name}={spec!r} is not allowed; expected an int, a tensor or None")
    values = torch.as_tensor(spec, device=spec.device if isinstance(spec, Tensor) else "cpu")
    if values.is_floating_point() or values.is_complex():
        raise InvalidArgumentError(f"{name} must hold integer token ids; got dtype {values.dtype}")
    shape = tuple(values.shape)
    fits = values.ndim == 0 or (values.ndim <= 2 and shape[0] in (1, batch) and shape[1:] in ((), (seq,)))
    if not fits:
        raise InvalidArgumentError(f"{name} has shape {shape}; expected an int, ({batch},) or ({batch}, {seq})")
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= d_vocab):
        bad = int(values.min()) if int(values.min()) < 0 else int(values.max())
        raise VocabularyMismatchError(f"{name} token id {bad} is outside the vocabulary [0, {d_vocab})")


def _gather(values: Float[Tensor, "batch d_vocab"], tokens: Int[Tensor, " batch"]) -> Float[Tensor, " batch"]:
    return values.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
