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
    >>> repr(result).startswith("PatchResult(denoise patching of resid, kl: 3 depth x 3 pos, 1 example")
    True
"""

from __future__ import annotations

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


#: Why a cell's ``normalized`` value is NaN (the ``note`` column of :meth:`PatchResult.to_frame`).
NO_SCALE = "no scale: the clean and corrupted baselines coincide (the corruption does not change the metric here)"
#: How a token label reads at a position where the examples' clean tokens differ.
VARIES = "(varies)"


@dataclass(repr=False)
class PatchResult:
    """A patching sweep: one metric value per cell and example, with the unpatched baselines beside it.

    Attributes:
        per_example: metric of the patched run, ``[*dims, batch]``.
        clean_baseline: the metric on the unpatched clean run at the same read position, ``[*dims, batch]``.
        corrupt_baseline: the same on the unpatched corrupted run.
        dims: names of the swept axes: ``("depth", "pos")`` for the residual stream (``"depth"``: 0 is the
            embeddings, ``n_layers`` the final state), ``("layer", "pos")`` or ``("layer", "head")`` for a hook
            inside a block (``"layer"``: the block index).
        coords: the depth / layer / position / head index of every entry along each swept axis.
        read_positions: the position each cell's metric was read at, ``[*dims]``.
        metric: the metric's name.
        hook: the hook template that was patched (``"resid"``: depth 0 is the embeddings).
        direction: ``"denoise"`` or ``"noise"``.
        labels: the clean tokens as strings, one per position, shared by all examples; a position where the
            examples' tokens differ reads ``"(varies)"`` (``None`` without a tokenizer).
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
        return self.per_example.mean(-1) + 0.0  # + 0.0 turns -0.0 into 0.0

    def no_scale(self) -> Tensor:
        """``[*cells]`` booleans: cells whose clean and corrupted baselines (batch means) coincide.

        There the corruption changes nothing at the read position (e.g. it lies after the read position, or
        the metric is a KL read before the edited token), so a fraction restored has no meaning. "Coincide" is
        up to float noise: ``|clean - corrupt| <= 1e-5 + 1e-4 * max(|clean|, |corrupt|)``.
        """
        clean, corrupt = self.clean_baseline.mean(-1), self.corrupt_baseline.mean(-1)
        return (clean - corrupt).abs() <= 1e-5 + 1e-4 * clean.abs().maximum(corrupt.abs())

    def normalized(self) -> Float[Tensor, "*cells"]:
        """``(patched - corrupt) / (clean - corrupt)`` of the batch means: 0 is the corrupted run, 1 the clean.

        Whatever the metric's direction (for ``"kl"`` lower is cleaner, for ``"logit_diff"`` higher), 1 means
        the patched run behaves like the clean one. Cells without a scale (:meth:`no_scale`) are NaN, never
        ``inf``; their reason is the ``note`` column of :meth:`to_frame`.
        """
        clean, corrupt = self.clean_baseline.mean(-1), self.corrupt_baseline.mean(-1)
        fraction = (self.values - corrupt) / (clean - corrupt)
        return torch.where(self.no_scale(), torch.full_like(fraction, float("nan")), fraction) + 0.0

    def effect(self) -> Float[Tensor, "*cells"]:
        """What each cell does, as a fraction of the clean-corrupt difference: larger is a bigger effect.

        Denoising: the fraction of the clean behaviour the patch *restores* (:meth:`normalized`). Noising: the
        fraction it *destroys* (``1 - normalized``). NaN where :meth:`no_scale`.
        """
        return self.normalized() if self.direction == "denoise" else 1.0 - self.normalized() + 0.0

    @property
    def effect_name(self) -> str:
        """``"restored"`` (denoising) or ``"destroyed"`` (noising): what :meth:`effect` measures."""
        return "restored" if self.direction == "denoise" else "destroyed"

    def to_frame(self, per_example: bool = False) -> pd.DataFrame:
        """A tidy table: one row per cell (or per cell and example), with the axes as columns.

        Columns: the swept axes, ``read_pos``, ``value``, ``normalized`` (NaN where the baselines coincide),
        ``effect`` (:meth:`effect`: fraction restored by denoising, destroyed by noising), ``note`` (why
        ``normalized`` is NaN, else empty), ``clean``, ``corrupt`` (the batch means of the baselines), ``sem``
        (standard error of ``value``), ``metric``, ``hook``, ``direction``, and ``token`` (the clean token at
        the patched position, ``"(varies)"`` where the examples differ) when positions are swept and labels exist.
        """
        grid = [dict(zip(self.dims, cell, strict=True)) for cell in product(*(self.coords[d] for d in self.dims))]
        n = self.per_example.shape[-1]
        flat = {
            "read_pos": self.read_positions.flatten().tolist(),
            "value": self.values.flatten().tolist(),
            "normalized": self.normalized().flatten().tolist(),
            "effect": self.effect().flatten().tolist(),
            "note": [NO_SCALE if masked else "" for masked in self.no_scale().flatten().tolist()],
            "clean": (self.clean_baseline.mean(-1) + 0.0).flatten().tolist(),
            "corrupt": (self.corrupt_baseline.mean(-1) + 0.0).flatten().tolist(),
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
                for example, value in enumerate((self.per_example.reshape(len(grid), n)[i] + 0.0).tolist()):
                    rows.append({**row, "example": example, "value": value})
            else:
                rows.append(row)
        return pd.DataFrame(rows)

    def plot(self, normalized: bool = True, title: str | None = None) -> Figure:
        """The sweep as a heatmap (:func:`forethought.plots.plot_patching_heatmap`).

        By default the fraction restored (denoising) or destroyed (noising), so a bright cell is one that
        matters whatever the metric's direction; ``normalized=False`` shows the raw metric, coloured so that
        bright is closer to the clean run (for ``"kl"``: low KL).
        """
        from forethought.plots import plot_patching_heatmap

        return plot_patching_heatmap(self, normalized=normalized, title=title)

    def __repr__(self) -> str:
        shape = " x ".join(f"{len(self.coords[d])} {d}" for d in self.dims)
        n = self.per_example.shape[-1]
        head = (f"PatchResult({self.direction} patching of {self.hook}, {self.metric}: {shape}, {n} example"
                f"{'s' if n != 1 else ''}; ")
        effect = self.effect()
        if bool(effect.isnan().all()):
            return head + "no cell has a clean-corrupt difference to restore)"
        top = effect.nan_to_num(float("-inf")).flatten().argmax()
        index = [int(i) for i in torch.unravel_index(top, effect.shape)]
        where = ", ".join(f"{d} {self.coords[d][i]}" for d, i in zip(self.dims, index, strict=True))
        return (head + f"most {self.effect_name} {effect.flatten()[top].item() + 0.0:.3f} of the clean-corrupt "
                f"difference at {where}; {self.metric} {self.values.flatten()[top].item() + 0.0:.4g} there)")


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
        """Precision@k as a wide ``depth x offset`` table (rows: residual depths; last row ``"none"``: none)."""
        frame = pd.DataFrame(self.precision(k).numpy(), index=pd.Index(self.layers, name="depth"),
                             columns=pd.Index(range(self.ranks.shape[-1]), name="offset"))
        frame.loc["none"] = self.baseline_precision(k).numpy()
        return frame

    def to_frame(self, ks: Sequence[int] = (1, 5)) -> pd.DataFrame:
        """Tidy: one row per (prompt, depth, offset, k) with ``precision``.

        ``transplanted`` is False for the neutral prompt run without a transplant, whose ``depth`` is missing
        (``<NA>``, a nullable integer column); otherwise ``depth`` is the residual depth transplanted.
        """
        rows = []
        for k in ks:
            per_prompt = self.precision(k, per_prompt=True)
            baseline = (self.baseline_ranks < k).float().mean(dim=1)
            for p, prompt in enumerate(self.prompts):
                label = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
                for offset in range(self.ranks.shape[-1]):
                    rows.append({"prompt": label, "transplanted": False, "depth": None, "offset": offset, "k": k,
                                 "precision": float(baseline[p, offset])})
                    for i, depth in enumerate(self.layers):
                        rows.append({"prompt": label, "transplanted": True, "depth": depth, "offset": offset,
                                     "k": k, "precision": float(per_prompt[p, i, offset])})
        frame = pd.DataFrame(rows, columns=["prompt", "transplanted", "depth", "offset", "k", "precision"])
        return frame.astype({"depth": "Int64", "transplanted": bool})

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
                f"precision@1 at offset 0: best {offset0[best].item():.3f} (depth {self.layers[best]}), "
                f"no transplant {self.baseline_precision(1)[0].item():.3f})")


