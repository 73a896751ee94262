"""What one model's probe sweep runs on: the sweep's settings, the plan of one model, its training examples.

:class:`ProbeSweepConfig` holds the settings of a whole sweep; :class:`SweepPlan` is one model's share of it
(the model, its depths and offsets, the label space, the device, the seed), the one object the sweep's steps
and every probe method (:mod:`forethought.probes.methods`) read; :class:`TrainingExamples` are the examples a
method fits on, with the control task's labels.

Example:
    >>> from forethought.probes.linear import Task
    >>> from forethought.probes.targets import LabelSpace
    >>> plan = SweepPlan(name="m", model=None, layers=[0, 1], offsets=[0, 2], space=LabelSpace.full(5),
    ...                  config=ProbeSweepConfig(), seed=0, device=torch.device("cpu"))
    >>> plan.tasks + plan.control_tasks == [Task(0), Task(2), Task(0, True), Task(2, True)]
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Int
from torch import Tensor

from forethought.bootstrap import N_RESAMPLES
from forethought.errors import InvalidArgumentError, check_positive
from forethought.probes.early_stopping import MinibatchFitConfig
from forethought.probes.examples import Examples
from forethought.probes.future_lens import FutureLensConfig
from forethought.probes.linear import Task
from forethought.probes.logistic import LogisticProbeConfig
from forethought.probes.targets import LabelSpace
from forethought.probes.vocabulary import VocabProbeConfig

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@dataclass
class ProbeSweepConfig:
    """Everything :func:`~forethought.probes.probe_sweep` needs besides the models, data, layers, offsets, methods.

    Attributes:
        top_k: restrict labels to the ``k`` most frequent future tokens of the training split plus
            ``"other"`` (None: the whole vocabulary).
        control: also train every probe on a Hewitt & Liang control task (doubles the probes).
        test_fraction: share of sequences held out for scoring when ``data`` is a token tensor.
        val_fraction: share of the training sequences held out for early stopping.
        batch_size: sequences per forward pass when collecting activations.
        eval_batch_size: examples per chunk when scoring.
        n_resamples: bootstrap resamples (over test sequences) for the ``top1_ci_low/high`` interval (95 %).
        feature_dtype: dtype the activations are stored in (e.g. ``torch.bfloat16`` halves their memory).
        stream_above_gib: with ``stream="auto"``, stream when the activations would take more than this (GiB).
        stream_dir: where a streaming sweep writes its temporary feature files (default: the system's
            temporary directory); they are deleted when the sweep ends.
        vocab, logistic, future_lens: settings of each method (their seeds and devices are set from the sweep).
        methods: settings of further registered methods, by name (a method missing here uses its defaults).
    """

    top_k: int | None = None
    control: bool = True
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    batch_size: int = 32
    eval_batch_size: int = 2048
    n_resamples: int = N_RESAMPLES
    feature_dtype: torch.dtype = torch.float32
    stream_above_gib: float = 4.0
    stream_dir: str | None = None
    vocab: VocabProbeConfig = field(default_factory=VocabProbeConfig)
    logistic: LogisticProbeConfig = field(default_factory=LogisticProbeConfig)
    future_lens: FutureLensConfig = field(default_factory=FutureLensConfig)
    methods: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_positive("batch_size", self.batch_size, integer=True)
        check_positive("eval_batch_size", self.eval_batch_size, integer=True)
        check_positive("n_resamples", self.n_resamples, integer=True)
        check_positive("stream_above_gib", self.stream_above_gib)
        if self.top_k is not None:
            check_positive("top_k", self.top_k, integer=True)
        for name in ("test_fraction", "val_fraction"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise InvalidArgumentError(f"{name}={value!r} is not allowed; expected 0 < {name} < 1")

    def with_max_epochs(self, max_epochs: int | None) -> ProbeSweepConfig:
        """This config with the epoch-trained methods capped at ``max_epochs`` (None: as is).

        They are vocab, future_lens and every registered method whose settings are a ``MinibatchFitConfig`` (a
        method without an entry in ``methods`` gets its default settings, capped).

        Example:
            >>> ProbeSweepConfig().with_max_epochs(3).future_lens.max_epochs
            3
        """
        if max_epochs is None:
            return self
        from forethought.probes.methods import get_method, method_names  # the registry imports this module

        own = {f.name for f in fields(self)}
        defaults = {name: get_method(name).config_type() for name in method_names()
                    if name not in own and name not in self.methods and get_method(name).config_type is not None
                    and issubclass(get_method(name).config_type, MinibatchFitConfig)}
        capped = {name: replace(value, max_epochs=max_epochs) for name, value in {**defaults, **self.methods}.items()
                  if isinstance(value, MinibatchFitConfig)}
        return replace(self, vocab=replace(self.vocab, max_epochs=max_epochs),
                       future_lens=replace(self.future_lens, max_epochs=max_epochs), methods={**self.methods, **capped})


@dataclass(frozen=True)
class SweepPlan:
    """One model's share of a sweep: what every step and every probe method reads.

    Attributes:
        name: the model's name in the table.
        model: the model probed (the lens methods decode through its final norm and unembedding).
        layers: the residual depths probed (under several processes, this process's share).
        offsets: the future offsets ``N``.
        space: the label space of every probe.
        config: the sweep's settings (each method's own under its name).
        seed: seeds the control task and every trainer.
        device: where the model runs and the probes train.
        progress: show progress bars.
        streamed: whether the examples are read from an on-disk feature store.
    """

    name: str
    model: TransformerBridge
    layers: list[int]
    offsets: list[int]
    space: LabelSpace
    config: Any  # ProbeSweepConfig
    seed: int
    device: torch.device
    progress: bool = False
    streamed: bool = False

    @property
    def tasks(self) -> list[Task]:
        """One task per offset: the true future token."""
        return [Task(offset) for offset in self.offsets]

    @property
    def control_tasks(self) -> list[Task]:
        """The control task of every offset (none without ``config.control``)."""
        return [Task(offset, control=True) for offset in self.offsets] if self.config.control else []


@dataclass(frozen=True)
class TrainingExamples:
    """The examples a method fits on: ``fit``, ``val`` (held out for early stopping) and the control labels.

    Attributes:
        fit: the training examples.
        val: the held-out examples (methods without early stopping train on both).
        controls: the control task's class of every current token, per offset ``[offset, d_vocab]``.
        control: whether the control tasks are fitted too.
    """

    fit: Examples
    val: Examples
    controls: Int[Tensor, "offset d_vocab"]
    control: bool = True

    def labels(self, examples: Examples) -> Int[Tensor, "task n"]:
        """The labels of ``examples``: the offsets', then (with ``control``) their control tasks'."""
        if not self.control:
            return examples.labels
        return torch.cat([examples.labels, self.control_labels(examples)])

    def control_labels(self, examples: Examples) -> Int[Tensor, "offset n"]:
        """The control task's labels of ``examples``, per offset."""
        return self.controls[:, examples.current]
