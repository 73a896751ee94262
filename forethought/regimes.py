"""Training regimes, each one object, registered in one place (:data:`REGIMES`).

A :class:`Regime` says everything the package needs to train a model its way, score it, draw it and report it:

* ``forward``: the forward pass the regime scores with (and trains with, unless ``training`` says otherwise);
  ``None`` is the model's own forward;
* ``training``: the context of a training step when it differs from ``forward`` (myopic gradients);
* ``color``: its colour in every figure;
* ``gaps``: the gaps it defines, ``{gap name: the regime it is compared with}``: ``eval_loss(regime) -
  eval_loss(reference)``, with a paired bootstrap interval, in every myopia-gap report and size sweep;
* ``needs_past_model``: it reads the past from a separate frozen model (local myopia);
* ``settings``: the :class:`~forethought.config.TrainConfig` fields its training reads, recorded beside its runs.

A regime is *probed* (by ``probe-sweep --run`` and ``compare``) when it is scored with the model's own forward,
the one a probe reads. The built-in regimes:

* ``"vanilla"``: ordinary training and forward.
* ``"myopic"``: the forward is the vanilla one; gradients are myopic (:func:`~forethought.myopic_training.myopic`).
* ``"local-myopic"``: a frozen vanilla model supplies the past (:func:`~forethought.myopic_training.local_myopic`).
* ``"bigram"``: the paper's *transformer bigram*: every attention layer lets each position see only itself
  (:func:`~forethought.attention.ablate_past`), in training and in evaluation.

Adding a regime is one :func:`register_regime` call, here for a built-in one or in your own code; the command line
offers the regimes registered when it starts. Plain Python, importable without torch (the command line lists the
regimes at once): the built-in contexts import their implementations when first used.

Example:
    >>> REGIMES["bigram"].gaps, REGIMES["bigram"].probed, REGIMES["myopic"].forward_name
    ({'bigram_gap': 'vanilla'}, False, 'vanilla')
    >>> registered_gaps()["myopia_gap"]
    ('myopic', 'vanilla')
    >>> get_regime("lazy")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    forethought.errors.InvalidArgumentError: regime='lazy' is unknown; choose one of 'vanilla', 'myopic', ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from forethought.errors import InvalidArgumentError, check_choice

#: The name of the model's own forward (the ``forward`` a report records for a regime scored with it).
PLAIN = "vanilla"

#: ``forward(model, past_model)``: the context a regime's forward runs in.
ForwardFn = Callable[[Any, Any], AbstractContextManager]
#: ``training(model, config, past_model)``: the context a regime's training step runs in.
TrainingFn = Callable[[Any, Any, Any], AbstractContextManager]


@dataclass(frozen=True)
class Regime:
    """One training regime (see the module docstring).

    Attributes:
        name: how commands, configs, run directories and reports name it.
        color: its colour in every figure (a matplotlib colour).
        forward: ``forward(model, past_model)``, the context of its forward pass; ``None``: the model's own.
        training: ``training(model, config, past_model)``, the context of a training step; ``None``: ``forward``.
        gaps: ``{gap name: reference regime}``: the gaps ``eval_loss(name) - eval_loss(reference)`` it defines.
        needs_past_model: it reads the past from a frozen ``past_model``.
        settings: the ``TrainConfig`` fields its training reads (recorded beside its runs).
        description: one line for the documentation.
    """

    name: str
    color: str
    forward: ForwardFn | None = None
    training: TrainingFn | None = None
    gaps: Mapping[str, str] = field(default_factory=dict)
    needs_past_model: bool = False
    settings: tuple[str, ...] = ()
    description: str = ""

    @property
    def probed(self) -> bool:
        """Whether probes read it: only a regime scored with the model's own forward (the one a probe runs)."""
        return self.forward is None

    @property
    def forward_name(self) -> str:
        """How a report names its scoring forward: the regime's name, or :data:`PLAIN` for the model's own."""
        return PLAIN if self.forward is None else self.name

    def forward_context(self, model: Any, past_model: Any = None) -> AbstractContextManager:
        """The context in which ``model`` runs this regime's forward."""
        if self.needs_past_model and past_model is None:
            raise InvalidArgumentError(f"regime {self.name!r} needs past_model (the frozen model supplying the past)")
        return nullcontext(model) if self.forward is None else self.forward(model, past_model)

    def training_context(self, model: Any, config: Any, past_model: Any = None) -> AbstractContextManager:
        """The context of one training step of ``model`` with ``config`` (a ``TrainConfig``)."""
        if self.training is None:
            return self.forward_context(model, past_model)
        return self.training(model, config, past_model)


