"""The result of the gradient split: :class:`GradientSplit` (tables, ``repr``, figure) and the figures over training.

:class:`GradientSplit` is what :func:`~forethought.myopic_training.gradient_split.gradient_split` returns;
:func:`plot_gradient_split` draws one (``GradientSplit.plot()``); :func:`split_history` turns the
``gradient_split`` entries of a trainer log into one frame, and :func:`plot_gradient_split_over_training` draws it
against the training step.

Example:
    >>> history = [{"step": 10, "gradient_split": [{"group": "total", "mode": "strict", "precaching_share": 0.4}]}]
    >>> split_history(history)["precaching_share"].tolist()
    [0.4]
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from forethought.errors import InvalidArgumentError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["TOTAL", "GradientSplit", "plot_gradient_split", "plot_gradient_split_over_training", "split_history"]

#: The group name of the whole model.
TOTAL = "total"


@dataclass
class GradientSplit:
    """The result of :func:`~forethought.myopic_training.gradient_split.gradient_split`.

    Attributes:
        rows: one dict per (group, mode) with the metrics of the expected gradient, the norms ``grad_norm``,
            ``myopic_norm``, ``precaching_norm`` and ``n_params``.
        per_batch: a tidy frame, one row per (batch, group, mode), with the same metrics for each batch alone.
        n_batches: batches the gradients were accumulated over.
        modes: the myopic modes measured.
        mean_loss: the mean of the batches' losses.
        groups: the parameter groups that received a gradient, in model order, then ``"total"``.
    """

    rows: list[dict[str, Any]]
    per_batch: pd.DataFrame
    n_batches: int
    modes: tuple[str, ...]
    mean_loss: float
    groups: list[str] = field(default_factory=list)

    def to_frame(self) -> pd.DataFrame:
        """One row per group × mode: the expected gradient's metrics and the per-batch spread of the share.

        The spread columns are ``share_batch_mean``, ``share_batch_std``, ``share_batch_min`` and
        ``share_batch_max``.
        """
        frame = pd.DataFrame(self.rows)
        spread = (self.per_batch.groupby(["group", "mode"], sort=False)["precaching_share"]
                  .agg(share_batch_mean="mean", share_batch_std="std", share_batch_min="min", share_batch_max="max")
                  .reset_index())
        return frame.merge(spread, on=["group", "mode"], how="left")

    def share(self, mode: str = "strict", group: str = TOTAL) -> float:
        """``precaching_share`` of the expected gradient for one group and mode."""
        for row in self.rows:
            if row["group"] == group and row["mode"] == mode:
                return row["precaching_share"]
        raise InvalidArgumentError(f"no gradient split for group={group!r}, mode={mode!r}; groups: "
                                   f"{', '.join(self.groups)}; modes: {', '.join(self.modes)}")

    def records(self) -> list[dict[str, Any]]:
        """:meth:`to_frame` as JSON-ready dicts (NaN becomes ``None``), e.g. for a training log."""
        return [{key: _json_number(value) for key, value in row.items()}
                for row in self.to_frame().to_dict("records")]

    def plot(self, title: str | None = None) -> Figure:
        """Bars: ``precaching_share`` of the expected gradient per group (one colour per mode); dots: each batch."""
        return plot_gradient_split(self.to_frame(), self.per_batch, title=title or
                                   f"Pre-caching share of the gradient ({self.n_batches} batches)")

    def __repr__(self) -> str:
        parts = []
        for mode in self.modes:
            batch = self.per_batch.query("group == @TOTAL and mode == @mode")["precaching_share"]
            spread = f" ± {batch.std():.3f}" if len(batch) > 1 else ""
            parts.append(f"{mode} {self.share(mode):.3f} (per batch {batch.mean():.3f}{spread})")
        return (f"GradientSplit({self.n_batches} batches, {len(self.groups) - 1} groups; total precaching_share: "
                f"{', '.join(parts)})")


def plot_gradient_split(frame: pd.DataFrame, per_batch: pd.DataFrame | None = None,
                        title: str | None = None) -> Figure:
    """Bars of ``precaching_share`` per group, hue = mode, with each batch's share as a dot.

    ``frame`` holds rows of :meth:`GradientSplit.to_frame`; ``per_batch``, when given, holds each batch's shares
    (:attr:`GradientSplit.per_batch`).

    Example:
        >>> frame = pd.DataFrame({"group": ["embed", "total"] * 2, "mode": ["strict"] * 2 + ["cutgrad"] * 2,
        ...                       "precaching_share": [0.3, 0.2, 0.1, 0.05]})
        >>> plot_gradient_split(frame).axes[0].get_xlabel()
        'precaching_share = ⟨g_p, g⟩ / ‖g‖²'
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    order = list(dict.fromkeys(frame["group"]))
    fig, ax = plt.subplots(figsize=(6.5, 1.2 + 0.32 * len(order)))
    sns.barplot(data=frame, y="group", x="precaching_share", hue="mode", order=order, orient="h", ax=ax)
    if per_batch is not None and len(per_batch):
        sns.stripplot(data=per_batch, y="group", x="precaching_share", hue="mode", order=order, orient="h",
                      dodge=True, palette=dict.fromkeys(per_batch["mode"].unique(), "black"), size=2.5, alpha=0.6,
                      legend=False, ax=ax)
    ax.axvline(0.0, color="0.4", linewidth=0.8)
    ax.set(xlabel="precaching_share = ⟨g_p, g⟩ / ‖g‖²", ylabel="", title=title or "Pre-caching share of the gradient")
    fig.tight_layout()
    return fig


