"""Probe sweeps: every model × layer × offset × method from one activation pass, as one tidy table.

:func:`probe_sweep` runs each model once over the data (the residual stream at every requested depth, plus
the final one), builds the future-token labels of every offset, fits the requested probe methods on the
training sequences (all (layer, offset) pairs at once), and scores them on held-out sequences against
the true tokens, against the model's own greedy predictions, and against the baselines and the control
task. The result is a :class:`~forethought.probes.result.ProbeSweep`: its table (``.to_frame()``) has one row per
(model, layer, offset, method), and it holds the fitted probes, the heatmaps and ``save``/``load``.

Methods (``method=``; each is one registered object, see :mod:`forethought.probes.methods`):

* ``"vocab"``: direct softmax-regression probes trained together with AdamW
  (:mod:`forethought.probes.vocabulary`);
* ``"logistic"``: the same probes fitted one by one by scikit-learn (:mod:`forethought.probes.logistic`);
  for small label spaces;
* ``"future_lens"``: the Future-Lens linear model decoded by the model's own final norm and unembedding,
  least-squares initialised then fine-tuned (:mod:`forethought.probes.future_lens`);
* ``"ridge"``: the least-squares lens alone, fitted by the ridge-regression probes of
  :mod:`forethought.probes.regression` (penalty chosen per coordinate on held-out sequences); no control;
* ``"learned_prompt"``: Future Lens' learned prompt, a soft prompt per (layer, offset) into which the state is
  transplanted, the model's greedy continuation being the prediction (:mod:`forethought.probes.learned_prompt`);
  no control.

Columns: ``model, layer, offset, method, hook, label_space, n_classes, coverage``; the probe's
``top1`` (with ``top1_ci_low``, ``top1_ci_high``: a 95 % bootstrap interval over test sequences), ``top5``,
``cross_entropy`` against the true token ``t + 1 + N``; ``greedy_top1, greedy_top5, greedy_cross_entropy``
against the model's own prediction of that token (the argmax of its next-token distribution at ``t + N``);
``unigram_*`` and ``bigram_*`` baselines (top1, top5, cross_entropy); ``best_baseline_top1`` (the stronger of
the two), ``gain_over_baseline = top1 − best_baseline_top1`` and ``gain_over_depth0 = top1 − top1 at depth 0``
(see :func:`add_gains`), each gain with a 95 % paired-bootstrap interval over test sequences
(``gain_over_baseline_ci_low/high``, ``gain_over_depth0_ci_low/high``; see :func:`paired_intervals`; with
``reference=`` also ``minus_reference`` and its interval); ``control_top1`` and ``selectivity = top1 -
control_top1``; ``r2`` of the lens
methods' predicted final-layer residual (mean over coordinates; NaN for direct probes; after the Future Lens's
KL fine-tuning it can be negative, as the final norm ignores the residual's mean and scale); ``n_train`` and
``n_test`` examples; ``seed``.

**Label space.** With ``top_k`` the probes train on the ``k`` most frequent future tokens plus ``"other"``
(``label_space = "top{k}+other"``), but ``"other"`` is never a prediction: top-1 and top-5 of every method, the
control task and the baselines take the best *kept* tokens, and every score is over all targets (see
:mod:`forethought.probes.targets`): a target outside the kept tokens is a miss, so ``top1 <= coverage`` (the
share of test targets inside the space), and the top-k score equals the whole vocabulary's on the targets the
space keeps, as far as the probes agree;
``top1_in_space`` is top-1 over the in-space targets only (equal to ``top1`` for the whole vocabulary), a
diagnostic, never a headline.

**Scale.** ``stream=True`` (automatic above ``config.stream_above_gib``) writes the activations (and, for the lens
methods, the future final-layer residuals) to on-disk
:class:`~forethought.probes.feature_store.FeatureStore` files one batch at a time and fits the probes from them
a chunk or minibatch at a time (the same probes, the same table): ``vocab`` and the Future Lens's fine-tuning
read minibatches, the least squares of ``future_lens`` and ``ridge`` accumulate sufficient statistics
(:mod:`forethought.probes.gram`). ``logistic`` (scikit-learn) cannot stream. Features are stored in the model's
dtype unless ``config.feature_dtype`` says otherwise; every sum over them is float32 or wider. The table's
settings record the seconds of the activation pass, of every method's fit and of its scoring
(``sweep.settings["seconds"]``). Under several processes (``torchrun``, ``accelerate
launch``) every process probes its own contiguous share of the depths over all the data, the rows are gathered
(every process returns the whole table) and process 0 saves the probes, joined along the depths: probes of one
depth never depend on another's, so the table equals a single process's.

Splits are by sequence: ``TokenSplits.validation`` (or ``test_fraction`` of a token tensor) is the test set;
``val_fraction`` of the remaining sequences is held out for early stopping.

The steps live in their own modules: :mod:`forethought.probes.examples` (the activation pass → probe examples,
in memory or streamed), :mod:`forethought.probes.plan` (one model's plan, the one object the steps read),
:mod:`forethought.probes.methods` (the registered methods, each fitting its probes from the plan) and
:mod:`forethought.probes.scoring` (metrics of the probes, their control task and the baselines); this module
joins them per model and process and keeps the table's helpers (:func:`add_gains`, :func:`seed_spread`).

Example:
    >>> import torch
    >>> from forethought.models import tiny_model
    >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=12, n_ctx=16)
    >>> tokens = torch.randint(0, 12, (40, 16), generator=torch.Generator().manual_seed(0))
    >>> sweep = probe_sweep({"random": model}, tokens, offsets=[0, 1], progress=False)
    >>> sweep.to_frame()[["model", "layer", "offset", "method"]].shape
    (4, 4)
    >>> sorted(sweep.probes["random"])
    ['vocab', 'vocab_control']
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from accelerate.utils import gather_object
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from forethought.bootstrap import bootstrap_ci
from forethought.data.tokens import TokenSplits, split_sequences
from forethought.devices import resolve_device
from forethought.distributed import current_world, gather_to_main, process_device
from forethought.errors import InvalidArgumentError, choices_text
from forethought.hook_names import RESID, hook_name, resolve_layers
from forethought.options import METHODS
from forethought.probes.baselines import control_labels
from forethought.probes.examples import Examples, collect_examples, split_data, stream_examples
from forethought.probes.feature_store import rows_that_fit
from forethought.probes.linear import AffineProbes, concat_layers
from forethought.probes.methods import ProbeMethod, get_method, method_names
from forethought.probes.plan import ProbeSweepConfig, SweepPlan, TrainingExamples
from forethought.probes.result import ProbeSweep
from forethought.probes.scoring import baseline_scores, score_probes
from forethought.probes.targets import LabelSpace, check_offsets, future_labels

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["COLUMNS", "METHODS", "SEQUENCE_HITS", "ProbeSweep", "ProbeSweepConfig", "add_gains", "check_stream",
           "label_space_summary", "paired_intervals", "probe_sweep", "seed_spread"]

#: A row's private entry with its per-sequence hits (dropped from the table once the intervals are computed).
SEQUENCE_HITS = "_sequence_hits"
COLUMNS = [
    "model", "layer", "offset", "method", "hook", "label_space", "n_classes", "coverage",
    "top1", "top1_ci_low", "top1_ci_high", "top5", "cross_entropy", "top1_in_space",
    "greedy_top1", "greedy_top5", "greedy_cross_entropy",
    "unigram_top1", "unigram_top5", "unigram_cross_entropy", "bigram_top1", "bigram_top5", "bigram_cross_entropy",
    "best_baseline_top1", "gain_over_baseline", "gain_over_depth0",
    "gain_over_baseline_ci_low", "gain_over_baseline_ci_high", "gain_over_depth0_ci_low", "gain_over_depth0_ci_high",
    "control_top1", "selectivity", "r2", "n_train", "n_test", "seed",
]


def probe_sweep(
    models: Mapping[str, Any] | Any,
    data: Int[Tensor, "seq pos"] | TokenSplits,
    layers: Sequence[int] | int | str = "all",
    offsets: Sequence[int] = (0, 1, 2, 3),
    method: str | Sequence[str] = "vocab",
    *,
    top_k: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    config: ProbeSweepConfig | None = None,
    save_dir: str | Path | None = None,
    stream: bool | str = "auto",
    reference: str | None = None,
    progress: bool = True,
) -> ProbeSweep:
    """Probe every (layer, offset) of every model with every method; one table row per measurement.

    Args:
        models: ``{"name": model}`` (or a single model, named ``"model"``).
        data: token sequences ``[seq, pos]`` (split into train/test by ``config.test_fraction``), or
            :class:`~forethought.data.TokenSplits` (its validation split is the test set).
        layers: ``"all"`` or residual-stream depths (0 = embeddings, ``n_layers`` = last block's output).
        offsets: future offsets ``N`` (``0`` = the next token ``t + 1``).
        method: a registered method (``"vocab"``, ``"logistic"``, ``"future_lens"``, ``"ridge"``,
            ``"learned_prompt"``; see
            :mod:`forethought.probes.methods`), or a list of them.
        top_k: overrides ``config.top_k`` (the label space).
        seed: seeds the splits, the control task, and every trainer.
        device: where to run the models and train the probes (default: each model's device).
        config: further settings (:class:`ProbeSweepConfig`).
        save_dir: if given, fitted probes are saved to ``save_dir/<model>/<method>``.
        stream: ``True`` writes the activations to temporary files batch by batch and fits the probes from
            them a chunk or minibatch at a time, so host memory is set by the batch sizes instead of the number
            of tokens (every method but ``"logistic"``; the results equal the in-memory sweep's). ``"auto"``
            streams when every method can and the activations would exceed ``config.stream_above_gib``.
        reference: the name of one of ``models``: every other model's rows get ``minus_reference`` (its top-1
            minus the reference's at the same layer, offset and method) with a 95 % paired-bootstrap interval
            over the shared test sequences (``minus_reference_ci_low/high``).
        progress: show progress bars.

    Returns:
        A :class:`~forethought.probes.result.ProbeSweep`: ``.to_frame()`` is the table with the columns listed in
        the module docstring, ``.probes`` the fitted probes by model and method (on process 0 under several
        processes), ``.plot()`` the heatmaps.
    """
    config = config or ProbeSweepConfig()
    if top_k is not None:
        config = replace(config, top_k=top_k)
    device = resolve_device(device)
    models = dict(models) if isinstance(models, Mapping) else {"model": models}
    if not models:
        raise InvalidArgumentError("models is empty; pass {'name': model, ...}")
    names = [method] if isinstance(method, str) else list(method)
    if not names:
        raise InvalidArgumentError(f"method={method!r} is unknown; choose from {choices_text(method_names())}")
    methods = [get_method(name) for name in names]
    check_stream(stream, names, config)
    train, test = split_data(data, config.test_fraction, seed)
    offsets = check_offsets(offsets, train.shape[1])
    fit, val = split_sequences(train, val_fraction=config.val_fraction, seed=seed + 1)
    world = current_world()
    device = process_device(device, world)
    if reference is not None and reference not in models:
        raise InvalidArgumentError(f"reference={reference!r} is not among the models {sorted(models)}")
    rows, probes, seconds = [], {}, {}
    shown = progress and (world is None or world.is_main_process)
    overall = tqdm(total=len(models) * len(methods), desc="probe sweep", unit="fit", disable=not shown)
    for name, model in models.items():
        overall.set_postfix(model=name)
        plan = _plan(name, model, layers, offsets, fit, config, seed, device, progress=shown,
                     streamed=_should_stream(stream, model, layers, methods, len(train) + len(test), train.shape[1],
                                             len(offsets), config), world=world)
        model_rows, fitted, seconds[name] = _sweep_model(plan, methods, (fit, val, test)) if plan.layers else \
            ([], {}, {})
        rows += model_rows
        probes[name] = _gather_probes(world, plan, fitted) if world is not None else fitted
        overall.update(len(methods))
    overall.close()
    if world is not None:
        rows = sorted(gather_object(rows), key=_row_order(models, names))  # every process's rows, on every process
    intervals = paired_intervals(rows, reference, config.n_resamples, seed)
    table = add_gains(pd.DataFrame([{k: v for k, v in row.items() if k != SEQUENCE_HITS} for row in rows],
                                   columns=COLUMNS))
    for column, values in intervals.items():
        table[column] = values
    result = ProbeSweep(table, probes, {"offsets": offsets, "methods": names, "seed": seed, "top_k": config.top_k,
                                        "reference": reference, "streamed": stream, "seconds": seconds})
    if save_dir is not None and (world is None or world.is_main_process):
        result.save_probes(save_dir, models)
    return result


@dataclass(frozen=True)
class SequenceHits:
    """One row's top-1 hits summed per test sequence: the probe's, its best baseline's, and the examples."""

    probe: np.ndarray
    best_baseline: np.ndarray
    counts: np.ndarray


def paired_intervals(rows: list[dict[str, Any]], reference: str | None, n_resamples: int, seed: int
                     ) -> dict[str, list[float]]:
    """95 % paired-bootstrap intervals of every difference a sweep reports, one value per row.

    Every difference is between two predictors scored on the same test sequences, so the sequences are resampled
    together (one set of bootstrap weights for all) and the interval is that of the difference itself:

    * ``gain_over_baseline_ci_low/high``: the probe's top-1 minus that of the stronger baseline of its offset;
    * ``gain_over_depth0_ci_low/high``: minus the top-1 of the same model, method and offset at depth 0 (NaN
      where depth 0 was not probed);
    * with ``reference`` (a model name): ``minus_reference`` (this model's top-1 minus the reference model's at
      the same layer, offset and method) and its ``_ci_low/high``; NaN on the reference's own rows.
    """
    if not rows:
        return {}
    hits = [row[SEQUENCE_HITS] for row in rows]
    counts = hits[0].counts
    key = {(row["model"], row["method"], row["layer"], row["offset"]): h for row, h in zip(rows, hits, strict=True)}
    nan = np.full_like(counts, np.nan)
    differences = {
        "gain_over_baseline": [h.probe - h.best_baseline for h in hits],
        "gain_over_depth0": [h.probe - key[(r["model"], r["method"], 0, r["offset"])].probe
                             if (r["model"], r["method"], 0, r["offset"]) in key else nan
                             for r, h in zip(rows, hits, strict=True)],
    }
    out: dict[str, list[float]] = {}
    if reference is not None:
        differences["minus_reference"] = [
            h.probe - key[(reference, r["method"], r["layer"], r["offset"])].probe
            if r["model"] != reference and (reference, r["method"], r["layer"], r["offset"]) in key else nan
            for r, h in zip(rows, hits, strict=True)]
        out["minus_reference"] = [float(d.sum() / counts.sum()) for d in differences["minus_reference"]]
    values = torch.as_tensor(np.stack([np.stack(v) for v in differences.values()]), device="cpu")
    low, high = bootstrap_ci(values, torch.as_tensor(counts, device="cpu"), n_resamples=n_resamples, seed=seed)
    for index, name in enumerate(differences):
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = low[index].tolist(), high[index].tolist()
    return out


def _row_order(models: Mapping[str, Any], methods: list[str]) -> Any:
    """The order of a single process's rows: model, method, layer, offset."""
    model_index, method_index = {name: i for i, name in enumerate(models)}, {m: i for i, m in enumerate(methods)}
    return lambda row: (model_index[row["model"]], method_index[row["method"]], row["layer"], row["offset"])


def add_gains(table: pd.DataFrame) -> pd.DataFrame:
    """Fill the columns comparing each probe's top-1 with the baselines and with depth 0.

    They are ``best_baseline_top1 = max(unigram_top1, bigram_top1)``, ``gain_over_baseline = top1 −
    best_baseline_top1`` and ``gain_over_depth0 = top1 − top1 of the same model, method and offset at depth 0``
    (NaN when depth 0 was not probed). Depth 0 reads the current token's embedding alone: it is the
    current-token reference at the probe's own capacity.
    """
    table = table.copy()
    table["best_baseline_top1"] = table[["unigram_top1", "bigram_top1"]].max(axis=1)
    table["gain_over_baseline"] = table["top1"] - table["best_baseline_top1"]
    keys = ["model", "method", "offset"]
    depth0 = table[table["layer"] == 0].set_index(keys)["top1"]
    reference = depth0.reindex(pd.MultiIndex.from_frame(table[keys])).to_numpy()
    table["gain_over_depth0"] = table["top1"].to_numpy() - reference
    return table


def label_space_summary(table: pd.DataFrame) -> dict[str, Any]:
    """What a probe table's label space is and how much of the targets it covers (for a report)."""
    coverage = table.groupby("offset")["coverage"].first()
    return {"label_space": sorted(set(table["label_space"])), "n_classes": sorted(int(n) for n in
                                                                                 set(table["n_classes"])),
            "coverage_by_offset": {int(k): float(v) for k, v in coverage.items()},
            "scoring": "over all targets: a target outside the kept tokens is a miss for every method, the greedy "
                       "prediction and the baselines ('other' is never a hit), so top1 <= coverage"}


def seed_spread(table: pd.DataFrame, metrics: Sequence[str] = ("top1", "gain_over_baseline", "selectivity")
                ) -> pd.DataFrame:
    """The spread over probe seeds of a table holding several sweeps (column ``seed``).

    There is one row per (model, layer, offset, method) with ``n_seeds`` and ``<metric>_mean``, ``_std``,
    ``_min``, ``_max`` for every metric.

    Example:
        >>> frame = pd.DataFrame({"model": "m", "layer": 0, "offset": 0, "method": "vocab", "seed": [0, 1],
        ...                       "top1": [0.25, 0.75]})
        >>> seed_spread(frame, metrics=["top1"])[["n_seeds", "top1_mean", "top1_std"]].values.tolist()
        [[2.0, 0.5, 0.3535533905932738]]
    """
    keys = ["model", "layer", "offset", "method"]
    groups = table.groupby(keys, sort=False)
    out = groups["seed"].nunique().rename("n_seeds").to_frame()
    for metric in metrics:
        if metric in table:
            stats = groups[metric].agg(["mean", "std", "min", "max"])
            out = out.join(stats.add_prefix(f"{metric}_"))
    return out.reset_index()


def check_stream(stream: bool | str, methods: Sequence[str], config: ProbeSweepConfig) -> None:
    """Refuse a ``stream`` setting that cannot run.

    That is an unknown value, methods that cannot stream, or a missing ``stream_dir``.
    """
    if stream not in (True, False, "auto"):
        raise InvalidArgumentError(f"stream={stream!r} is not allowed; expected True, False or 'auto'")
    refused = [get_method(name) for name in methods if not get_method(name).streams]
    if stream is True and refused:
        raise InvalidArgumentError(f"stream=True cannot fit method={refused[0].name!r}: {refused[0].no_stream}; run "
                                   "it with stream=False")
    if stream is not False and config.stream_dir is not None and not Path(config.stream_dir).is_dir():
        raise InvalidArgumentError(f"stream_dir={config.stream_dir!r} is not a directory; create it or leave "
                                   "stream_dir unset for the system's temporary directory")


def _should_stream(stream: bool | str, model: TransformerBridge, layers: Any, methods: list[ProbeMethod], n_seq: int,
                   seq_len: int, n_offsets: int, config: ProbeSweepConfig) -> bool:
    """Whether this model's sweep streams.

    It streams as asked, or (``"auto"``) when its activations would not fit the memory budget and every method
    can stream.
    """
    if stream != "auto":
        return bool(stream)
    if not all(method.streams for method in methods):
        return False
    depths = len({*resolve_layers(model, layers, RESID), model.cfg.n_layers})
    depths += n_offsets if any(method.needs_resid for method in methods) else 0
    element = feature_dtype(config, model).itemsize
    return depths * n_seq * seq_len * model.cfg.d_model * element > config.stream_above_gib * 2**30


def feature_dtype(config: ProbeSweepConfig, model: TransformerBridge) -> torch.dtype:
    """The dtype a sweep stores activations in: ``config.feature_dtype``, else the model's own."""
    return config.feature_dtype or next(model.parameters()).dtype


def _plan(name: str, model: TransformerBridge, layers: Any, offsets: list[int], fit_tokens: Tensor,
          config: ProbeSweepConfig, seed: int, device: Any, *, progress: bool, streamed: bool,
          world: Any) -> SweepPlan:
    """One model's plan: its depths (this process's share under several), its device and its label space."""
    layers = resolve_layers(model, layers, RESID)
    if world is not None:  # each process probes its own depths over all the data (probes of a depth are independent)
        with world.split_between_processes(layers) as mine:
            layers = list(mine)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if layers and device != next(model.parameters()).device:
        model = model.to(device)
    space = (LabelSpace.top_k(future_labels(fit_tokens, offsets), config.top_k, model.cfg.d_vocab)
             if config.top_k is not None else LabelSpace.full(model.cfg.d_vocab))
    return SweepPlan(name=name, model=model, layers=layers, offsets=offsets, space=space, config=config, seed=seed,
                     device=device, progress=progress, streamed=streamed)


def _sweep_model(plan: SweepPlan, methods: list[ProbeMethod], splits: tuple[Tensor, Tensor, Tensor]
                 ) -> tuple[list[dict[str, Any]], dict[str, AffineProbes], dict[str, Any]]:
    """The activation pass over one model's fit, held-out and test sequences, then every method fitted and scored.

    Returns the rows, the fitted probes and the seconds of each step (``activations``, ``fit`` and ``score`` per
    method).
    """
    config = plan.config
    dtype = feature_dtype(config, plan.model)
    with_resid = any(method.needs_resid for method in methods)
    start = _clock(plan.device)
    with ExitStack() as cleanup:
        if plan.streamed:
            directory = Path(cleanup.enter_context(TemporaryDirectory(prefix="forethought-features-",
                                                                      dir=config.stream_dir)))
            examples = tuple(stream_examples(plan.model, tokens, plan.layers, plan.offsets, plan.space,
                                             directory / f"{part}.bin", batch_size=config.batch_size,
                                             feature_dtype=dtype, device=plan.device, with_resid=with_resid,
                                             progress=plan.progress)
                             for part, tokens in zip(("fit", "val", "test"), splits, strict=True))
            for split in examples:
                for store in (split.features, split.future_resid):
                    if store is not None:
                        cleanup.callback(store.close)
        else:
            examples = tuple(collect_examples(plan.model, tokens, plan.layers, plan.offsets, plan.space,
                                              batch_size=config.batch_size, feature_dtype=dtype,
                                              device=plan.device, with_resid=with_resid, progress=plan.progress)
                             for tokens in splits)
        seconds: dict[str, Any] = {"activations": _clock(plan.device) - start}
        rows, fitted = _fit_and_score(plan, methods, examples, splits[2], seconds)
        return rows, fitted, seconds


def _score_chunk(plan: SweepPlan, probes: AffineProbes) -> int:
    """Test examples scored at once: ``config.eval_batch_size``, else what the device's free memory holds.

    A row makes the logits of every probe and its control (float32, with the metrics' temporaries) and, for the
    lens methods, their vocabulary logits and predicted residuals.
    """
    if plan.config.eval_batch_size is not None:
        return plan.config.eval_batch_size
    pairs, width = len(probes.layers) * len(probes.tasks), probes.n_classes
    if hasattr(probes, "predict_resid"):
        width += plan.space.d_vocab + 2 * probes.d_model
    return rows_that_fit(plan.device, bytes_per_row=2 * pairs * width * 4 * 4, default=2048)


def _clock(device: torch.device) -> float:
    """Seconds on a monotonic clock, once the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _gather_probes(world: Any, plan: SweepPlan, fitted: dict[str, AffineProbes]) -> dict[str, AffineProbes]:
    """Every process's probes of one model on process 0, joined along the layer axis (the others get ``{}``)."""
    parts = gather_to_main(world, [(path, (probes.replace(model=None) if hasattr(probes, "model") else probes)
                                   .to("cpu")) for path, probes in fitted.items()])
    if not world.is_main_process:
        return {}
    by_path: dict[str, list[Any]] = {}
    for path, probes in (item for part in parts for item in part):
        by_path.setdefault(path, []).append(probes)
    joined = {path: concat_layers(pieces).to(plan.device) for path, pieces in by_path.items()}
    return {path: probes.replace(model=plan.model) if hasattr(probes, "model") else probes
            for path, probes in joined.items()}


def _fit_and_score(plan: SweepPlan, methods: list[ProbeMethod], examples: tuple[Examples, Examples, Examples],
                   test_tokens: Tensor, seconds: dict[str, Any]
                   ) -> tuple[list[dict[str, Any]], dict[str, AffineProbes]]:
    """Baselines, then every method's probes fitted and scored.

    Returns one row per (layer, offset, method), and the fitted probes by the directory name each is saved
    under (``method``, ``method_control``); ``seconds`` gets the time of every method's fit and scoring.
    """
    fit, val, test = examples
    model, space, config, seed = plan.model, plan.space, plan.config, plan.seed
    n_test_sequences = len(test_tokens)
    controls = torch.stack([control_labels(fit.labels[i], model.cfg.d_vocab, seed=seed + 7919 * (i + 1))
                            for i in range(len(plan.offsets))])  # [offset, d_vocab]
    training = TrainingExamples(fit, val, controls, control=config.control)
    baselines, baseline_hits = baseline_scores(torch.cat([fit.current, val.current]),
                                               torch.cat([fit.labels, val.labels], 1), test, space, n_test_sequences)
    coverage = space.coverage(future_labels(test_tokens, plan.offsets))
    rows, saved = [], {}
    for method in methods:
        start = _clock(plan.device)
        probes, control = method.fit(plan, training)
        if not method.has_control:
            control = None
        fitted_at = _clock(plan.device)
        scores = score_probes(probes, control, test, controls, space, n_test_sequences, _score_chunk(plan, probes),
                              config.n_resamples, seed)
        seconds.setdefault("fit", {})[method.name] = fitted_at - start
        seconds.setdefault("score", {})[method.name] = _clock(plan.device) - fitted_at
        for fitted, suffix in ((probes, ""), (control, "_control")):
            if fitted is not None:
                fitted.meta.update(model_name=plan.name, hook=RESID, seed=seed)
                saved[f"{method.name}{suffix}"] = fitted
        hits, counts = scores.pop("sequence_hits"), scores.pop("sequence_counts")
        for i, layer in enumerate(plan.layers):
            for j, offset in enumerate(plan.offsets):
                row = {"model": plan.name, "layer": layer, "offset": offset, "method": method.name,
                       "hook": hook_name(model, RESID, layer), "label_space": space.name,
                       "n_classes": space.n_classes, "coverage": coverage,
                       **{key: float(value[i, j]) for key, value in scores.items()},
                       **{key: float(value[j]) for key, value in baselines.items()},
                       "n_train": fit.n + val.n, "n_test": test.n, "seed": seed}
                row["selectivity"] = row["top1"] - row["control_top1"]
                best = "unigram" if row["unigram_top1"] >= row["bigram_top1"] else "bigram"
                row[SEQUENCE_HITS] = SequenceHits(hits[i, j].numpy(), baseline_hits[best][j].numpy(),
                                                  counts.numpy())
                rows.append(row)
    return rows, saved