#: Every registered regime by name, in registration order (the built-in ones first).
REGIMES: dict[str, Regime] = {}


def register_regime(regime: Regime) -> Regime:
    """Add ``regime`` to :data:`REGIMES` and return it; a name or gap already registered is refused.

    Example:
        >>> toy = register_regime(Regime("toy", color="#2ca02c", gaps={"toy_gap": "vanilla"}))
        >>> "toy" in REGIMES, registered_gaps()["toy_gap"]
        (True, ('toy', 'vanilla'))
        >>> del REGIMES["toy"]
    """
    if not isinstance(regime, Regime):
        raise InvalidArgumentError(f"register_regime takes a Regime, not {type(regime).__name__}")
    if regime.name in REGIMES:
        raise InvalidArgumentError(f"regime {regime.name!r} is already registered")
    taken = [gap for gap in regime.gaps if gap in registered_gaps()]
    if taken:
        raise InvalidArgumentError(f"gap {taken[0]!r} is already defined by regime {registered_gaps()[taken[0]][0]!r}")
    REGIMES[regime.name] = regime
    return regime


def get_regime(name: str) -> Regime:
    """The registered regime called ``name``; :class:`~forethought.errors.InvalidArgumentError` if there is none."""
    check_choice("regime", name, REGIMES)
    return REGIMES[name]


def registered_gaps() -> dict[str, tuple[str, str]]:
    """``{gap name: (regime, reference)}`` over every registered regime, in registration order."""
    return {gap: (regime.name, reference) for regime in REGIMES.values() for gap, reference in regime.gaps.items()}


def gap_definitions() -> dict[str, str]:
    """``{gap name: "eval_loss(regime) - eval_loss(reference)"}`` for every registered gap (the reports' legend)."""
    return {gap: f"eval_loss({regime}) - eval_loss({reference})"
            for gap, (regime, reference) in registered_gaps().items()}


def is_probed(name: str | None) -> bool:
    """Whether a model trained as ``name`` is probed (a name that is no regime, or ``None``, is)."""
    return name not in REGIMES or REGIMES[name].probed


# -- the built-in regimes: their implementations are imported when first used (torch) -------------------------------


def _myopic_gradient(model: Any, config: Any, past_model: Any = None) -> AbstractContextManager:
    from forethought.myopic_training.hooks import myopic

    return myopic(model, mode=config.mode, beta=config.beta)


def _frozen_past(model: Any, past_model: Any) -> AbstractContextManager:
    from forethought.myopic_training.regimes import local_myopic

    return local_myopic(model, past_model)


def _past_ablated(model: Any, past_model: Any = None) -> AbstractContextManager:
    from forethought.attention.ablation import ablate_past

    return ablate_past(model)


register_regime(Regime("vanilla", color="#1f77b4", description="ordinary training and forward"))
register_regime(Regime("myopic", color="#d62728", training=_myopic_gradient, gaps={"myopia_gap": "vanilla"},
                       settings=("mode", "beta"), description="the vanilla forward with myopic gradients"))
register_regime(Regime("local-myopic", color="#ff7f0e", forward=_frozen_past,
                       gaps={"local_myopia_gap": "vanilla"}, needs_past_model=True,
                       description="a frozen model supplies every earlier position's keys and values"))
register_regime(Regime("bigram", color="#7f7f7f", forward=_past_ablated, gaps={"bigram_gap": "vanilla"},
                       description="each position attends to itself only (transformer bigram)"))
