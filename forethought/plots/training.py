"""Figures of training and of the myopia gap: losses by position, training curves, the gap by model size."""

from __future__ import annotations

from forethought.plots.style import regime_palette
from forethought.regimes import registered_gaps


def plot_loss_by_position(frame, title: str = "Validation loss by position"):
    """One line per regime: next-token loss at each position (columns ``regime``, ``position``, ``loss``).

    Example:
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"regime": ["vanilla"] * 3, "position": [0, 1, 2], "loss": [3.0, 2.5, 2.2]})
        >>> plot_loss_by_position(frame).axes[0].get_xlabel()
        'position t (predicting token t + 1)'
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.lineplot(data=frame, x="position", y="loss", hue="regime", marker="o", markersize=3, ax=ax,
                 palette=regime_palette(frame["regime"]))
    ax.set(xlabel="position t (predicting token t + 1)", ylabel="cross-entropy (nats)", title=title)
    fig.tight_layout()
    return fig


def plot_loss_difference(frame, baseline: str = "vanilla", title: str | None = None):
    """Each regime's loss minus ``baseline``'s at every position.

    ``frame`` has columns ``regime``, ``position`` and ``loss``; each gap gets its 95 % bootstrap band when the
    frame has ``gap_ci_low`` and ``gap_ci_high`` (:meth:`forethought.myopic_training.MyopiaReport.to_frame`).

    Example:
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"regime": ["vanilla", "vanilla", "myopic", "myopic"], "position": [0, 1, 0, 1],
        ...                       "loss": [3.0, 2.5, 3.0, 2.7]})
        >>> plot_loss_difference(frame).axes[0].get_ylabel()
        'loss − vanilla loss (nats)'
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    reference = frame[frame["regime"] == baseline].set_index("position")["loss"]
    others = frame[frame["regime"] != baseline].copy()
    others["difference"] = others["loss"].to_numpy() - reference.reindex(others["position"]).to_numpy()
    palette = regime_palette(frame["regime"])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.lineplot(data=others, x="position", y="difference", hue="regime", marker="o", markersize=3, ax=ax,
                 palette={name: palette[name] for name in others["regime"].unique()})
    if {"gap_ci_low", "gap_ci_high"} <= set(others.columns):
        for name, part in others.groupby("regime", sort=False):
            ax.fill_between(part["position"], part["gap_ci_low"], part["gap_ci_high"], color=palette[name],
                            alpha=0.2, linewidth=0)
        title = title or f"Loss relative to {baseline} (bands: 95 % bootstrap over sequences)"
    ax.axhline(0.0, color="0.5", linewidth=0.8, linestyle="--")
    ax.set(xlabel="position t (predicting token t + 1)", ylabel=f"loss − {baseline} loss (nats)",
           title=title or f"Loss relative to {baseline}")
    fig.tight_layout()
    return fig


def plot_training_curves(history, title: str = "Training"):
    """Training loss per step and validation loss at each evaluation, from a trainer's log records.

    ``history`` is a list of dicts or a DataFrame with ``step``, ``loss`` and optionally ``eval_loss``; an optional
    ``run`` column gives one colour per run.

    Example:
        >>> fig = plot_training_curves([{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5, "eval_loss": 2.6}])
        >>> fig.axes[0].get_xlabel()
        'step'
    """
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    frame = pd.DataFrame(history)
    if "run" not in frame:
        frame["run"] = "train"
    palette = regime_palette(frame["run"])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.lineplot(data=frame, x="step", y="loss", hue="run", alpha=0.6, linewidth=0.9, ax=ax, palette=palette)
    if "eval_loss" in frame and frame["eval_loss"].notna().any():
        evals = frame.dropna(subset=["eval_loss"])
        sns.lineplot(data=evals, x="step", y="eval_loss", hue="run", marker="o", linestyle="--", ax=ax, legend=False,
                     palette={name: palette[name] for name in evals["run"].unique()})
    ax.set(xlabel="step", ylabel="cross-entropy (nats); dashed: validation", title=title)
    fig.tight_layout()
    return fig


