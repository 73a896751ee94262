"""``forethought probe-sweep``: future-token probes at every layer × offset of one or more models.

Every ``--model NAME=DIR_OR_HUB_NAME`` is loaded, the text of ``--dataset`` is tokenised with the first model's
tokenizer (all models must share it) and cut into ``--seq-len`` sequences, split by sequence into training
and test sets, and :func:`forethought.probes.probe_sweep` probes every requested residual depth and offset
with every ``--method``.

Outputs in ``--out`` (all written atomically):

* ``probes.csv``: one row per (model, layer, offset, method): top1, top5, cross_entropy against the true
  token; greedy_* against the model's own prediction; unigram_* and bigram_* baselines; control_top1 and
  selectivity; r2 (lens methods); n_train, n_test (see :mod:`forethought.probes.sweep`);
* ``probe_top1.png``: top-1 accuracy heatmaps (layer × offset) per model, with a difference panel for two models;
* ``report.json``: the configuration, the models, the data sizes, the best (layer, offset) per model and
  method, and provenance;
* with ``--save-probes``: ``probes/<model>/<method>[_control]/`` (safetensors + JSON, see
  :mod:`forethought.probes.io`).

Example:
    forethought probe-sweep --model vanilla=runs/vanilla/model --model myopic=runs/myopic/model \\
        --dataset builtin --layers all --offsets 0,1,2,3 --top-k 255 --out results/probes
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, replace
from typing import Any

from forethought import plots
from forethought.data import load_texts, make_token_splits
from forethought.errors import InvalidArgumentError, ModelNotAvailableError, VocabularyMismatchError
from forethought.models import load_model
from forethought.probes.sweep import METHODS, ProbeSweepConfig, probe_sweep
from forethought.reporting import prepare_out_dir, provenance, save_figure, write_csv, write_json

HELP = ("Train future-token probes at every layer x offset of one or more models and compare them with "
        "unigram, bigram-at-distance-N and control-task baselines.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", required=True, metavar="NAME=DIR_OR_HUB_NAME",
                        help="a model to probe, named (repeat for several; e.g. vanilla=runs/vanilla/model)")
    parser.add_argument("--out", required=True, help="output directory")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="builtin", help="'builtin', a .txt/.jsonl file or directory, or a HF "
                      "dataset name (default: %(default)s)")
    data.add_argument("--text-field", default="text", help="text column of .jsonl files and HF datasets")
    data.add_argument("--seq-len", type=int, default=64, help="tokens per sequence (default: %(default)s)")
    data.add_argument("--max-sequences", type=int, default=2000, help="use at most this many sequences "
                      "(default: %(default)s)")
    data.add_argument("--test-fraction", type=float, default=0.2, help="share of sequences held out for scoring")
    probes = parser.add_argument_group("probes")
    probes.add_argument("--layers", default="all", help="'all' or comma-separated residual depths "
                        "(0 = embeddings, n_layers = last block's output)")
    probes.add_argument("--offsets", default="0,1,2,3", help="comma-separated offsets N: the probe at t predicts "
                        "token t + 1 + N (default: %(default)s)")
    probes.add_argument("--method", default="vocab", help=f"comma-separated methods: {', '.join(METHODS)} "
                        "(default: %(default)s)")
    probes.add_argument("--top-k", type=int, help="predict the k most frequent future tokens plus 'other' "
                        "(default: the whole vocabulary)")
    probes.add_argument("--no-control", action="store_true", help="skip the control task (and selectivity)")
    probes.add_argument("--max-epochs", type=int, help="training epochs at most for vocab and future_lens probes")
    probes.add_argument("--save-probes", action="store_true", help="also save the fitted probes under OUT/probes")
    run_group = parser.add_argument_group("run")
    run_group.add_argument("--seed", type=int, default=0, help="splits, control task and probe training")
    run_group.add_argument("--device", help="where to run models and probes (default: where each model loads)")
    run_group.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass")
    run_group.add_argument("--no-progress", action="store_true", help="no progress bars")


def parse_models(specs: list[str]) -> dict[str, str]:
    """``["a=dir", ...]`` → ``{"a": "dir"}``, with one-line errors for malformed or repeated names."""
    models: dict[str, str] = {}
    for spec in specs:
        name, sep, source = spec.partition("=")
        if not sep or not name.strip() or not source.strip():
            raise InvalidArgumentError(f"--model {spec!r} is not NAME=DIR_OR_HUB_NAME (e.g. vanilla=runs/vanilla)")
        if name in models:
            raise InvalidArgumentError(f"--model name {name!r} is used twice; give every model its own name")
        models[name.strip()] = source.strip()
    return models


def parse_ints(text: str, what: str) -> list[int]:
    """``"0,1,3"`` → ``[0, 1, 3]``."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidArgumentError(f"--{what} {text!r} is not a comma-separated list of integers") from None
    if not values:
        raise InvalidArgumentError(f"--{what} is empty; pass comma-separated integers")
    return values


