"""Seaborn figures. Every function returns a matplotlib ``Figure``; save it with
:func:`forethought.reporting.save_figure` (runners save PNGs beside their JSON)."""

from __future__ import annotations


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
    sns.lineplot(data=frame, x="position", y="loss", hue="regime", marker="o", markersize=3, ax=ax)
    ax.set(xlabel="position t (predicting token t + 1)", ylabel="cross-entropy (nats)", title=title)
    fig.tight_layout()
    return fig


def plot_loss_difference(frame, baseline: str = "vanilla", title: str | None = None):
    """Each regime's loss minus ``baseline``'s at every position (columns ``regime``, ``position``, ``loss``).

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
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.lineplot(data=others, x="position", y="difference", hue="regime", marker="o", markersize=3, ax=ax)
    ax.axhline(0.0, color="0.5", linewidth=0.8, linestyle="--")
    ax.set(xlabel="position t (predicting token t + 1)", ylabel=f"loss − {baseline} loss (nats)",
           title=title or f"Loss relative to {baseline}")
    fig.tight_layout()
    return fig


def plot_training_curves(history, title: str = "Training"):
    """Training loss per step and validation loss at each evaluation, from a trainer's log records
    (dicts or a DataFrame with ``step``, ``loss`` and optionally ``eval_loss``; an optional ``run`` column
    gives one colour per run).

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
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.lineplot(data=frame, x="step", y="loss", hue="run", alpha=0.6, linewidth=0.9, ax=ax)
    if "eval_loss" in frame and frame["eval_loss"].notna().any():
        evals = frame.dropna(subset=["eval_loss"])
        sns.lineplot(data=evals, x="step", y="eval_loss", hue="run", marker="o", linestyle="--", ax=ax, legend=False)
    ax.set(xlabel="step", ylabel="cross-entropy (nats); dashed: validation", title=title)
    fig.tight_layout()
    return fig


def plot_regime_losses(curves, baseline: float | None = None, smooth: int = 25,
                       title: str = "Training loss on the pre-caching task"):
    """Training loss per step, one line per regime, smoothed by a running mean over ``smooth`` steps
    (columns ``regime``, ``step``, ``loss``), with the loss of always predicting 0 as a dashed line.

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
    sns.lineplot(data=frame, x="step", y="loss", hue="regime", hue_order=order, linewidth=1.2, ax=ax)
    if baseline is not None:
        ax.axhline(baseline, color="0.4", linewidth=1.0, linestyle="--", label="predict 0")
        ax.legend()
    ax.set(xlabel="step", ylabel="Huber loss", title=title, ylim=(0, None))
    fig.tight_layout()
    return fig


def plot_probe_r2_by_lag(probes, title: str = "Ridge probe R² (held out)"):
    """Heatmaps of probe R² by layer × target, one panel per regime (columns ``regime``, ``layer``, ``lag``,
    ``target``, ``r2``; rows whose ``target`` is not ``"sin"`` get their own column named after the target).

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
    """Held-out loss ÷ zero-predictor loss against ``p`` (log scale), one line per regime
    (columns ``p``, ``regime``, ``loss_ratio``).

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
    """Heatmap of an activation-patching sweep (a :class:`forethought.interventions.PatchResult`): layers down,
    positions (labelled with the clean tokens) or heads across; a ``[layer, pos, head]`` sweep gets one panel
    per head. ``normalized`` plots ``(patched − corrupt) / (clean − corrupt)`` instead of the raw metric.

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
    """Heatmap of future-token transplant precision@k (a :class:`forethought.interventions.TransplantResult`):
    residual depth down (``none``: the neutral prompt without a transplant), offset across.

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

    table = result.table(k)
    fig, ax = plt.subplots(figsize=(1.5 + 0.7 * table.shape[1], 1.2 + 0.45 * table.shape[0]))
    sns.heatmap(table.astype(float), vmin=0.0, vmax=1.0, cmap="viridis", annot=True, fmt=".2f",
                annot_kws={"size": 8}, cbar_kws={"label": f"precision@{k}"}, ax=ax)
    ax.set(xlabel="offset N (token t + 1 + N)", ylabel="layer transplanted (resid)",
           title=title or f"Future-token transplant, precision@{k}")
    fig.tight_layout()
    return fig


def plot_direction_effect(effect, metric: str = "kl", title: str | None = None):
    """Change in the predictions at ``t + N`` after intervening at ``t``, by offset: the direction against its
    norm-matched random placebos (a :class:`forethought.interventions.DirectionEffect`; ``metric`` is ``kl``,
    ``top1_changed`` or ``delta_logprob``).

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
    """Future-token probe scores as heatmaps: residual depth down, offset across, one panel per model, plus a
    difference panel (second model − first) when there are exactly two models; one row of panels per method.
    ``frame`` is a :func:`forethought.probes.probe_sweep` table (columns ``model``, ``layer``, ``offset``,
    ``method`` and ``metric``); ``method`` keeps one method only.

    Example:
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"model": ["a"] * 4 + ["b"] * 4, "method": "vocab", "layer": [0, 0, 1, 1] * 2,
        ...                       "offset": [0, 1] * 4, "top1": [0.5, 0.2, 0.6, 0.3, 0.5, 0.1, 0.6, 0.1]})
        >>> [ax.get_title() for ax in plot_probe_heatmap(frame).axes if ax.get_title()]
        ['a', 'b', 'b − a']
    """
    import matplotlib.pyplot as plt
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
    low, high = values.min(), values.max()
    for row, name in enumerate(methods):
        part = frame[frame["method"] == name]
        tables = {model: part[part["model"] == model].pivot_table(index="layer", columns="offset", values=metric)
                  for model in models}
        panels = [(model, tables[model], "viridis", low, high, None) for model in models]
        if difference:
            delta = tables[models[1]] - tables[models[0]]
            bound = max(float(abs(delta).max().max()), 1e-9)
            panels.append((f"{models[1]} − {models[0]}", delta, "RdBu_r", -bound, bound, 0.0))
        for col, (label, table, cmap, vmin, vmax, center) in enumerate(panels):
            ax = axes[row, col]
            sns.heatmap(table.sort_index(ascending=False), cmap=cmap, vmin=vmin, vmax=vmax, center=center,
                        annot=table.size <= 150, fmt=".2f", annot_kws={"size": 7}, ax=ax,
                        cbar_kws={"label": metric if center is None else f"Δ {metric}"})
            ax.set(title=label if row == 0 else "", xlabel="offset N (token t + 1 + N)" if row == len(methods) - 1
                   else "", ylabel=f"{name}: layer (resid)" if col == 0 else "")
    fig.suptitle(title or f"Future-token probes: {metric}")
    fig.tight_layout()
    return fig