def plot_gradient_split_over_training(history: Iterable[dict[str, Any]] | pd.DataFrame, group: str = TOTAL,
                                      title: str | None = None) -> Figure:
    """``precaching_share`` of one group against the training step, one line per mode.

    There is one line per ``run`` too when a ``run`` column is present.

    ``history`` is a trainer log (records with ``step`` and ``gradient_split``, a list of
    :meth:`GradientSplit.records`) or a frame with columns ``step``, ``group``, ``mode``, ``precaching_share``.

    Example:
        >>> history = [{"step": 10, "gradient_split": [{"group": "total", "mode": "strict", "precaching_share": 0.4}]},
        ...            {"step": 20, "gradient_split": [{"group": "total", "mode": "strict", "precaching_share": 0.2}]}]
        >>> plot_gradient_split_over_training(history).axes[0].get_xlabel()
        'step'
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = history if isinstance(history, pd.DataFrame) else split_history(history)
    if frame.empty:
        raise InvalidArgumentError("the history holds no gradient split; train with gradient_split_every set")
    frame = frame[frame["group"] == group]
    style = "run" if "run" in frame and frame["run"].nunique() > 1 else None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    palette = dict(zip(dict.fromkeys(frame["mode"]), sns.color_palette(), strict=False))
    sns.lineplot(data=frame, x="step", y="precaching_share", hue="mode", style=style, marker="o", palette=palette,
                 ax=ax)
    if "share_batch_std" in frame and style is None:
        for mode, part in frame.groupby("mode"):
            spread = part["share_batch_std"].fillna(0)
            ax.fill_between(part["step"], part["precaching_share"] - spread, part["precaching_share"] + spread,
                            color=palette[mode], alpha=0.15, linewidth=0)
    ax.axhline(0.0, color="0.4", linewidth=0.8)
    ax.set(xlabel="step", ylabel=f"precaching_share ({group})",
           title=title or "Pre-caching share of the gradient over training (band: ± 1 sd over batches)")
    fig.tight_layout()
    return fig


def split_history(history: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The ``gradient_split`` entries of a trainer log as one tidy frame with a ``step`` column (and ``run``).

    Example:
        >>> split_history([{"step": 1, "loss": 2.0}, {"step": 2, "gradient_split": [{"group": "total"}]}])
           step  group
        0     2  total
    """
    rows = []
    for record in history:
        for row in record.get("gradient_split") or ():
            rows.append({"step": record["step"], **({"run": record["run"]} if "run" in record else {}), **row})
    frame = pd.DataFrame(rows)
    for column in frame.columns.difference(["group", "component", "mode", "run"]):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")  # JSON nulls back to NaN
    return frame


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        value = value.item()
        return None if isinstance(value, float) and not math.isfinite(value) else value
    return value
