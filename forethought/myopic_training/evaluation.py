"""Myopia measurements: validation loss by position for each regime, the transformer bigram, the myopia gap.

Definitions (all losses are next-token cross-entropies in nats, on validation sequences of ``T`` tokens):

* ``loss_by_position[t]``: mean over sequences of the loss of predicting token ``t + 1`` from tokens ``0..t``
  (``t = 0 .. T - 2``, :func:`forethought.losses.loss_by_position`), with the model run as its regime defines
  (see :mod:`~forethought.myopic_training.regimes`).
* ``eval_loss``: the mean over all predicted tokens (= the mean of ``loss_by_position``).
* the gaps each regime defines (:attr:`forethought.regimes.Regime.gaps`), ``eval_loss(regime) -
  eval_loss(reference)``; the built-in ones:

  * ``myopia_gap = eval_loss(myopic) - eval_loss(vanilla)``: what a model loses when its training may not prepare
    earlier positions for later ones. Positive means pre-caching helps; near zero suggests breadcrumbs.
  * ``bigram_gap = eval_loss(bigram) - eval_loss(vanilla)``: what access to earlier tokens is worth at all.
  * ``local_myopia_gap = eval_loss(local-myopic) - eval_loss(vanilla)``.

* ``myopia_gap_fraction = myopia_gap / bigram_gap``: the share of what the past is worth that myopia loses.

Every gap is paired (the same validation sequences for every model) and carries a 95 % bootstrap interval over
sequences (:class:`Gap`; in the JSON ``myopia_gap_ci_low``, ``myopia_gap_ci_high``, ...), overall and at every
position (:attr:`MyopiaReport.gaps_by_position`); each regime's entry records how the model was trained
(``trained_as``) and how it was run for scoring (``forward``: ``"vanilla"`` is a plain forward, ``"bigram"``
ablates the past).

Example:
    >>> import torch
    >>> from forethought.models import tiny_model
    >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
    >>> tokens = torch.randint(0, 20, (4, 8))
    >>> report = evaluate_regimes({"vanilla": model, "myopic": model, "bigram": model}, tokens)
    >>> report.gaps["myopia_gap"].value
    0.0
    >>> report  # doctest: +ELLIPSIS
    MyopiaReport(eval_loss: vanilla ...; myopia_gap +0.0000 [95% CI +0.0000, +0.0000]; bigram_gap ...; 4 sequences)
    >>> len(report.regimes["bigram"].loss_by_position)
    7
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from jaxtyping import Float, Int
from torch import Tensor

from forethought.bootstrap import N_RESAMPLES, bootstrap_ci
from forethought.data import TokenSplits
from forethought.errors import InvalidArgumentError
from forethought.losses import loss_by_position, token_losses  # noqa: F401 - loss_by_position is re-exported
from forethought.myopic_training.regimes import RegimeModel
from forethought.regimes import REGIMES, registered_gaps

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from transformer_lens.model_bridge import TransformerBridge


def position_loss_sums(
    model: TransformerBridge | RegimeModel,
    tokens: Int[Tensor, "n_seq pos"],
    batch_size: int = 32,
    progress: bool = False,
) -> Float[Tensor, " targets"]:
    """Sum over sequences of the next-token loss at each position (float64, on CPU).

    ``model`` is a ``TransformerBridge`` (run as it is) or a :class:`RegimeModel` (run in its regime's forward).
    The model is put in eval mode for the pass and restored afterwards.
    """
    return sequence_losses(model, tokens, batch_size=batch_size, progress=progress).sum(0)


def sequence_losses(
    model: TransformerBridge | RegimeModel,
    tokens: Int[Tensor, "n_seq pos"],
    batch_size: int = 32,
    progress: bool = False,
) -> Float[Tensor, "n_seq targets"]:
    """The next-token loss of every sequence at every position (float64, on CPU).

    This is the unit a bootstrap over sequences resamples: :func:`forethought.losses.token_losses`, run in the
    regime's forward when ``model`` is a :class:`RegimeModel` (see :func:`position_loss_sums`).
    """
    regime_model = model if isinstance(model, RegimeModel) else RegimeModel(model)
    with regime_model.forward_context():
        return token_losses(regime_model.model, tokens, batch_size=batch_size, progress=progress)


@dataclass
class RegimeLoss:
    """Validation loss of one model: overall (with a bootstrap interval over sequences) and by position.

    Attributes:
        trained_as: how the model was trained (``"vanilla"``, ``"myopic"``, ...; None when not known).
        forward: how it was run for scoring (``"vanilla"``: a plain forward; ``"bigram"``: past ablated; ...).
    """

    eval_loss: float
    loss_by_position: list[float]
    trained_as: str | None = None
    forward: str = "vanilla"
    n_sequences: int = 0
    eval_loss_ci_low: float | None = None
    eval_loss_ci_high: float | None = None


@dataclass
class PositionGap:
    """One model's loss minus the baseline's at every position, with 95 % bootstrap intervals over sequences."""

    gap: list[float]
    ci_low: list[float]
    ci_high: list[float]


@dataclass
class Gap:
    """``eval_loss(regime) - eval_loss(reference)`` on the same sequences, with its 95 % paired bootstrap interval."""

    value: float
    ci_low: float
    ci_high: float
    regime: str
    reference: str


@dataclass(repr=False)
class MyopiaReport:
    """Loss of every regime and the gaps between them (see the module docstring for definitions).

    Attributes:
        regimes: name → its loss.
        gaps: gap name → :class:`Gap`, for every gap whose regimes were both scored (``"myopia_gap"``, ...).
        baseline: the model every per-position gap is taken against.
        gaps_by_position: name → its loss minus the baseline's at every position.
    """

    regimes: dict[str, RegimeLoss]
    gaps: dict[str, Gap] = field(default_factory=dict)
    baseline: str = "vanilla"
    gaps_by_position: dict[str, PositionGap] = field(default_factory=dict)
    n_resamples: int = N_RESAMPLES
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def myopia_gap_fraction(self) -> float | None:
        """``myopia_gap / bigram_gap`` (None without both, or when the bigram gap is 0)."""
        myopia, bigram = self.gaps.get("myopia_gap"), self.gaps.get("bigram_gap")
        return myopia.value / bigram.value if myopia is not None and bigram is not None and bigram.value else None

    def to_dict(self) -> dict[str, Any]:
        """``{"regimes": {name: {"eval_loss", ...}}, "myopia_gap": ..., "myopia_gap_ci_low": ..., ...}``.

        Every registered gap has its three entries (``None`` when its regimes were not both scored).
        """
        result: dict[str, Any] = {"regimes": {name: asdict(loss) for name, loss in self.regimes.items()}}
        for name in dict.fromkeys([*registered_gaps(), *self.gaps]):
            gap = self.gaps.get(name)
            result.update({name: gap and gap.value, f"{name}_ci_low": gap and gap.ci_low,
                           f"{name}_ci_high": gap and gap.ci_high})
        result.update(myopia_gap_fraction=self.myopia_gap_fraction, baseline=self.baseline,
                      gaps_by_position={name: asdict(gap) for name, gap in self.gaps_by_position.items()},
                      n_resamples=self.n_resamples, **self.extra)
        return result

    def to_frame(self) -> pd.DataFrame:
        """A tidy ``pandas.DataFrame``: one row per (regime, position).

        Each row has its loss, its gap to the baseline and the gap's bootstrap interval (``gap``, ``gap_ci_low``,
        ``gap_ci_high``; NaN for the baseline itself).
        """
        nan = float("nan")
        rows = []
        for name, result in self.regimes.items():
            gaps = self.gaps_by_position.get(name)
            for position, loss in enumerate(result.loss_by_position):
                rows.append({"regime": name, "position": position, "loss": loss,
                             "gap": gaps.gap[position] if gaps else nan,
                             "gap_ci_low": gaps.ci_low[position] if gaps else nan,
                             "gap_ci_high": gaps.ci_high[position] if gaps else nan})
        return pd.DataFrame(rows, columns=["regime", "position", "loss", "gap", "gap_ci_low", "gap_ci_high"])

    def plot(self, kind: Literal["loss_by_position", "loss_difference"] = "loss_by_position",
             baseline: str | None = None) -> Figure:
        """One figure of the report; :func:`plot_report` gives both.

        ``kind`` is ``"loss_by_position"`` (one line per regime) or ``"loss_difference"`` (each regime minus
        ``baseline``, default the report's, with its bootstrap band).
        """
        from forethought.plots import plot_loss_by_position, plot_loss_difference

        if kind == "loss_by_position":
            return plot_loss_by_position(self.to_frame())
        if kind != "loss_difference":
            raise InvalidArgumentError(f"kind={kind!r} is unknown; choose 'loss_by_position' or 'loss_difference'")
        baseline = self.baseline if baseline is None else baseline
        if baseline not in self.regimes or len(self.regimes) < 2:
            raise InvalidArgumentError(f"a loss difference needs the baseline {baseline!r} and another regime; the "
                                       f"report has {', '.join(self.regimes)}")
        return plot_loss_difference(self.to_frame(), baseline=baseline)

    def __repr__(self) -> str:
        losses = ", ".join(f"{name} {result.eval_loss:.4f}" for name, result in self.regimes.items())
        gaps = "".join(f"; {name} {format_gap(self, name)}" for name in self.gaps)
        n = next(iter(self.regimes.values())).n_sequences if self.regimes else 0
        return f"MyopiaReport(eval_loss: {losses}{gaps}; {n} sequences)"


def evaluate_regimes(
    models: Mapping[str, Any],
    data: TokenSplits | Int[Tensor, "n_seq pos"],
    batch_size: int = 32,
    progress: bool = False,
    trained_as: Mapping[str, str | None] | None = None,
    baseline: str = "vanilla",
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> MyopiaReport:
    """Validation loss (overall and by position) of each model, and the myopia gap with bootstrap intervals.

    Args:
        models: name → ``TransformerBridge`` or :class:`RegimeModel`. A bare model whose name is a registered
            regime (``"bigram"``) is run in that regime's forward (past ablation); other bare models are run as they
            are. Each gap a regime defines (:attr:`forethought.regimes.Regime.gaps`) is taken between the entries
            named after the regime and its reference, when both are present.
        data: validation token sequences, or a :class:`~forethought.data.TokenSplits` (its validation split).
        batch_size: sequences per forward pass.
        progress: show a progress bar.
        trained_as: name → how that model was trained, for the report (default: the name when it is a regime).
        baseline: the model every per-position gap is taken against.
        n_resamples: resamples of the bootstrap over validation sequences.
        seed: seeds the bootstrap.

    Returns:
        A :class:`MyopiaReport`.
    """
    if not models:
        raise InvalidArgumentError("models is empty; pass at least one model, e.g. {'vanilla': model}")
    tokens = data.validation if isinstance(data, TokenSplits) else data
    trained_as = dict(trained_as or {})
    results, losses = {}, {}
    for name, model in models.items():
        if not isinstance(model, RegimeModel):
            model = RegimeModel(model, name if name in REGIMES else "vanilla")
        losses[name] = sequence_losses(model, tokens, batch_size=batch_size, progress=progress)  # [seq, pos]
        by_position = losses[name].mean(0)
        low, high = bootstrap_ci(losses[name].mean(1), n_resamples=n_resamples, seed=seed)
        results[name] = RegimeLoss(eval_loss=by_position.mean().item(), loss_by_position=by_position.tolist(),
                                   trained_as=trained_as.get(name, name if name in REGIMES else None),
                                   forward=REGIMES[model.regime].forward_name, n_sequences=len(tokens),
                                   eval_loss_ci_low=low.item(), eval_loss_ci_high=high.item())

    by_position = {}
    if baseline in losses:
        for name in losses:
            if name != baseline:
                difference = (losses[name] - losses[baseline]).T  # [pos, seq]
                low, high = bootstrap_ci(difference, n_resamples=n_resamples, seed=seed)
                by_position[name] = PositionGap(gap=difference.mean(1).tolist(), ci_low=low.tolist(),
                                                ci_high=high.tolist())
    gaps = {}
    for name, (regime, reference) in registered_gaps().items():
        if regime in losses and reference in losses:
            low, high = bootstrap_ci((losses[regime] - losses[reference]).mean(1), n_resamples=n_resamples, seed=seed)
            gaps[name] = Gap(results[regime].eval_loss - results[reference].eval_loss, low.item(), high.item(),
                             regime, reference)
    return MyopiaReport(regimes=results, gaps=gaps, baseline=baseline, gaps_by_position=by_position,
                        n_resamples=n_resamples)


def format_gap(report: MyopiaReport, gap: str = "myopia_gap") -> str:
    """``"+0.1760 [95% CI +0.1601, +0.1915]"``, or ``"n/a"`` when the report lacks the gap's regimes."""
    if gap not in report.gaps:
        return "n/a"
    found = report.gaps[gap]
    return f"{found.value:+.4f} [95% CI {found.ci_low:+.4f}, {found.ci_high:+.4f}]"


def plot_report(report: MyopiaReport, baseline: str = "vanilla") -> dict[str, Any]:
    """The two figures of a report: loss by position per regime, and each regime's loss minus ``baseline``'s.

    Returns ``{"loss_by_position": Figure, "loss_difference": Figure}`` (the second only when ``baseline`` is in
    the report); save them with :func:`forethought.reporting.save_figure`.
    """
    figures = {"loss_by_position": report.plot("loss_by_position")}
    if baseline in report.regimes and len(report.regimes) > 1:
        figures["loss_difference"] = report.plot("loss_difference", baseline=baseline)
    return figures
