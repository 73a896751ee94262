"""Seaborn figures. Every function returns a matplotlib ``Figure``; save it with
:func:`forethought.reporting.save_figure` (runners save PNGs beside their JSON)."""

from __future__ import annotations
