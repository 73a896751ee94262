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
    saturate). One rule marks cells in every panel: a ``*`` where the 95 % *paired* interval of the difference
    shown excludes 0 (``<metric>_ci_low``/``_ci_high`` of a gain; in a difference panel of ``top1`` or
    ``gain_over_baseline``, the second model's ``minus_reference_ci_low/high`` from a sweep with
    ``reference=`` the first, the same interval for both as their baselines are the same). Cells without such an
    interval carry no mark. The title names the label space and its coverage.

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

    def grid(part, column):
        return part.pivot_table(index="layer", columns="offset", values=column,
                                dropna=False).sort_index(ascending=False)

    def excludes_zero(part, prefix):
        """``*`` cells: the paired interval ``prefix_ci_low/high`` lies wholly on one side of 0 (None: no interval)."""
        if not {f"{prefix}_ci_low", f"{prefix}_ci_high"} <= set(part.columns):
            return None
        return (grid(part, f"{prefix}_ci_low") > 0) | (grid(part, f"{prefix}_ci_high") < 0)

    for row, name in enumerate(methods):
        part = frame[frame["method"] == name]
        per_model = {model: part[part["model"] == model] for model in models}
        tables = {model: grid(per_model[model], metric) for model in models}
        marks = {model: excludes_zero(per_model[model], metric) if signed else None for model in models}
        panels = [(model, tables[model], "RdBu_r" if signed else "viridis", low, high, 0.0 if signed else None,
                   marks[model]) for model in models]
        if difference:
            delta = tables[models[1]] - tables[models[0]]
            bound = max(float(np.nanmax(np.abs(delta.to_numpy()))), 0.1 * scale, 1e-9)
            mark = None
            first_is_reference = "minus_reference" in part and per_model[models[0]]["minus_reference"].isna().all()
            if metric in ("top1", "gain_over_baseline") and first_is_reference:
                mark = excludes_zero(per_model[models[1]], "minus_reference")
            panels.append((f"{models[1]} − {models[0]}", delta, "RdBu_r", -bound, bound, 0.0, mark))
        for col, (label, table, cmap, vmin, vmax, center, mark) in enumerate(panels):
            ax = axes[row, col]
            text = table.map(lambda v: f"{v:.3f}" if 0 < abs(v) < 0.005 else f"{v:.2f}")  # never "-0.00*"
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