@dataclass(repr=False)
class DirectionEffect:
    """How an intervention at position ``t`` changes the predictions at ``t + offset``, next to placebos.

    ``depth`` is where it intervened: the residual depth for ``hook="resid"`` (0 is the embeddings), the block
    index for a hook inside a block (also :attr:`layer`, the name of the argument of ``direction_effect``).
    ``frame`` (also :meth:`to_frame`) has one row per (condition, draw, position, offset), with ``depth`` (or
    ``layer``, for a hook inside a block) in every row: ``condition`` is
    ``"direction"`` or ``"random"`` (draw ``0 .. n_random - 1``), ``read_pos = pos + offset``, and batch means of
    ``kl`` (KL(original || intervened) of the next-token distribution at ``read_pos``), ``top1_changed`` (the
    fraction of sequences whose top prediction changed) and ``delta_logprob`` (change in log-probability of
    the actual token at ``read_pos + 1``; NaN at the last position).
    """

    frame: pd.DataFrame
    mode: str
    layer: int
    hook: str

    @property
    def depth(self) -> int:
        """Where the intervention was made (a residual depth for ``hook="resid"``; see the class docstring)."""
        return self.layer

    @property
    def axis(self) -> str:
        """``"depth"`` for the residual stream, ``"layer"`` (a block index) for a hook inside a block."""
        return "depth" if self.hook == "resid" else "layer"

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
        where = f"{self.mode} at {self.hook} {self.axis} {self.layer}"
        if frame.empty:
            return f"DirectionEffect({where}: no measurements)"
        first = int(frame["offset"].min())
        kl = frame[frame["offset"] == first].groupby("condition")["kl"].mean()
        n_random = frame.loc[frame["condition"] == "random", "draw"].nunique()
        placebo = f" vs random {kl['random']:.4g}" if n_random else ""
        return (f"DirectionEffect({where}: {frame['pos'].nunique()} positions, offsets "
                f"{sorted(frame['offset'].unique().tolist())}, {n_random} random draws; kl at offset {first}: "
                f"direction {kl['direction']:.4g}{placebo})")