def run(args: argparse.Namespace) -> int:
    sources = parse_models(args.model)
    layers: Any = "all" if args.layers.strip() == "all" else parse_ints(args.layers, "layers")
    offsets = parse_ints(args.offsets, "offsets")
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InvalidArgumentError(f"--method {args.method!r} is unknown; choose from {', '.join(METHODS)}")
    config = ProbeSweepConfig(top_k=args.top_k, control=not args.no_control, test_fraction=args.test_fraction,
                              batch_size=args.batch_size)
    if args.max_epochs is not None:
        config = replace(config, vocab=replace(config.vocab, max_epochs=args.max_epochs),
                         future_lens=replace(config.future_lens, max_epochs=args.max_epochs))
    out = prepare_out_dir(args.out)

    models = {name: load_model(source, device=args.device) for name, source in sources.items()}
    tokenizer = shared_tokenizer(models)
    texts = load_texts(args.dataset, text_field=args.text_field)
    splits = make_token_splits(texts, tokenizer, args.seq_len, val_fraction=args.test_fraction, seed=args.seed,
                               max_sequences=args.max_sequences)
    start = time.perf_counter()
    table = probe_sweep(models, splits, layers=layers, offsets=offsets, method=methods, seed=args.seed,
                        device=args.device, config=config, save_dir=out / "probes" if args.save_probes else None,
                        progress=not args.no_progress)
    seconds = time.perf_counter() - start

    write_csv(out / "probes.csv", table)
    save_figure(plots.plot_probe_heatmap(table, metric="top1"), out / "probe_top1.png")
    best = (table.sort_values("top1", ascending=False).groupby(["model", "method"], sort=False).head(1)
            [["model", "method", "layer", "offset", "top1", "bigram_top1", "selectivity"]])
    write_json(out / "report.json", {
        "config": {**{key: value for key, value in vars(args).items() if key != "command_function"},
                   "sweep": {**asdict(config), "feature_dtype": str(config.feature_dtype)}},
        "models": {name: {"source": sources[name], "n_layers": model.cfg.n_layers, "d_model": model.cfg.d_model,
                          "d_vocab": model.cfg.d_vocab} for name, model in models.items()},
        "data": {"train_sequences": len(splits.train), "test_sequences": len(splits.validation),
                 "seq_len": splits.seq_len, "n_train": int(table["n_train"].iloc[0]),
                 "n_test": int(table["n_test"].iloc[0])},
        "best": best.to_dict(orient="records"),
        "seconds": seconds,
        "files": ["probes.csv", "probe_top1.png", "report.json"],
        "provenance": provenance(args.seed),
    })
    return 0


def shared_tokenizer(models: dict[str, Any]) -> Any:
    """The first model's tokenizer, after checking every model has one with the same vocabulary."""
    names = list(models)
    tokenizer = models[names[0]].tokenizer
    if tokenizer is None:
        raise ModelNotAvailableError(f"model {names[0]!r} has no tokenizer to cut --dataset with; save one "
                                     "beside its weights")
    vocab = tokenizer.get_vocab()
    for name in names[1:]:
        other = models[name].tokenizer
        if other is None or other.get_vocab() != vocab:
            raise VocabularyMismatchError(f"models {names[0]!r} and {name!r} use different tokenizers; probe "
                                          "models that share one, or run them separately")
    return tokenizer
