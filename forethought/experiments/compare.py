"""``forethought compare``: vanilla vs myopic side by side — the central artefact of the paper.

Given a vanilla and a myopic model (and optionally a transformer bigram), :func:`compare_regimes` measures on the
same held-out text

* each model's validation loss, overall and by position, and the myopia gap
  (:func:`forethought.myopic_training.evaluate_regimes`; a model named ``"bigram"`` runs with its past ablated);
* future-token probe accuracy at every layer × offset of every model but the bigram
  (:func:`forethought.probes.probe_sweep`), and each model's difference to the baseline model (``"vanilla"``):
  how much of what a vanilla model's hidden state says about later tokens survives myopic training.

Outputs in ``out_dir`` (all written atomically): ``report.json`` (losses, gaps, the probe comparison, config,
provenance), ``loss_by_position.csv``, ``probes.csv`` (one row per model × layer × offset × method),
``probe_comparison.csv`` (one row per layer × offset × method: each model's top-1 and its difference to the
baseline), ``loss_by_position.png``, ``loss_difference.png`` and ``probe_top1.png`` (heatmaps with a difference
panel).

Example:
    $ forethought myopia-gap --preset cpu --out results/myopia_cpu
    $ forethought compare --run results/myopia_cpu --out results/compare_cpu
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from forethought import plots
from forethought.data import TokenSplits, load_texts, make_token_splits
from forethought.errors import InvalidArgumentError
from forethought.experiments.myopia_gap import RUNS
from forethought.experiments.probe_sweep import parse_ints, parse_models, shared_tokenizer
from forethought.models import load_model
from forethought.myopic_training.evaluation import MyopiaReport, evaluate_regimes, plot_report
from forethought.myopic_training.trainer import MODEL_DIR
from forethought.probes.sweep import METHODS, ProbeSweepConfig, probe_sweep
from forethought.reporting import prepare_out_dir, provenance, save_figure, write_csv, write_json

HELP = ("Compare a vanilla and a myopic model (and a transformer bigram) side by side: losses by position, "
        "the myopia gap, and probe accuracy by layer x offset with its difference.")

RUN_REGIMES = ("vanilla", "myopic", "bigram")
NOT_PROBED = ("bigram",)


@dataclass
class RegimeComparison:
    """What :func:`compare_regimes` measured: the loss report, the probe table and the side-by-side table."""

    losses: MyopiaReport
    probes: pd.DataFrame
    comparison: pd.DataFrame


def compare_regimes(
    models: Mapping[str, Any],
    data: TokenSplits,
    out_dir: str | Path | None = None,
    layers: Sequence[int] | str = "all",
    offsets: Sequence[int] = (0, 1, 2, 3),
    method: str = "vocab",
    baseline: str = "vanilla",
    seed: int = 0,
    config: ProbeSweepConfig | None = None,
    progress: bool = True,
) -> RegimeComparison:
    """Losses, myopia gap and probe accuracy of every model, side by side (see the module docstring).

    Args:
        models: ``{"vanilla": m1, "myopic": m2, "bigram": m3}``; any names work, ``baseline`` must be one of them.
            A model named ``"bigram"`` is evaluated with its past ablated and not probed.
        data: token splits; probes train on ``data.train`` and everything is scored on ``data.validation``.
        out_dir: if given, write the tables, report and figures there.
        layers, offsets, method, config: passed to :func:`forethought.probes.probe_sweep`.
        baseline: the model every other one is compared with.
        seed: seeds the probe sweep.
        progress: show progress bars.

    Example:
        >>> import torch
        >>> from forethought.data import TokenSplits
        >>> from forethought.models import tiny_model
        >>> tokens = torch.randint(0, 12, (60, 16), generator=torch.Generator().manual_seed(0))
        >>> data = TokenSplits(train=tokens[:48], validation=tokens[48:], tokenizer=None)
        >>> models = {name: tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=12, n_ctx=16, seed=seed)
        ...           for seed, name in enumerate(["vanilla", "myopic"])}
        >>> result = compare_regimes(models, data, offsets=[0, 1], progress=False)
        >>> list(result.comparison.columns)[:5]
        ['layer', 'offset', 'method', 'vanilla_top1', 'myopic_top1']
    """
    if baseline not in models:
        raise InvalidArgumentError(f"baseline={baseline!r} is not among the models {sorted(models)}; name one of "
                                   "them 'vanilla' or pass baseline=...")
    losses = evaluate_regimes(models, data, progress=progress)
    probed = {name: model for name, model in models.items() if name not in NOT_PROBED}
    probes = probe_sweep(probed, data, layers=layers, offsets=offsets, method=method, seed=seed, config=config,
                         progress=progress)
    comparison = side_by_side(probes, baseline)
    result = RegimeComparison(losses=losses, probes=probes, comparison=comparison)
    if out_dir is not None:
        _write(result, Path(out_dir), baseline, {"layers": layers, "offsets": list(offsets), "method": method,
                                                 "baseline": baseline, "seed": seed}, seed)
    return result


def side_by_side(probes: pd.DataFrame, baseline: str, metric: str = "top1") -> pd.DataFrame:
    """One row per (layer, offset, method): each model's ``metric`` and its difference to ``baseline``'s."""
    wide = probes.pivot_table(index=["layer", "offset", "method"], columns="model", values=metric, sort=False)
    order = [baseline] + [name for name in probes["model"].unique() if name != baseline]
    table = pd.DataFrame({f"{name}_{metric}": wide[name] for name in order})
    for name in order[1:]:
        table[f"{name}_minus_{baseline}"] = wide[name] - wide[baseline]
    return table.reset_index()


def _write(result: RegimeComparison, out: Path, baseline: str, settings: dict[str, Any], seed: int) -> None:
    out = prepare_out_dir(out)
    write_csv(out / "loss_by_position.csv", result.losses.to_frame())
    write_csv(out / "probes.csv", result.probes)
    write_csv(out / "probe_comparison.csv", result.comparison)
    for name, figure in plot_report(result.losses, baseline=baseline).items():
        save_figure(figure, out / f"{name}.png")
    save_figure(plots.plot_probe_heatmap(result.probes, metric="top1"), out / "probe_top1.png")
    write_json(out / "report.json", {
        **result.losses.to_dict(),
        "probe_comparison": result.comparison.to_dict(orient="records"),
        "config": settings,
        "files": ["report.json", "loss_by_position.csv", "probes.csv", "probe_comparison.csv",
                  "loss_by_position.png", "loss_difference.png", "probe_top1.png"],
        "provenance": provenance(seed),
    })


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a `forethought myopia-gap` output directory: compares its vanilla, myopic "
                        "and bigram models")
    source.add_argument("--model", action="append", metavar="NAME=DIR_OR_HUB_NAME",
                        help="a model to compare, named (repeat; one must be named like --baseline)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--baseline", default="vanilla", help="the model the others are compared with")
    parser.add_argument("--dataset", default="builtin", help="'builtin', a .txt/.jsonl file or directory, or a HF "
                        "dataset name (default: %(default)s)")
    parser.add_argument("--text-field", default="text", help="text column of .jsonl files and HF datasets")
    parser.add_argument("--seq-len", type=int, help="tokens per sequence (default: the run's, else 64)")
    parser.add_argument("--max-sequences", type=int, default=2000, help="use at most this many sequences")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of sequences held out for scoring")
    parser.add_argument("--layers", default="all", help="'all' or comma-separated residual depths")
    parser.add_argument("--offsets", default="0,1,2,3", help="comma-separated future offsets (0 = next token)")
    parser.add_argument("--method", default="vocab", choices=METHODS, help="probe method (default: %(default)s)")
    parser.add_argument("--top-k", type=int, help="predict the k most frequent future tokens plus 'other'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="where to run models and probes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    sources, seq_len = _run_models(Path(args.run)) if args.run else (parse_models(args.model), None)
    seq_len = args.seq_len or seq_len or 64
    layers: Any = "all" if args.layers.strip() == "all" else parse_ints(args.layers, "layers")
    offsets = parse_ints(args.offsets, "offsets")
    if args.baseline not in sources:
        raise InvalidArgumentError(f"--baseline {args.baseline!r} is not among the models {sorted(sources)}")
    prepare_out_dir(args.out)
    models = {name: load_model(source, device=args.device) for name, source in sources.items()}
    tokenizer = shared_tokenizer(models)
    splits = make_token_splits(load_texts(args.dataset, text_field=args.text_field), tokenizer, seq_len,
                               val_fraction=args.val_fraction, seed=args.seed, max_sequences=args.max_sequences)
    result = compare_regimes(models, splits, out_dir=args.out, layers=layers, offsets=offsets, method=args.method,
                             baseline=args.baseline, seed=args.seed, config=ProbeSweepConfig(top_k=args.top_k),
                             progress=not args.no_progress)
    gap = result.losses.myopia_gap
    print(f"myopia gap {'n/a' if gap is None else f'{gap:+.4f}'} nats/token; wrote {args.out}")
    return 0


def _run_models(run: Path) -> tuple[dict[str, str], int | None]:
    """The regime models saved by ``forethought myopia-gap`` in ``run`` and its sequence length."""
    models = {regime: str(run / RUNS / regime / MODEL_DIR) for regime in RUN_REGIMES
              if (run / RUNS / regime / MODEL_DIR).is_dir()}
    if not models:
        raise InvalidArgumentError(f"--run {str(run)!r} holds no trained models (expected runs/<regime>/model from "
                                   "`forethought myopia-gap`)")
    try:
        seq_len = json.loads((run / "report.json").read_text())["data"]["seq_len"]
    except (OSError, KeyError, ValueError):
        seq_len = None
    return models, seq_len
