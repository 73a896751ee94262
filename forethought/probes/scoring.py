"""Scoring a sweep's probes on held-out examples: the probes, their control task, and the count baselines.

:func:`score_probes` reads the test examples a chunk at a time and accumulates, for every (layer, offset),
top-1 / top-5 / cross-entropy against the true future token and against the model's own greedy prediction,
a bootstrap interval (over test sequences) of top-1, the control task's top-1 and, for the lens methods, the
R² of the predicted final-layer residual. :func:`baseline_scores` scores the unigram and bigram-at-distance
baselines counted on the training examples. Every score is over all targets of the label space (a target
outside the kept tokens is a miss; see :mod:`forethought.probes.targets`).
"""

from __future__ import annotations

import itertools
import math

import torch
from jaxtyping import Float, Int
from torch import Tensor

from forethought.bootstrap import bootstrap_ci
from forethought.probes.baselines import BigramBaseline, UnigramBaseline
from forethought.probes.examples import Examples
from forethought.probes.feature_store import feature_chunks
from forethought.probes.linear import AffineProbes
from forethought.probes.metrics import MetricAccumulator
from forethought.probes.targets import LabelSpace


@torch.no_grad()
def score_probes(probes: AffineProbes, control: AffineProbes | None, test: Examples,
                 controls: Int[Tensor, "offset d_vocab"], space: LabelSpace, n_sequences: int, chunk: int,
                 n_resamples: int, seed: int) -> dict[str, Float[Tensor, "layer offset"]]:
    """Metrics ``[layer, offset]`` of the probes (and their controls) on the test split, chunk by chunk.

    Scores are over all targets of ``space``, with a bootstrap interval (over test sequences) of the probe's top-1.
    ``sequence_hits`` (``[layer, offset, n_sequences]``) and ``sequence_counts`` (``[n_sequences]``) are the top-1
    hits and examples of every test sequence, for paired intervals. Every result is on the CPU.
    """
    true = MetricAccumulator(space=space, n_groups=n_sequences)
    greedy, ctrl = MetricAccumulator(space=space), MetricAccumulator(ks=(1,), space=space)
    lens = test.future_resid is not None and hasattr(probes, "predict_resid")
    n_layers, n_tasks, d_model = len(probes.layers), len(probes.tasks), probes.d_model
    # sums over examples are kept on the probes' device in float64, read back once at the end
    squared_error = torch.zeros(n_layers, n_tasks, d_model, dtype=torch.float64, device=probes.device)
    target_sum = torch.zeros(n_tasks, d_model, dtype=torch.float64, device=probes.device)
    target_square = torch.zeros_like(target_sum)
    futures = feature_chunks(test.future_resid, chunk) if lens else itertools.repeat(None)
    pieces = zip(range(0, test.n, chunk), feature_chunks(test.features, chunk), strict=True)
    for (start, features), future in zip(pieces, futures, strict=False):  # futures: as many, or None forever
        part = slice(start, start + chunk)
        logits = probes.logits(features).float()
        true.add(logits, test.labels[:, part], groups=test.sequence[part])
        greedy.add(logits, test.greedy[:, part])
        if control is not None:
            ctrl.add(control.logits(features).float(), controls[:, test.current[part]])
        if future is not None:
            target = future.to(probes.device).double()  # [offset, n, d]
            error = probes.predict_resid(features).double() - target  # [layer, offset, n, d]
            squared_error += error.square().sum(2)
            target_sum += target.sum(1)
            target_square += target.square().sum(1)
    out = {**true.result(), **{f"greedy_{k}": v for k, v in greedy.result().items() if k != "top1_in_space"}}
    out.setdefault("top1_in_space", out["top1"])
    group_hits, group_counts = true.groups()
    out["top1_ci_low"], out["top1_ci_high"] = bootstrap_ci(group_hits, group_counts, n_resamples=n_resamples,
                                                           seed=seed)
    out["sequence_hits"], out["sequence_counts"] = group_hits, group_counts
    nan = torch.full((n_layers, n_tasks), math.nan, dtype=torch.float64, device="cpu")
    out["control_top1"] = ctrl.result()["top1"] if control is not None else nan
    out["r2"] = nan
    if lens:  # R² of every coordinate of the predicted residual, averaged over coordinates
        spread = (target_square - target_sum.square() / test.n).clamp(min=1e-12)  # [offset, d]
        out["r2"] = (1 - squared_error / spread).mean(-1).cpu()
    return out


def baseline_scores(current: Int[Tensor, " n"], labels: Int[Tensor, "offset n"], test: Examples, space: LabelSpace,
                    n_sequences: int) -> tuple[dict[str, Float[Tensor, " offset"]], dict[str, Tensor]]:
    """Unigram and bigram baselines counted on the training examples (``current`` tokens, ``labels``).

    Returns their scores on ``test`` (``unigram_top1``, ... one value per offset) and each baseline's top-1 hits
    summed per test sequence (``{"unigram": [offset, n_sequences], "bigram": ...}``, float64 on the CPU) for the
    paired intervals of the gains over them.
    """
    unigram = UnigramBaseline.fit(labels, space.n_classes).score(test.labels, space)
    bigram = BigramBaseline.fit(current, labels, space.n_classes, space.d_vocab, never=space.other).score(
        test.current, test.labels, space)
    sequence = test.sequence.cpu().long()
    hits = {}
    for name, scores in (("unigram", unigram), ("bigram", bigram)):
        per_example = scores.pop("hits").double()  # [offset, n]
        hits[name] = torch.zeros(per_example.shape[0], n_sequences, dtype=torch.float64, device="cpu").index_add_(
            1, sequence, per_example)
    return ({**{f"unigram_{k}": v for k, v in unigram.items()}, **{f"bigram_{k}": v for k, v in bigram.items()}},
            hits)
