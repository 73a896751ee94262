"""Myopia measurements: validation loss by position for each regime, the transformer bigram, the myopia gap.

Definitions (all losses are next-token cross-entropies in nats, on validation sequences of ``T`` tokens):

* ``loss_by_position[t]``: mean over sequences of the loss of predicting token ``t + 1`` from tokens ``0..t``
  (``t = 0 .. T - 2``), with the model run as its regime defines (see :mod:`~forethought.myopic_training.regimes`).
* ``eval_loss``: the mean over all predicted tokens (= the mean of ``loss_by_position``).
* ``myopia_gap = eval_loss(myopic) - eval_loss(vanilla)``: what a model loses when its training may not prepare
  earlier positions for later ones. Positive means pre-caching helps; near zero suggests breadcrumbs.
* ``bigram_gap = eval_loss(bigram) - eval_loss(vanilla)``: what access to earlier tokens is worth at all.
* ``myopia_gap_fraction = myopia_gap / bigram_gap``: the share of that worth lost to myopia.
* ``local_myopia_gap = eval_loss(local-myopic) - eval_loss(vanilla)``.

Example:
    >>> import torch
    >>> from forethought.models import tiny_model
    >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
    >>> tokens = torch.randint(0, 20, (4, 8))
    >>> report = evaluate_regimes({"vanilla": model, "myopic": model, "bigram": model}, tokens)
    >>> report.myopia_gap
    0.0
    >>> len(report.regimes["bigram"].loss_by_position)
    7
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from forethought.data import TokenSplits, check_tokens_fit
from forethought.errors import InvalidArgumentError, NumericalError, check_positive
from forethought.myopic_training.regimes import REGIMES, RegimeModel


def position_loss_sums(
    model: Any | RegimeModel,
    tokens: Int[Tensor, "n_seq pos"],
    batch_size: int = 32,
    progress: bool = False,
) -> Float[Tensor, " targets"]:
    """Sum over sequences of the next-token loss at each position (float64, on CPU).

    ``model`` is a ``TransformerBridge`` (run as it is) or a :class:`RegimeModel` (run in its regime's forward).
    The model is put in eval mode for the pass and restored afterwards.
    """
    regime_model = model if isinstance(model, RegimeModel) else RegimeModel(model)
    bridge = regime_model.model
    check_positive("batch_size", batch_size, integer=True)
    check_tokens_fit(bridge, tokens)
    if tokens.shape[1] < 2:
        raise InvalidArgumentError(f"sequences of {tokens.shape[1]} token(s) have no next token; need at least 2")
    device = next(bridge.parameters()).device
    sums = torch.zeros(tokens.shape[1] - 1, dtype=torch.float64)
    was_training = bridge.training
    bridge.eval()
    try:
        with torch.no_grad(), regime_model.forward_context():
            for start in tqdm(range(0, len(tokens), batch_size), desc="eval", disable=not progress, leave=False):
                batch = tokens[start : start + batch_size].to(device)
                per_token = bridge(batch, return_type="loss", loss_per_token=True)
                sums += per_token.detach().double().sum(0).cpu()
    finally:
        bridge.train(was_training)
    if not torch.isfinite(sums).all():
        raise NumericalError("the validation loss is NaN or infinite; the model's weights or inputs are not finite")
    return sums


def loss_by_position(
    model: Any | RegimeModel,
    tokens: Int[Tensor, "n_seq pos"],
    batch_size: int = 32,
    progress: bool = False,
) -> Float[Tensor, " targets"]:
    """Mean next-token loss at each position: entry ``t`` is the loss of predicting token ``t + 1``.

    Example:
        >>> from forethought.models import tiny_model
        >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> loss_by_position(model, torch.randint(0, 20, (3, 8))).shape
        torch.Size([7])
    """
    return position_loss_sums(model, tokens, batch_size=batch_size, progress=progress) / len(tokens)


@dataclass
class RegimeLoss:
    """Validation loss of one model: overall and by position."""

    eval_loss: float
    loss_by_position: list[float]
    regime: str = "vanilla"
    n_sequences: int = 0


@dataclass
class MyopiaReport:
    """Loss of every regime and the gaps between them (see the module docstring for definitions)."""

    regimes: dict[str, RegimeLoss]
    myopia_gap: float | None = None
    bigram_gap: float | None = None
    myopia_gap_fraction: float | None = None
    local_myopia_gap: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``{"regimes": {name: {"eval_loss", "loss_by_position", ...}}, "myopia_gap": ..., ...}``."""
        result = asdict(self)
        result.update(result.pop("extra"))
        return result

    def to_frame(self) -> Any:
        """A tidy ``pandas.DataFrame``: one row per (regime, position) with its loss."""
        import pandas as pd

        rows = [{"regime": name, "position": position, "loss": loss}
                for name, result in self.regimes.items() for position, loss in enumerate(result.loss_by_position)]
        return pd.DataFrame(rows, columns=["regime", "position", "loss"])


def evaluate_regimes(
    models: Mapping[str, Any],
    data: TokenSplits | Int[Tensor, "n_seq pos"],
    batch_size: int = 32,
    progress: bool = False,
) -> MyopiaReport:
    """Validation loss (overall and by position) of each model, and the myopia gap.

    Args:
        models: name → ``TransformerBridge`` or :class:`RegimeModel`. A bare model whose name is a regime
            (``"bigram"``) is run in that regime's forward (past ablation); other bare models are run as they
            are. Gaps use the entries named ``"vanilla"``, ``"myopic"``, ``"bigram"`` and ``"local-myopic"``
            when present.
        data: validation token sequences, or a :class:`~forethought.data.TokenSplits` (its validation split).
        batch_size: sequences per forward pass.

    Returns:
        A :class:`MyopiaReport`.
    """
    if not models:
        raise InvalidArgumentError("models is empty; pass at least one model, e.g. {'vanilla': model}")
    tokens = data.validation if isinstance(data, TokenSplits) else data
    results = {}
    for name, model in models.items():
        if not isinstance(model, RegimeModel):
            model = RegimeModel(model, name if name in REGIMES and name != "myopic" else "vanilla")
        by_position = loss_by_position(model, tokens, batch_size=batch_size, progress=progress)
        results[name] = RegimeLoss(eval_loss=by_position.mean().item(), loss_by_position=by_position.tolist(),
                                   regime=model.regime, n_sequences=len(tokens))

    def gap(name: str) -> float | None:
        if name in results and "vanilla" in results:
            return results[name].eval_loss - results["vanilla"].eval_loss
        return None

    myopia_gap, bigram_gap = gap("myopic"), gap("bigram")
    fraction = myopia_gap / bigram_gap if myopia_gap is not None and bigram_gap else None
    return MyopiaReport(regimes=results, myopia_gap=myopia_gap, bigram_gap=bigram_gap,
                        myopia_gap_fraction=fraction, local_myopia_gap=gap("local-myopic"))


def plot_report(report: MyopiaReport, baseline: str = "vanilla") -> dict[str, Any]:
    """The two figures of a report: loss by position per regime, and each regime's loss minus ``baseline``'s.

    Returns ``{"loss_by_position": Figure, "loss_difference": Figure}`` (the second only when ``baseline`` is in
    the report); save them with :func:`forethought.reporting.save_figure`.
    """
    from forethought.plots import plot_loss_by_position, plot_loss_difference

    frame = report.to_frame()
    figures = {"loss_by_position": plot_loss_by_position(frame)}
    if baseline in report.regimes and len(report.regimes) > 1:
        figures["loss_difference"] = plot_loss_difference(frame, baseline=baseline)
    return figures
