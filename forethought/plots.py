"""Seaborn figures.

Every function returns a matplotlib ``Figure``; save it with :func:`forethought.reporting.save_figure`
(runners save PNGs beside their JSON).
"""

from __future__ import annotations

REGIME_COLORS = {"vanilla": "#1f77b4", "myopic": "#d62728", "bigram": "#7f7f7f", "local-myopic": "#ff7f0e",
                 "random-init": "#9467bd"}
SIGNED_PREFIXES = ("gain", "selectivity", "delta")


def regime_palette(names) -> dict[str, str]:
    """One colour per regime or model name, the same in every figure.

    The fixed colours of :data:`REGIME_COLORS` come first, then other names in order from a colour-blind-safe
    palette.

    Example:
        >>> regime_palette(["myopic", "vanilla", "mine"])["vanilla"]
        '#1f77b4'
    """
    import seaborn as sns

    extra = [name for name in dict.fromkeys(names) if name not in REGIME_COLORS]
    spare = [color for color in sns.color_palette("colorblind", len(extra) + len(REGIME_COLORS)).as_hex()
             if color not in REGIME_COLORS.values()]
    return {**{name: REGIME_COLORS[name] for name in dict.fromkeys(names) if name in REGIME_COLORS},
            **dict(zip(extra, spare, strict=False))}


def _signed(metric: str) -> bool:
    return metric.startswith(SIGNED_PREFIXES) or "_minus_" in metric


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


def plot_patching_heatmap(result, normalized: bool = False, title: str | None = None):
    """Heatmap of an activation-patching sweep (a :class:`forethought.interventions.PatchResult`).

    Layers run down, positions (labelled with the clean tokens) or heads across; a ``[layer, pos, head]`` sweep
    gets one panel per head. ``normalized`` plots ``(patched − corrupt) / (clean − corrupt)`` instead of the raw
    metric.

    Example:
        >>> import torch
        >>> from forethought.interventions import patch_positions
        >>> from forethought.models import tiny_model
        >>> model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> result = patch_positions(model, torch.tensor([[1, 2, 3]]), torch.tensor([[1, 5, 3]]), "kl",
        ...                          progress=False)
        >>> plot_patching_heatmap(result).axes[0].get_ylabel()
        'layer (resid)'
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = result.to_frame()
    column = "normalized" if normalized else "value"
    across = "pos" if result.dims == ("layer", "pos") else "head"
    if "token" in frame and across == "pos":
        frame["pos"] = [f"{p}: {t!r}" for p, t in zip(frame["pos"], frame["token"], strict=True)]
    panels = list(dict.fromkeys(frame["head"])) if result.dims == ("layer", "pos", "head") else [None]
    sequential = result.metric == "kl" and not normalized
    width = 1.2 + 0.45 * frame["pos" if "pos" in frame else "head"].nunique()
    height = 1.2 + 0.45 * frame["layer"].nunique()
    fig, axes = plt.subplots(1, len(panels), figsize=(min(width * len(panels), 24), height), squeeze=False,
                             sharey=True)
    for index, (ax, head) in enumerate(zip(axes[0], panels, strict=True)):
        part = frame if head is None else frame[frame["head"] == head]
        columns = "pos" if head is not None else across
        table = part.pivot_table(index="layer", columns=columns, values=column, sort=False, dropna=False)
        last = index == len(panels) - 1
        sns.heatmap(table, cmap="viridis" if sequential else "RdBu_r", center=None if sequential else 0.0,
                    annot=table.size <= 120, fmt=".2f", annot_kws={"size": 7}, cbar=last,
                    cbar_kws={"label": f"{result.metric}{' (normalized)' if normalized else ''}"} if last else None,
                    ax=ax)
        ax.set(xlabel=columns, ylabel=f"layer ({result.hook})" if index == 0 else "",
               title=f"head {head}" if head is not None else "")
    reads = sorted(set(frame["read_pos"]))
    read = f"read at pos {reads[0]}"
    if len(reads) > 1 and "pos" in result.dims:
        offset = int(frame["read_pos"].iloc[0]) - int(result.coords["pos"][0])
        read = f"read {offset} position{'s' if offset != 1 else ''} after the patch"
    fig.suptitle(title or f"{result.direction} patching of {result.hook}: {result.metric}, {read}")
    fig.tight_layout()
    return fig


def plot_transplant_precision(result, k: int = 1, title: str | None = None):
    """Heatmap of future-token transplant precision@k (a :class:`forethought.interventions.TransplantResult`).

    Residual depth runs down (``none``: the neutral prompt without a transplant), offset across.

    Example:
        >>> import torch
        >>> from forethought.interventions import transplant
        >>> from forethought.models import tiny_model
        >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=16)
        >>> result = transplant(model, torch.randint(0, 20, (3, 5)), prompts=[[1, 2]], n_steps=2, progress=False)
        >>> plot_transplant_precision(result).axes[0].get_xlabel()
        'offset N (token t + 1 + N)'
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    table = result.precision_table(k)
    fig, ax = plt.subplots(figsize=(1.5 + 0.7 * table.shape[1], 1.2 + 0.45 * table.shape[0]))
    sns.heatmap(table.astype(float), vmin=0.0, vmax=1.0, cmap="viridis", annot=True, fmt=".2f",
                annot_kws={"size": 8}, cbar_kws={"label": f"precision@{k}"}, ax=ax)
    ax.set(xlabel="offset N (token t + 1 + N)", ylabel="layer transplanted (resid)",
           title=title or f"Future-token transplant, precision@{k}")
    fig.tight_layout()
    return fig


def plot_direction_effect(effect, metric: str = "kl", title: str | None = None):
    """Change in the predictions at ``t + N`` after intervening at ``t``, by offset.

    The direction is drawn against its norm-matched random placebos (a
    :class:`forethought.interventions.DirectionEffect`; ``metric`` is ``kl``, ``top1_changed`` or
    ``delta_logprob``).

    Example:
        >>> import torch
        >>> from forethought.interventions import direction_effect
        >>> from forethought.models import tiny_model
        >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> effect = direction_effect(model, torch.randint(0, 20, (2, 6)), torch.randn(16), layer=1,
        ...                           offsets=(0, 1), progress=False)
        >>> plot_direction_effect(effect).axes[0].get_ylabel()
        'kl'
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(5.5, 4))
    sns.pointplot(data=effect.frame, x="offset", y=metric, hue="condition", errorbar="se", dodge=0.2, ax=ax)
    ax.set(xlabel="offset N (prediction of token t + 1 + N)", ylabel=metric,
           title=title or f"{effect.mode} at layer {effect.layer} ({effect.hook})")
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
    signed = _signed(metric)
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


def label_space_note(frame) -> str:
    """`` — label space top64+other, coverage 0.59 (scored over all targets)`` for a restricted space."""
    if "label_space" not in frame or "coverage" not in frame:
        return ""
    spaces = list(dict.fromkeys(frame["label_space"]))
    if spaces == ["vocab"]:
        return " (whole vocabulary)"
    coverage = frame["coverage"].astype(float)
    return (f"\nlabel space {', '.join(spaces)}, coverage {coverage.min():.2f}"
            f"{'' if coverage.min() == coverage.max() else f'–{coverage.max():.2f}'}: 'other' is always a miss")


GAP_REGIMES = {"myopia_gap": "myopic", "bigram_gap": "bigram", "local_myopia_gap": "local-myopic"}


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
    color = REGIME_COLORS.get(GAP_REGIMES.get(gap, ""), "0.2")
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
