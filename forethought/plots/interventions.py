"""Figures of interventions: patching sweeps, transplant precision, direction effects against placebos."""

from __future__ import annotations


def plot_patching_heatmap(result, normalized: bool = True, title: str | None = None):
    """Heatmap of an activation-patching sweep (a :class:`forethought.interventions.PatchResult`).

    Layers run down, positions (labelled with the clean tokens) or heads across; a ``[layer, pos, head]`` sweep
    gets one panel per head. By default (``normalized``) a cell shows the fraction of the clean-corrupt
    difference it restores (denoising) or destroys (noising), so a bright cell matters whatever the metric's
    direction; cells where the baselines coincide are left blank (nothing to restore). ``normalized=False``
    shows the raw metric, coloured so that bright is closer to the clean run (for ``"kl"``, low KL).

    Example:
        >>> import torch
        >>> from forethought.interventions import patch_positions
        >>> from forethought.models import tiny_model
        >>> model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> result = patch_positions(model, torch.tensor([[1, 2, 3]]), torch.tensor([[1, 5, 3]]), "kl",
        ...                          progress=False)
        >>> plot_patching_heatmap(result).axes[0].get_ylabel()
        'residual depth'
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = result.to_frame()
    column = "effect" if normalized else "value"
    axis = result.dims[0]  # "depth" (residual stream) or "layer" (a block's hook)
    across = "pos" if result.dims == (axis, "pos") else "head"
    if "token" in frame and across == "pos":
        frame["pos"] = [f"{p}: {t!r}" for p, t in zip(frame["pos"], frame["token"], strict=True)]
    panels = list(dict.fromkeys(frame["head"])) if result.dims == (axis, "pos", "head") else [None]
    if normalized:
        style = {"cmap": "viridis", "center": None}
        label = f"fraction {result.effect_name} ({result.metric})"
    else:
        clean, corrupt = frame["clean"].mean(), frame["corrupt"].mean()
        lower_is_clean = clean < corrupt  # e.g. KL to the clean run: 0 is clean
        style = {"cmap": "viridis_r" if lower_is_clean else "viridis", "center": None}
        label = f"{result.metric} ({'lower' if lower_is_clean else 'higher'} = closer to clean)"
    width = 1.2 + 0.45 * frame["pos" if "pos" in frame else "head"].nunique()
    height = 1.2 + 0.45 * frame[axis].nunique()
    fig, axes = plt.subplots(1, len(panels), figsize=(min(width * len(panels), 24), height), squeeze=False,
                             sharey=True)
    for index, (ax, head) in enumerate(zip(axes[0], panels, strict=True)):
        part = frame if head is None else frame[frame["head"] == head]
        columns = "pos" if head is not None else across
        table = part.pivot_table(index=axis, columns=columns, values=column, sort=False, dropna=False)
        last = index == len(panels) - 1
        sns.heatmap(table, **style, annot=table.size <= 120, fmt=".2f", annot_kws={"size": 7}, cbar=last,
                    cbar_kws={"label": label} if last else None, ax=ax)
        ax.set(xlabel=columns, ylabel=(f"{axis} ({result.hook})" if axis == "layer" else "residual depth")
               if index == 0 else "",
               title=f"head {head}" if head is not None else "")
    reads = sorted(set(frame["read_pos"]))
    read = f"read at pos {reads[0]}"
    if len(reads) > 1 and "pos" in result.dims:
        offset = int(frame["read_pos"].iloc[0]) - int(result.coords["pos"][0])
        read = f"read {offset} position{'s' if offset != 1 else ''} after the patch"
    blank = " (blank: nothing to restore)" if normalized and frame["note"].astype(bool).any() else ""
    fig.suptitle(title or f"{result.direction} patching of {result.hook}: {result.metric}, {read}{blank}")
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
    ax.set(xlabel="offset N (token t + 1 + N)", ylabel="residual depth transplanted",
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
           title=title or f"{effect.mode} at {effect.axis} {effect.layer} ({effect.hook})")
    fig.tight_layout()
    return fig
