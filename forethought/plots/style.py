"""What every figure shares: one colour per regime, signed metrics, the label-space note."""

from __future__ import annotations

from forethought.regimes import REGIMES

#: Fixed colours of names that are not regimes (a regime's colour is its :attr:`~forethought.regimes.Regime.color`).
MODEL_COLORS = {"random-init": "#9467bd"}


SIGNED_PREFIXES = ("gain", "selectivity", "delta")


def regime_palette(names) -> dict[str, str]:
    """One colour per regime or model name, the same in every figure.

    Each registered regime's colour and those of :data:`MODEL_COLORS` come first, then other names in order from
    a colour-blind-safe palette.

    Example:
        >>> regime_palette(["myopic", "vanilla", "mine"])["vanilla"]
        '#1f77b4'
    """
    import seaborn as sns

    fixed = {**{name: regime.color for name, regime in REGIMES.items()}, **MODEL_COLORS}
    extra = [name for name in dict.fromkeys(names) if name not in fixed]
    spare = [color for color in sns.color_palette("colorblind", len(extra) + len(fixed)).as_hex()
             if color not in fixed.values()]
    return {**{name: fixed[name] for name in dict.fromkeys(names) if name in fixed},
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
