"""Figures of probe sweeps: top-1 (or any metric) heatmaps by layer and offset, ridge R² by lag."""

from __future__ import annotations

from forethought.plots.style import is_signed, label_space_note


def plot_probe_r2_by_lag(probes, title: str = "Ridge probe R² (held out)"):
    """Heatmaps of probe R² by layer × target, one panel per regime.

    ``probes`` has columns ``regime``, ``layer``, ``lag``, ``target`` and ``r2``; rows whose ``target`` is not
    ``"sin"`` get their own column named after the target.

    Example:
        >>> import pandas as pd
        >>> probes = pd.DataFrame({"regime": ["vanilla"] * 3, "layer": [0, 1, 1], "lag": [0, 0, None],
        ...                        "target": ["sin", "sin", "sum"], "r2": [0.1, 0.9, 0.2]})
        >>> len(plot_probe_r2_by_lag(probes).axes)  # one panel and its colour bar
        2
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = probes.copy()
    is_sin = frame["target"] == "sin"
    frame["column"] = frame["target"].astype(str)
    frame.loc[is_sin, "column"] = [f"sin@{int(lag)}" for lag in frame.loc[is_sin, "lag"]]
    order = [f"sin@{int(lag)}" for lag in sorted(frame.loc[is_sin, "lag"].unique())]
    order += sorted(set(frame["column"]) - set(order))
    regimes = list(dict.fromkeys(frame["regime"]))
    fig, axes = plt.subplots(1, len(regimes), figsize=(1.0 + 0.8 * len(order) * len(regimes), 3.2), squeeze=False,
                             sharey=True)
    for index, (ax, regime) in enumerate(zip(axes[0], regimes, strict=True)):
        table = frame[frame["regime"] == regime].pivot_table(index="layer", columns="column", values="r2")
        table = table.reindex(columns=[c for c in order if c in table.columns]).sort_index(ascending=False)
        last = index == len(regimes) - 1
        sns.heatmap(table, vmin=0.0, vmax=1.0, cmap="viridis", annot=True, fmt=".2f", annot_kws={"size": 7},
                    cbar=last, cbar_kws={"label": "R²"} if last else None, ax=ax)
        ax.set(title=regime, xlabel="target (sin@i = sin(F·x_{n−i}))", ylabel="layer" if index == 0 else "")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_probe_heatmap(frame, metric: str = "top1", method: str | None = None, title: str | None = None):
    """Future-token probe scores as heatmaps: residual depth down, offset across, one panel per model.

    A difference panel (second model − first) is added when there are exactly two models; one row of panels
    per method. ``frame`` is a :func:`forethought.probes.probe_sweep` table (columns ``model``, ``layer``,
    ``offset``, ``method`` and ``metric``); ``method`` keeps one method only.

    Signed metrics (``gain_*``, ``selectivity``, ``*_minus_*``) and difference panels use a diverging map
    centred at 0 with a symmetric scale (never narrower than a tenth of the largest score, so noise does not
    saturate). A ``*`` marks cells that the 95 % intervals (``top1_ci_low``/``top1_ci_high``, when the table has
    them) separate from 0: for ``gain_over_baseline``, the probe's interval excludes the best baseline; in a
    difference panel of ``top1``, the two models' intervals do not overlap (a conservative test that the
    difference's interval excludes 0). The title names the label space and its coverage.

    Example:
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"model": ["a"] * 4 + ["b"] * 4, "method": "vocab", "layer": [0, 0, 1, 1] * 2,
        ...                       "offset": [0, 1] * 4, "top1": [0.5, 0.2, 0.6, 0.3, 0.5, 0.1, 0.6, 0.1]})
        >>> [ax.get_title() for ax in plot_probe_heatmap(frame).axes if ax.get_title()]
        ['a', 'b', 'b − a']
    """
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    from forethought.errors import InvalidArgumentError

    if method is not None:
        frame = frame[frame["method"] == method]
    if frame.empty or metric not in frame:
        missing = "" if metric in frame else f" of {metric!r}"
        raise InvalidArgumentError(f"nothing to plot: the table has no rows{missing}"
                                   f"{f' for method {method!r}' if method else ''}")
    methods = list(dict.fromkeys(frame["method"]))
    models = list(dict.fromkeys(frame["model"]))
    difference = len(models) == 2
    n_cols = len(models) + difference
    n_layers, n_offsets = frame["layer"].nunique(), frame["offset"].nunique()
    fig, axes = plt.subplots(len(methods), n_cols, squeeze=False, sharey=True,
                             figsize=(min(1.6 + n_cols * (1.2 + 0.6 * n_offsets), 24),
                                      len(methods) * (1.0 + 0.4 * n_layers)))
    values = frame[metric].astype(float)
    signed = is_signed(metric)
    scale = max(float(values.abs().max()), 1e-9)
    low, high = (-scale, scale) if signed else (values.min(), values.max())
    has_ci = {"top1_ci_low", "top1_ci_high"} <= set(frame.columns)

    def grid(part, column):
        return part.pivot_table(index="layer", columns="offset", values=column).sort_index(ascending=False)

    for row, name in enumerate(methods):
        part = frame[frame["method"] == name]
        per_model = {model: part[part["model"] == model] for model in models}
        tables = {model: grid(per_model[model], metric) for model in models}
        marks = {model: None for model in models}
        if has_ci and metric == "gain_over_baseline":
            for model in models:
                lows, highs = grid(per_model[model], "top1_ci_low"), grid(per_model[model], "top1_ci_high")
                best = grid(per_model[model], "best_baseline_top1")
                marks[model] = (lows > best) | (highs < best)
        panels = [(model, tables[model], "RdBu_r" if signed else "viridis", low, high, 0.0 if signed else None,
                   marks[model]) for model in models]
        if difference:
            delta = tables[models[1]] - tables[models[0]]
            bound = max(float(np.nanmax(np.abs(delta.to_numpy()))), 0.1 * scale, 1e-9)
            mark = None
            if has_ci and metric == "top1":
                first, second = (per_model[m] for m in models)
                mark = ((grid(second, "top1_ci_low") > grid(first, "top1_ci_high"))
                        | (grid(second, "top1_ci_high") < grid(first, "top1_ci_low")))
            panels.append((f"{models[1]} − {models[0]}", delta, "RdBu_r", -bound, bound, 0.0, mark))
        for col, (label, table, cmap, vmin, vmax, center, mark) in enumerate(panels):
            ax = axes[row, col]
            text = table.map(lambda v: f"{v:.2f}")
            if mark is not None:
                text = text + mark.reindex_like(table).fillna(False).map(lambda m: "*" if m else "")
            sns.heatmap(table, cmap=cmap, vmin=vmin, vmax=vmax, center=center,
                        annot=text.to_numpy() if table.size <= 150 else False, fmt="", annot_kws={"size": 7},
                        ax=ax, cbar_kws={"label": f"Δ {metric}" if col == len(models) else metric})
            ax.set(title=label if row == 0 else "", xlabel="offset N (token t + 1 + N)" if row == len(methods) - 1
                   else "", ylabel=f"{name}: layer (resid)" if col == 0 else "")
    fig.suptitle(title or f"Future-token probes: {metric}{label_space_note(frame)}")
    fig.tight_layout()
    return fig
