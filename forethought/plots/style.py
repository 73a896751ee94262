"""What every figure shares: one colour per regime, signed metrics, the label-space note."""

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


def is_signed(metric: str) -> bool:
    """Whether ``metric`` is a signed quantity (a gain, a difference): drawn on a diverging scale centred at 0."""
    return metric.startswith(SIGNED_PREFIXES) or "_minus_" in metric


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
