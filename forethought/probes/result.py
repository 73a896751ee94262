"""What :func:`~forethought.probes.probe_sweep` returns: :class:`ProbeSweep`, the table, the probes, the figures.

Like the other results of forethought (``PatchResult``, ``TrainResult``, ``MyopiaReport``), a sweep has
``.to_frame()`` (the tidy table, one row per (model, layer, offset, method); columns in
:mod:`forethought.probes.sweep`), ``.plot()`` (layer × offset heatmaps, the baselines in the title and in the
gain metrics), ``.save(dir)`` / :meth:`ProbeSweep.load` and a one-line ``repr``. ``.probes[model][method]`` are
the fitted probes (``"<method>_control"`` for the control task's).

For the transition from the bare DataFrame it used to be, a sweep also answers the table's columns and
methods (``sweep["top1"]``, ``sweep.query(...)``, ``len(sweep)``); new code calls ``.to_frame()``.

Example:
    >>> import pandas as pd
    >>> table = pd.DataFrame({"model": ["m"], "layer": [1], "offset": [0], "method": ["vocab"], "top1": [0.5],
    ...                       "label_space": ["vocab"]})
    >>> ProbeSweep(table)  # doctest: +NORMALIZE_WHITESPACE
    ProbeSweep(1 row: 1 model x 1 depth x 1 offset x 1 method, label space vocab;
               best top1 0.500 (m, vocab, layer 1, offset 0))
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from forethought.errors import CheckpointError
from forethought.probes.io import load_probes, save_probes
from forethought.probes.linear import AffineProbes
from forethought.reporting import atomic_directory

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TABLE = "probes.csv"
SUMMARY = "sweep.json"
PROBES = "probes"


@dataclass(repr=False)
class ProbeSweep:
    """A probe sweep: its table, the fitted probes and what it was asked.

    Attributes:
        table: one row per (model, layer, offset, method) (see :mod:`forethought.probes.sweep`).
        probes: ``{model: {method: probes}}``, the control task's under ``"<method>_control"`` (empty after
            :meth:`load` without ``models``; on process 0 only under several processes).
        settings: offsets, methods, seed, top_k, reference.
    """

    table: pd.DataFrame
    probes: dict[str, dict[str, AffineProbes]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """The table (a copy), one row per (model, layer, offset, method)."""
        return self.table.copy()

    def plot(self, metric: str = "top1", method: str | None = None, title: str | None = None) -> Figure:
        """Heatmaps of ``metric`` by depth and offset, one panel per model (a difference panel for two models).

        ``"gain_over_baseline"`` shows the gain over the stronger of unigram and bigram; ``*`` marks cells whose
        paired interval excludes 0 (:func:`forethought.plots.plot_probe_heatmap`). The title names the label
        space, its coverage, and the baselines' top-1 for ``"top1"``.
        """
        from forethought.plots import label_space_note, plot_probe_heatmap

        if title is None:
            title = f"Future-token probes: {metric}"
            if metric == "top1" and {"unigram_top1", "bigram_top1"} <= set(self.table):
                best = self.table.groupby("offset")["best_baseline_top1"].first()
                title += " (best baseline: " + ", ".join(f"N={o} {v:.3f}" for o, v in best.items()) + ")"
            title += label_space_note(self.table)
        return plot_probe_heatmap(self.table, metric=metric, method=method, title=title)

    def save_probes(self, directory: str | os.PathLike, models: dict[str, Any] | None = None) -> Path:
        """Write every fitted probe to ``directory/<model>/<method>`` (see :func:`forethought.probes.save_probes`)."""
        for name, fitted in self.probes.items():
            model = (models or {}).get(name)
            for path, probes in fitted.items():
                save_probes(probes, Path(directory) / name / path, model=model)
        return Path(directory)

    def save(self, directory: str | os.PathLike, probes: bool = True) -> Path:
        """Write ``probes.csv``, ``sweep.json`` and (with ``probes``) the probes (``probes/<model>/<method>``)."""
        with atomic_directory(directory) as tmp:
            self.table.to_csv(tmp / TABLE, index=False)
            saved = {name: sorted(fitted) for name, fitted in self.probes.items()} if probes else {}
            (tmp / SUMMARY).write_text(json.dumps({"format": "forethought-probe-sweep", "version": 1,
                                                   "settings": self.settings, "probes": saved},
                                                  indent=1, default=str) + "\n")
            if probes:
                self.save_probes(tmp / PROBES)
        return Path(directory)

    @classmethod
    def load(cls, directory: str | os.PathLike, models: dict[str, Any] | None = None,
             device: Any = None) -> ProbeSweep:
        """A sweep written by :meth:`save`; its probes are loaded for the models given (``{name: model}``).

        The Future-Lens probes decode with their model, so they load only with it; direct probes load without.
        """
        path = Path(directory)
        try:
            summary = json.loads((path / SUMMARY).read_text())
            table = pd.read_csv(path / TABLE)
        except (OSError, ValueError) as error:
            raise CheckpointError(f"cannot read a probe sweep in {str(directory)!r}: {error}") from error
        probes: dict[str, dict[str, AffineProbes]] = {}
        for name, paths in summary.get("probes", {}).items():
            if models is not None and name not in models:
                continue
            model = (models or {}).get(name)
            probes[name] = {}
            for method in paths:
                try:
                    probes[name][method] = load_probes(path / PROBES / name / method, model=model, device=device)
                except CheckpointError:
                    raise
                except Exception:  # noqa: BLE001 - a lens without its model: left out, as documented
                    if model is not None:
                        raise
        return cls(table, probes, summary.get("settings", {}))

    def __repr__(self) -> str:
        table = self.table
        n = len(table)
        if n == 0:
            return "ProbeSweep(0 rows)"
        counts = " x ".join(f"{table[c].nunique()} {w}{'s' if table[c].nunique() != 1 else ''}"
                            for c, w in (("model", "model"), ("layer", "depth"), ("offset", "offset"),
                                         ("method", "method")))
        best = table.loc[table["top1"].idxmax()]
        spaces = ", ".join(sorted(set(table["label_space"]))) if "label_space" in table else "?"
        where = f"{best['model']}, {best['method']}, layer {best['layer']}, offset {best['offset']}"
        return (f"ProbeSweep({n} row{'s' if n != 1 else ''}: {counts}, label space {spaces}; best top1 "
                f"{best['top1']:.3f} ({where}))")

    # the transition from the bare DataFrame probe_sweep used to return
    def __getitem__(self, key: Any) -> Any:
        return self.table[key]

    def __len__(self) -> int:
        return len(self.table)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("table", "probes", "settings"):
            raise AttributeError(name)
        return getattr(self.table, name)