def plot_regime_losses(curves, baseline: float | None = None, smooth: int = 25,
                       title: str = "Training loss on the pre-caching task"):
    """Training loss per step, one line per regime, smoothed by a running mean over ``smooth`` steps.

    ``curves`` has columns ``regime``, ``step`` and ``loss``; the loss of always predicting 0 is drawn as a
    dashed line.

    Example:
        >>> import pandas as pd
        >>> curves = pd.DataFrame({"regime": ["vanilla"] * 3 + ["myopic"] * 3, "step": [1, 2, 3] * 2,
        ...                        "loss": [0.6, 0.4, 0.3, 0.6, 0.6, 0.6]})
        >>> plot_regime_losses(curves, baseline=0.6).axes[0].get_ylabel()
        'Huber loss'
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    order = list(dict.fromkeys(curves["regime"]))
    frame = curves.sort_values(["regime", "step"]).copy()
    frame["loss"] = frame.groupby("regime")["loss"].transform(lambda s: s.rolling(smooth, min_periods=1).mean())
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.lineplot(data=frame, x="step", y="loss", hue="regime", hue_order=order, linewidth=1.2, ax=ax,
                 palette=regime_palette(order))
    if baseline is not None:
        ax.axhline(baseline, color="0.4", linewidth=1.0, linestyle="--", label="predict 0")
        ax.legend()
    ax.set(xlabel="step", ylabel="Huber loss", title=title, ylim=(0, None))
    fig.tight_layout()
    return fig


def plot_loss_vs_p(sweep, title: str = "Loss relative to predicting 0, by p"):
    """Held-out loss ÷ zero-predictor loss against ``p`` (log scale), one line per regime.

    The frame has columns ``p``, ``regime`` and ``loss_ratio``.

    Example:
        >>> import pandas as pd
        >>> sweep = pd.DataFrame({"p": [0.1, 1.0, 0.1, 1.0], "regime": ["vanilla"] * 2 + ["myopic"] * 2,
        ...                       "loss_ratio": [0.2, 0.3, 0.9, 1.0]})
        >>> plot_loss_vs_p(sweep).axes[0].get_xscale()
        'log'
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(5.5, 4))
    sns.lineplot(data=sweep, x="p", y="loss_ratio", hue="regime", marker="o", ax=ax)
    ax.axhline(1.0, color="0.4", linewidth=1.0, linestyle="--")
    ax.set(xscale="log", xlabel="p (share of past-sum targets)", ylabel="loss / zero-predictor loss", title=title,
           ylim=(0, None))
    fig.tight_layout()
    return fig


def plot_gap_by_size(table, gap: str = "myopia_gap", title: str | None = None):
    """A gap of every model against its parameter count (log scale).

    Its 95 % interval is drawn as error bars, with a line at zero. ``table`` has columns ``model``,
    ``n_parameters``, ``gap`` and, when present, ``{gap}_ci_low`` and ``{gap}_ci_high`` (a
    :func:`forethought.experiments.size_sweep.run_size_sweep` table).

    Example:
        >>> import pandas as pd
        >>> table = pd.DataFrame({"model": ["small", "large"], "n_parameters": [1e6, 1e8], "myopia_gap": [0.05, 0.02],
        ...                       "myopia_gap_ci_low": [0.03, 0.0], "myopia_gap_ci_high": [0.07, 0.04]})
        >>> plot_gap_by_size(table).axes[0].get_xscale()
        'log'
    """
    import matplotlib.pyplot as plt
    import numpy as np

    frame = table.dropna(subset=[gap]).sort_values("n_parameters", kind="stable")
    values = frame[gap].to_numpy(dtype=float)
    low, high = f"{gap}_ci_low", f"{gap}_ci_high"
    errors = None
    if {low, high} <= set(frame.columns):
        errors = np.clip(np.vstack([values - frame[low].to_numpy(dtype=float),
                                    frame[high].to_numpy(dtype=float) - values]), 0.0, None)
    regime = registered_gaps().get(gap, ("",))[0]
    color = regime_palette([regime])[regime] if regime else "0.2"  # the colour of the regime that defines the gap
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(frame["n_parameters"].to_numpy(dtype=float), values, yerr=errors, fmt="o-", color=color, capsize=3,
                linewidth=1.2, markersize=5)
    for name, x, y in zip(frame["model"], frame["n_parameters"], values, strict=True):
        ax.annotate(str(name), (float(x), y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.axhline(0.0, color="0.5", linewidth=0.8, linestyle="--")
    ax.set(xscale="log", xlabel="parameters", ylabel=f"{gap.replace('_', ' ')} (nats / token)",
           title=title or f"{gap.replace('_', ' ').capitalize()} by model size (bars: 95 % paired bootstrap)")
    fig.tight_layout()
    return fig
