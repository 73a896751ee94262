"""Probe methods: each is one object, registered here, that a sweep fits by name.

A method (:class:`ProbeMethod`) says everything a sweep needs to know about it:

* ``name``, and ``config_type``: its settings dataclass (found on :class:`~forethought.probes.ProbeSweepConfig`
  under its name, as ``config.vocab``, or in ``config.methods[name]``; see :meth:`ProbeMethod.settings`);
* what examples it needs: every method reads the features and the class labels; ``needs_resid`` asks for the
  final-layer residual at ``t + N`` too (the lens methods);
* whether it streams (``streams``: it trains from an on-disk feature store a chunk or minibatch at a time; if
  not, ``no_stream`` says why) and whether it fits control tasks (``has_control``);
* how it fits: :meth:`ProbeMethod.fit` turns a :class:`~forethought.probes.plan.SweepPlan` and the training
  examples into the probes of every (layer, offset) pair, and those of the control tasks;
* how its probes save and load: ``probes_type``, the :class:`~forethought.probes.linear.AffineProbes` subclass it
  returns (:mod:`forethought.probes.io` saves and loads every registered method's type by its ``kind``).

:func:`register` adds a method (a class decorator); :func:`get_method` and :func:`method_names` read the registry.
Adding a method is one class here (or in the caller's own code) and its test.

Example:
    >>> method_names()
    ('vocab', 'logistic', 'future_lens', 'ridge', 'learned_prompt')
    >>> get_method("future_lens").needs_resid, [name for name in method_names() if get_method(name).streams]
    (True, ['vocab', 'future_lens', 'ridge'])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import fields, replace
from typing import Any, ClassVar

from forethought.errors import InvalidArgumentError, choices_text
from forethought.probes.future_lens import FutureLens, FutureLensConfig, fit_future_lens, fit_label_lens, fit_ridge_lens
from forethought.probes.learned_prompt import LearnedPromptConfig, LearnedPrompts, fit_learned_prompt
from forethought.probes.linear import AffineProbes, LinearProbes, feature_stats
from forethought.probes.logistic import LogisticProbeConfig, fit_logistic_probes
from forethought.probes.plan import SweepPlan, TrainingExamples
from forethought.probes.vocabulary import VocabProbeConfig, fit_vocab_probes

#: A method's fitted probes and those of its control tasks (None without them).
Fitted = tuple[AffineProbes, AffineProbes | None]


class ProbeMethod(ABC):
    """A probe method of a sweep; subclass it, set the class attributes, write :meth:`fit`, and :func:`register` it.

    Attributes:
        name: the method's name (``method=`` of :func:`~forethought.probes.probe_sweep`, ``--method``).
        config_type: its settings dataclass (None: it has none).
        probes_type: the probes it returns (saved and loaded by their ``kind``).
        needs_resid: whether it reads the final-layer residual at ``t + N`` (``Examples.future_resid``).
        streams: whether it trains from an on-disk feature store (``stream=True``).
        no_stream: why it cannot (named when ``stream=True`` is refused).
        has_control: whether it fits the control tasks (else the table's ``control_top1`` is NaN).
    """

    name: ClassVar[str]
    config_type: ClassVar[type | None] = None
    probes_type: ClassVar[type[AffineProbes]] = LinearProbes
    needs_resid: ClassVar[bool] = False
    streams: ClassVar[bool] = False
    no_stream: ClassVar[str] = "it fits from examples held in memory"
    has_control: ClassVar[bool] = True

    def settings(self, config: Any) -> Any:
        """This method's settings from a :class:`~forethought.probes.ProbeSweepConfig` (its defaults if absent)."""
        if self.name in {f.name for f in fields(config)}:
            return getattr(config, self.name)
        if self.name in config.methods:
            return config.methods[self.name]
        return self.config_type() if self.config_type is not None else None

    def trainer_settings(self, plan: SweepPlan) -> Any:
        """This method's minibatch-training settings for ``plan``: its seed, its device and its progress bar."""
        return replace(self.settings(plan.config), seed=plan.seed, device=str(plan.device), progress=plan.progress)

    @abstractmethod
    def fit(self, plan: SweepPlan, examples: TrainingExamples) -> Fitted:
        """Fit the probes of every (layer, offset) of ``plan`` at once, and (with controls) the control tasks'.

        Returns:
            The probes of ``plan.tasks``, and those of ``plan.control_tasks`` (None without
            ``plan.config.control`` or ``has_control``), both on ``plan.device``.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


_REGISTRY: dict[str, ProbeMethod] = {}


def register(cls: type[ProbeMethod]) -> type[ProbeMethod]:
    """Register a :class:`ProbeMethod` subclass under its ``name`` (a class decorator; a name is taken once)."""
    if cls.name in _REGISTRY:
        raise InvalidArgumentError(f"a probe method named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls()
    return cls


def unregister(name: str) -> None:
    """Remove a registered method (for tests that register their own)."""
    _REGISTRY.pop(name, None)


def method_names() -> tuple[str, ...]:
    """The registered methods' names, in the order they were registered."""
    return tuple(_REGISTRY)


def get_method(name: str) -> ProbeMethod:
    """The registered method ``name``; raises :class:`~forethought.errors.InvalidArgumentError` if unknown."""
    if name not in _REGISTRY:
        raise InvalidArgumentError(f"method={name!r} is unknown; choose from {choices_text(method_names())}")
    return _REGISTRY[name]


def probe_types() -> dict[str, type[AffineProbes]]:
    """Every registered method's probe type by its ``kind`` (what :mod:`forethought.probes.io` saves and loads)."""
    return {method.probes_type.kind: method.probes_type for method in _REGISTRY.values()}


def split_controls(plan: SweepPlan, probes: AffineProbes) -> Fitted:
    """Probes fitted on ``plan.tasks + plan.control_tasks`` as one stack, split into the two sets."""
    control = probes.select(tasks=plan.control_tasks) if plan.control_tasks else None
    return probes.select(tasks=plan.tasks), control


@register
class VocabMethod(ProbeMethod):
    """Direct softmax-regression probes, every pair trained at once with AdamW (:mod:`.vocabulary`); streams."""

    name = "vocab"
    config_type = VocabProbeConfig
    streams = True

    def fit(self, plan: SweepPlan, examples: TrainingExamples) -> Fitted:  # noqa: D102
        trainer = self.trainer_settings(plan)
        fit, val = examples.fit, examples.val
        probes = fit_vocab_probes(fit.features, examples.labels(fit), n_classes=plan.space.n_classes,
                                  val_features=val.features, val_labels=examples.labels(val), config=trainer,
                                  layers=plan.layers, tasks=plan.tasks + plan.control_tasks, label_space=plan.space)
        return split_controls(plan, probes)


@register
class LogisticMethod(ProbeMethod):
    """The same probes fitted one by one by scikit-learn on the training and held-out examples (:mod:`.logistic`)."""

    name = "logistic"
    config_type = LogisticProbeConfig
    no_stream = ("scikit-learn's L-BFGS solver reads every example of a probe at once; 'vocab' trains the same "
                 "softmax probes from disk")

    def fit(self, plan: SweepPlan, examples: TrainingExamples) -> Fitted:  # noqa: D102
        both = examples.fit.cat(examples.val)
        probes = fit_logistic_probes(both.features, examples.labels(both), n_classes=plan.space.n_classes,
                                     config=replace(self.settings(plan.config), progress=plan.progress),
                                     layers=plan.layers, tasks=plan.tasks + plan.control_tasks,
                                     label_space=plan.space).to(plan.device)
        return split_controls(plan, probes)


@register
class FutureLensMethod(ProbeMethod):
    """The Future-Lens linear model: least squares, then KL fine-tuning; its control is a lens on hard labels.

    Streams: the least squares from sufficient statistics, the fine-tuning a minibatch at a time.
    """

    name = "future_lens"
    config_type = FutureLensConfig
    probes_type = FutureLens
    needs_resid = True
    streams = True

    def fit(self, plan: SweepPlan, examples: TrainingExamples) -> Fitted:  # noqa: D102
        config = self.trainer_settings(plan)
        fit, val = examples.fit, examples.val
        lens = fit_future_lens(fit.features, fit.future_resid, model=plan.model, val_features=val.features,
                               val_future_resid=val.future_resid, config=config, layers=plan.layers,
                               offsets=plan.offsets, label_space=plan.space)
        control = None
        if plan.control_tasks:
            control = fit_label_lens(fit.features, examples.control_labels(fit), model=plan.model,
                                     label_space=plan.space, tasks=plan.control_tasks,
                                     init_resid=feature_stats(fit.future_resid)[0].mean(0), val_features=val.features,
                                     val_labels=examples.control_labels(val), config=config, layers=plan.layers)
        return lens, control


@register
class RidgeMethod(ProbeMethod):
    """The least-squares lens alone, a ridge penalty per coordinate chosen on the held-out split; no control.

    Streams: everything comes from the sufficient statistics of the training and held-out splits.
    """

    name = "ridge"
    probes_type = FutureLens
    needs_resid = True
    streams = True
    has_control = False

    def fit(self, plan: SweepPlan, examples: TrainingExamples) -> Fitted:  # noqa: D102
        fit, val = examples.fit, examples.val
        return fit_ridge_lens(fit.features, fit.future_resid, model=plan.model, val_features=val.features,
                              val_future_resid=val.future_resid, layers=plan.layers, offsets=plan.offsets,
                              label_space=plan.space, seed=plan.seed), None


@register
class LearnedPromptMethod(ProbeMethod):
    """Future Lens' learned prompt: a soft prompt per pair, the state transplanted into it (:mod:`.learned_prompt`).

    Trained against the model's own distribution of the future token (``objective="model"``, from the future
    residuals) or the true token's class (``"tokens"``); no control task.
    """

    name = "learned_prompt"
    config_type = LearnedPromptConfig
    probes_type = LearnedPrompts
    needs_resid = True
    has_control = False

    def fit(self, plan: SweepPlan, examples: TrainingExamples) -> Fitted:  # noqa: D102
        config = self.trainer_settings(plan)
        fit, val = examples.fit, examples.val
        fit_targets, val_targets = ((fit.future_resid, val.future_resid) if config.objective == "model" else
                                    (fit.labels, val.labels))
        return fit_learned_prompt(fit.features, fit_targets, model=plan.model, val_features=val.features,
                                  val_targets=val_targets, config=config, layers=plan.layers, offsets=plan.offsets,
                                  label_space=plan.space), None
