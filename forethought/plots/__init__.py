"""Seaborn figures, one module per subject (style, training, probes, interventions), all importable from here.

Every function returns a matplotlib ``Figure``; save it with :func:`forethought.reporting.save_figure`
(runners save PNGs beside their JSON).
"""

from forethought.plots.interventions import plot_direction_effect, plot_patching_heatmap, plot_transplant_precision
from forethought.plots.probes import plot_probe_heatmap, plot_probe_r2_by_lag
from forethought.plots.style import MODEL_COLORS, SIGNED_PREFIXES, is_signed, label_space_note, regime_palette
from forethought.plots.training import (
    plot_gap_by_size,
    plot_loss_by_position,
    plot_loss_difference,
    plot_loss_vs_p,
    plot_regime_losses,
    plot_training_curves,
)

__all__ = [
    "MODEL_COLORS",
    "SIGNED_PREFIXES",
    "label_space_note",
    "plot_direction_effect",
    "plot_gap_by_size",
    "plot_loss_by_position",
    "plot_loss_difference",
    "plot_loss_vs_p",
    "plot_patching_heatmap",
    "plot_probe_heatmap",
    "plot_probe_r2_by_lag",
    "plot_regime_losses",
    "plot_training_curves",
    "plot_transplant_precision",
    "regime_palette",
    "is_signed",
]
