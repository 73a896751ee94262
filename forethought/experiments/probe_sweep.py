r"""``forethought probe-sweep``: future-token probes at every layer × offset of one or more models.

Every ``--model NAME=DIR_OR_HUB_NAME`` is loaded, the text of ``--dataset`` is tokenised with the first model's
tokenizer (all models must share it) and cut into ``--seq-len`` sequences, split by sequence into training
and test sets (the data manifest is recorded), and :func:`forethought.probes.probe_sweep` probes every
requested residual depth and offset with every ``--method``. With ``--run DIR`` (a ``train`` or ``myopia-gap``
output) the run's models are probed on the run's own split (:func:`forethought.load_run`; its validation
sequences are the test set), or the command refuses when that data cannot be rebuilt identically.

With ``--top-k`` the probes predict the k most frequent future tokens plus "other", but every score is over all
targets ("other" is never a hit) and ``coverage`` is reported beside it. ``--seeds 0,1,2`` repeats the sweep
with each probe seed (same data) and writes the spread over seeds.

Outputs in ``--out`` (all written atomically):

* ``probes.csv``: one row per (model, layer, offset, method): top1, top5, cross_entropy against the true
  token; greedy_* against the model's own prediction; unigram_* and bigram_* baselines; control_top1 and
  selectivity; r2 (lens methods); n_train, n_test (see :mod:`forethought.probes.sweep`);
* ``probe_top1.png``: top-1 accuracy heatmaps (layer × offset) per model, with a difference panel for two models;
  ``probe_gain.png``: the probe's top-1 gain over the stronger of unigram and bigram;
* with ``--seeds``: ``probe_seeds.csv``, the mean, std, min and max over probe seeds of every cell
  (:func:`forethought.probes.seed_spread`);
* ``sweep/``: the first seed's :class:`~forethought.probes.ProbeSweep` as ``ProbeSweep.save`` writes it (its
  table and settings, with the seconds of each step; ``ProbeSweep.load(OUT / "sweep")``; the probes stay in
  ``probes/``);
* ``report.json``: the configuration, the models (and how they were trained, from a run), the data manifest,
  the label space, the best (layer, offset) per model and method, and provenance;
* with ``--save-probes``: ``probes/<model>/<method>[_control]/`` (safetensors + JSON, see
  :mod:`forethought.probes.io`).

Large sweeps: ``--stream`` writes the activations to temporary files and trains the probes from them, so memory
does not grow with the tokens (automatic above ``--stream-above-gib``); under ``torchrun`` or ``accelerate
launch`` every process probes its own share of the depths over all the data and process 0 writes the outputs,
the same files a single process writes.

Example:
    forethought probe-sweep --model vanilla=runs/vanilla/model --model myopic=runs/myopic/model \
        --dataset builtin --layers all --offsets 0,1,2,3 --top-k 255 --out results/probes
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import pandas as pd

from forethought import plots
from forethought.devices import resolve_device
from forethought.distributed import current_world
from forethought.errors import InvalidArgumentError, check_seed
from forethought.experiments.commands import ProbeSweep
from forethought.experiments.common import check_probe_inputs, model_data, parse_ints, parse_models
from forethought.models import load_model
from forethought.probes.sweep import (
    ProbeSweepConfig,
    check_stream,
    label_space_summary,
    probe_sweep,
    seed_spread,
)
from forethought.regimes import REGIMES, is_probed
from forethought.reporting import check_out_dir, prepare_out_dir, provenance, save_figure, write_csv, write_json
from forethought.runs import load_run


def run(args: ProbeSweep) -> int:
    """``forethought probe-sweep``: probe the models of ``--model`` (or ``--run``) and write the table to ``--out``.

    Every input is checked before ``--out`` is created: the options, then the models (layers, context length) and
    the data (offsets), so that a refusal leaves nothing behind.
    """
    layers: Any = "all" if args.layers.strip() == "all" else parse_ints(args.layers, "layers")
    offsets = parse_ints(args.offsets, "offsets")
    seeds = parse_ints(args.seeds, "seeds") if args.seeds else [args.seed]
    for seed in seeds:
        check_seed("--seeds" if args.seeds else "--seed", seed)
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    config = ProbeSweepConfig(top_k=args.top_k, control=args.control, test_fraction=args.data.data().val_fraction,
                              batch_size=args.batch_size, stream_above_gib=args.stream_above_gib,
                              stream_dir=args.stream_dir)
    stream = "auto" if args.stream is None else args.stream
    check_stream(stream, methods, config)
    config = config.with_max_epochs(args.max_epochs)
    out = check_out_dir(args.out)
    device = resolve_device(args.device)

    if args.run:
        loaded = load_run(args.run, device=device)
        trained = {name: entry for name, entry in loaded.trained.items() if is_probed(entry.get("trained_as"))}
        models = {name: loaded.models[name] for name in trained}
        if not models:
            unprobed = " and ".join(name for name, regime in REGIMES.items() if not regime.probed)
            raise InvalidArgumentError(f"--run {args.run!r} holds no model to probe ({unprobed} models are not probed)")
        sources = {name: str(loaded.directory / entry["path"]) for name, entry in trained.items()}
        splits = loaded.splits
    else:
        sources = parse_models(args.model)
        models = {name: load_model(source, device=device) for name, source in sources.items()}
        check_probe_inputs(models, layers, offsets)  # the layers before the data are cut
        splits, trained = model_data(sources, models, args.data, args.seed)
    check_probe_inputs(models, layers, offsets, splits.seq_len, splits)
    world = current_world()  # under torchrun / accelerate launch each process probes some depths; process 0 writes
    if world is None or world.is_main_process:
        prepare_out_dir(out)
    start = time.perf_counter()
    sweeps = [probe_sweep(models, splits, layers=layers, offsets=offsets, method=methods, seed=seed,
                          device=device, config=config,
                          save_dir=out / "probes" / (f"seed{seed}" if len(seeds) > 1 else "")
                          if args.save_probes else None, stream=stream, progress=args.progress)
              for seed in seeds]
    tables = [sweep.to_frame() for sweep in sweeps]
    seconds = time.perf_counter() - start
    if world is not None and not world.is_main_process:
        return 0
    table = pd.concat(tables, ignore_index=True)
    files = ["probes.csv", "probe_top1.png", "probe_gain.png", "sweep", "report.json"]

    write_csv(out / "probes.csv", table)
    sweeps[0].save(out / "sweep", probes=False)
    headline = tables[0]
    if len(seeds) > 1:
        spread = seed_spread(table)
        write_csv(out / "probe_seeds.csv", spread)
        files.insert(1, "probe_seeds.csv")
    save_figure(plots.plot_probe_heatmap(headline, metric="top1"), out / "probe_top1.png")
    save_figure(plots.plot_probe_heatmap(headline, metric="gain_over_baseline",
                                         title="Probe top-1 gain over the stronger of unigram and bigram"
                                         + plots.label_space_note(headline)), out / "probe_gain.png")
    best = (headline.sort_values("top1", ascending=False).groupby(["model", "method"], sort=False).head(1)
            [["model", "method", "layer", "offset", "top1", "top1_ci_low", "top1_ci_high", "coverage",
              "best_baseline_top1", "gain_over_baseline", "selectivity"]])
    write_json(out / "report.json", {
        "config": {**asdict(args),
                   "seeds": seeds, "sweep": {**asdict(config), "feature_dtype": str(config.feature_dtype)}},
        "models": {name: {"source": sources[name], "trained": trained.get(name), "n_layers": model.cfg.n_layers,
                          "d_model": model.cfg.d_model, "d_vocab": model.cfg.d_vocab}
                   for name, model in models.items()},
        "data": {**(splits.manifest or {}), "test_sequences": len(splits.validation),
                 "n_train": int(headline["n_train"].iloc[0]), "n_test": int(headline["n_test"].iloc[0]),
                 "source": "run" if args.run or splits.manifest.get("models") is None else "dataset"},
        "label_space": label_space_summary(headline),
        "best": best.to_dict(orient="records"),
        "seed_spread": seed_spread(table).to_dict(orient="records") if len(seeds) > 1 else None,
        "seconds": seconds,
        "files": files,
        "provenance": provenance(args.seed),
    })
    return 0


