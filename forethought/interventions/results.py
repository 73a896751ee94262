"""What the interventions return: :class:`PatchResult`, :class:`TransplantResult` and :class:`DirectionEffect`.

Every result has ``.to_frame()`` (a tidy ``pandas.DataFrame``, one row per measurement), ``.plot()`` (a
matplotlib ``Figure`` from :mod:`forethought.plots`) and a one-line ``repr`` that names what was measured and
its headline number, never the tensors themselves.

Example:
    >>> import torch
    >>> from forethought.interventions import patch_positions
    >>> from forethought.models import tiny_model
    >>> model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
    >>> result = patch_positions(model, torch.tensor([[1, 2, 3]]), torch.tensor([[1, 5, 3]]), "kl", progress=False)
    >>> repr(result).startswith("PatchResult(denoise patching of resid, kl: 3 layer x 3 pos, 1 example")
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from typing import TYPE_CHECKING

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from forethought.errors import check_positive

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["DirectionEffect", "PatchResult", "TransplantResult"]


@dataclass(repr=False)
class PatchResult:
    """A patching sweep: one metric value per cell and example, with the unpatched baselines beside it.

    Attributes:
        per_example: metric of the patched run, ``[*dims, batch]``.
        clean_baseline: the metric on the unpatched clean run at the same read position, ``[*dims, batch]``.
        corrupt_baseline: the same on the unpatched corrupted run.
        dims: names of the swept axes, e.g. ``("layer", "pos")`` or ``("layer", "head")``.
        coords: the layer / position / head index of every entry along each swept axis.
        read_positions: the position each cell's metric was read at, ``[*dims]``.
        metric: the metric's name.
        hook: the hook template that was patched (``"resid"``: layer 0 is the embeddings).
        direction: ``"denoise"`` or ``"noise"``.
        labels: the first clean prompt's tokens as strings, one per position (``None`` without a tokenizer).
    """

    per_example: Float[Tensor, "*cells batch"]
    clean_baseline: Float[Tensor, "*cells batch"]
    corrupt_baseline: Float[Tensor, "*cells batch"]
    dims: tuple[str, ...]
    coords: dict[str, list[int]]
    read_positions: Int[Tensor, "*cells"]
    metric: str
    hook: str
    direction: str
    labels: list[str] | None = None

    @property
    def values(self) -> Float[Tensor, "*cells"]:
        """Batch mean of the metric per cell."""
        return self.per_example.mean(-1)

    def normalized(self) -> Float[Tensor, "*cells"]:
        """``(patched - corrupt) / (clean - corrupt)`` of the batch means: 0 is the corrupted run, 1 the clean.

        Cells whose clean and corrupted baselines coincide have no scale and come out ``nan`` or ``inf``.
        """
        clean, corrupt = self.clean_baseline.mean(-1), self.corrupt_baseline.mean(-1)
        return (self.values - corrupt) / (clean - corrupt)

    def to_frame(self, per_example: bool = False) -> pd.DataFrame:
        """A tidy table: one row per cell (or per cell and example), with the axes as columns.

        Columns: the swept axes, ``read_pos``, ``value``, ``normalized``, ``clean``, ``corrupt`` (the batch
        means of the baselines), ``sem`` (standard error of ``value``), ``metric``, ``hook``, ``direction``,
        and ``token`` (the clean token at the patched position) when positions are swept and labels exist.
        """
        grid = [dict(zip(self.dims, cell, strict=True)) for cell in product(*(self.coords[d] for d in self.dims))]
        n = self.per_example.shape[-1]
        flat = {
            "read_pos": self.read_positions.flatten().tolist(),
            "value": self.values.flatten().tolist(),
            "normalized": self.normalized().flatten().tolist(),
            "clean": self.clean_baseline.mean(-1).flatten().tolist(),
            "corrupt": self.corrupt_baseline.mean(-1).flatten().tolist(),
            "sem": (self.per_example.std(-1) / n**0.5 if n > 1 else torch.full_like(self.values, float("nan")))
            .flatten().tolist(),
        }
        rows = []
        for i, cell in enumerate(grid):
            row = {**cell, **{key: column[i] for key, column in flat.items()}}
            row.update(metric=self.metric, hook=self.hook, direction=self.direction)
            if self.labels is not None and "pos" in cell:
                row["token"] = self.labels[cell["pos"]]
            if per_example:
                for example, value in enumerate(self.per_example.reshape(len(grid), n)[i].tolist()):
                    rows.append({**row, "example": example, "value": value})
            else:
                rows.append(row)
        return pd.DataFrame(rows)

    def plot(self, normalized: bool = False, title: str | None = None) -> Figure:
        """The sweep as a heatmap (:func:`forethought.plots.plot_patching_heatmap`)."""
        from forethought.plots import plot_patching_heatmap

        return plot_patching_heatmap(self, normalized=normalized, title=title)

    def __repr__(self) -> str:
        shape = " x ".join(f"{len(self.coords[d])} {d}" for d in self.dims)
        n = self.per_example.shape[-1]
        values = self.values
        top = values.nan_to_num(0.0).abs().flatten().argmax()
        index = [int(i) for i in torch.unravel_index(top, values.shape)]
        where = ", ".join(f"{d} {self.coords[d][i]}" for d, i in zip(self.dims, index, strict=True))
        return (f"PatchResult({self.direction} patching of {self.hook}, {self.metric}: {shape}, {n} example"
                f"{'s' if n != 1 else ''}; largest |value| {values.flatten()[top].item():+.4g} at {where})")


@dataclass(repr=False)
class TransplantResult:
    """Ranks of the source model's own continuation in transplanted (and untouched) neutral-prompt runs.

    Attributes:
        ranks: rank (0 = top-1) of the source's token at each offset in the transplanted run's logits,
            ``[prompt, layer, source, offset]``.
        baseline_ranks: the same for the neutral prompt without a transplant, ``[prompt, source, offset]``.
        generated: the transplanted runs' greedy tokens, ``[prompt, layer, source, offset]``.
        continuation: the source model's greedy continuation, ``[source, offset]``.
        layers: the residual depths transplanted (0 = embeddings, ``n_layers`` = final).
        prompts: the prompts, as given (strings) or as token lists.
        position: the source position ``t``.
    """

    ranks: Int[Tensor, "prompt layer source offset"]
    baseline_ranks: Int[Tensor, "prompt source offset"]
    generated: Int[Tensor, "prompt layer source offset"]
    continuation: Int[Tensor, "source offset"]
    layers: list[int]
    prompts: list[str | list[int]]
    position: int

    def precision(self, k: int = 1, per_prompt: bool = False) -> Float[Tensor, "... layer offset"]:
        """Precision@k, ``[layer, offset]`` averaged over prompts, or ``[prompt, layer, offset]``."""
        check_positive("k", k, integer=True)
        hits = (self.ranks < k).float().mean(dim=2)
        return hits if per_prompt else hits.mean(0)

    def baseline_precision(self, k: int = 1) -> Float[Tensor, " offset"]:
        """Precision@k of the neutral prompts alone (no transplant), averaged over prompts."""
        check_positive("k", k, integer=True)
        return (self.baseline_ranks < k).float().mean(dim=1).mean(0)

    def precision_table(self, k: int = 1) -> pd.DataFrame:
        """Precision@k as a wide ``layer x offset`` table (rows: layers; last row ``"none"``: no transplant)."""
        frame = pd.DataFrame(self.precision(k).numpy(), index=pd.Index(self.layers, name="layer"),
                             columns=pd.Index(range(self.ranks.shape[-1]), name="offset"))
        frame.loc["none"] = self.baseline_precision(k).numpy()
        return frame

    def table(self, k: int = 1) -> pd.DataFrame:
        """Deprecated: :meth:`precision_table` (wide) or :meth:`to_frame` (tidy)."""
        warnings.warn("TransplantResult.table is deprecated; use precision_table(k) for the wide layer x offset "
                      "table or to_frame() for the tidy one", DeprecationWarning, stacklevel=2)
        return self.precision_table(k)

    def to_frame(self, ks: Sequence[int] = (1, 5)) -> pd.DataFrame:
        """Tidy: one row per (prompt, layer, offset, k) with ``precision``; ``layer`` is ``-1`` for no transplant."""
        rows = []
        for k in ks:
            per_prompt = self.precision(k, per_prompt=True)
            baseline = (self.baseline_ranks < k).float().mean(dim=1)
            for p, prompt in enumerate(self.prompts):
                label = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
                for offset in range(self.ranks.shape[-1]):
                    rows.append({"prompt": label, "layer": -1, "offset": offset, "k": k,
                                 "precision": float(baseline[p, offset])})
                    for i, layer in enumerate(self.layers):
                        rows.append({"prompt": label, "layer": layer, "offset": offset, "k": k,
                                     "precision": float(per_prompt[p, i, offset])})
        return pd.DataFrame(rows)

    def plot(self, k: int = 1, title: str | None = None) -> Figure:
        """Precision@k as a heatmap (:func:`forethought.plots.plot_transplant_precision`)."""
        from forethought.plots import plot_transplant_precision

        return plot_transplant_precision(self, k=k, title=title)

    def __repr__(self) -> str:
        n_prompts, _, n_sources, n_steps = self.ranks.shape
        offset0 = self.precision(1)[:, 0]
        best = int(offset0.argmax())
        return (f"TransplantResult({n_sources} source{'s' if n_sources != 1 else ''} at position {self.position}, "
                f"{len(self.layers)} depths, {n_prompts} prompt{'s' if n_prompts != 1 else ''}, {n_steps} offsets; "
                f"precision@1 at offset 0: best {offset0[best].item():.3f} (layer {self.layers[best]}), "
                f"no transplant {self.baseline_precision(1)[0].item():.3f})")


@dataclass(repr=False)
class DirectionEffect:
    """How an intervention at position ``t`` changes the predictions at ``t + offset``, next to placebos.

    ``frame`` (also :meth:`to_frame`) has one row per (condition, draw, position, offset): ``condition`` is
    ``"direction"`` or ``"random"`` (draw ``0 .. n_random - 1``), ``read_pos = pos + offset``, and batch means of
    ``kl`` (KL(original || intervened) of the next-token distribution at ``read_pos``), ``top1_changed`` (the
    fraction of sequences whose top prediction changed) and ``delta_logprob`` (change in log-probability of
    the actual token at ``read_pos + 1``; NaN at the last position).
    """

    frame: pd.DataFrame
    mode: str
    layer: int
    hook: str

    def to_frame(self) -> pd.DataFrame:
        """The tidy table of every measurement (a copy of :attr:`frame`)."""
        return self.frame.copy()

    def summary(self) -> pd.DataFrame:
        """Means over positions and random draws: one row per (condition, offset)."""
        columns = ["kl", "top1_changed", "delta_logprob"]
        return self.frame.groupby(["condition", "offset"], as_index=False)[columns].mean()

    def plot(self, metric: str = "kl", title: str | None = None) -> Figure:
        """The direction against its placebos by offset (:func:`forethought.plots.plot_direction_effect`)."""
        from forethought.plots import plot_direction_effect

        return plot_direction_effect(self, metric=metric, title=title)

    def __repr__(self) -> str:
        frame = self.frame
        where = f"{self.mode} at {self.hook} layer {self.layer}"
        if frame.empty:
            return f"DirectionEffect({where}: no measurements)"
        first = int(frame["offset"].min())
        kl = frame[frame["offset"] == first].groupby("condition")["kl"].mean()
        n_random = frame.loc[frame["condition"] == "random", "draw"].nunique()
        placebo = f" vs random {kl['random']:.4g}" if n_random else ""
        return (f"DirectionEffect({where}: {frame['pos'].nunique()} positions, offsets "
                f"{sorted(frame['offset'].unique().tolist())}, {n_random} random draws; kl at offset {first}: "
                f"direction {kl['direction']:.4g}{placebo})")
