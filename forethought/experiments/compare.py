"""``forethought compare``: vanilla vs myopic side by side — the central artefact of the paper.

Given a vanilla and a myopic model (and optionally a transformer bigram), :func:`compare_regimes` measures on the
same held-out text

* each model's validation loss, overall and by position, and the myopia gap
  (:func:`forethought.myopic_training.evaluate_regimes`; a model named ``"bigram"`` runs with its past ablated);
* future-token probe accuracy at every layer × offset of every model but the bigram
  (:func:`forethought.probes.probe_sweep`), and each model's difference to the baseline model (``"vanilla"``):
  how much of what a vanilla model's hidden state says about later tokens survives myopic training.

With ``--run DIR`` the models, the tokenizer and the exact train/validation split come from the run
(:func:`forethought.load_run`): the losses and the myopia gap are those ``myopia-gap`` reported, and the command
refuses (exit 2) when the run's data cannot be rebuilt identically. With ``--model``/``--dataset`` the data is
cut afresh and its manifest recorded.

With ``--top-k`` the probes predict the k most frequent future tokens plus "other", but every score is over all
targets ("other" is never a hit; see :mod:`forethought.probes.sweep`), and the coverage is reported beside it.
The command trains no control-task probes unless asked (``--control``): the comparison is between regimes on the
same probes, and the control task, about as costly again, belongs to ``probe-sweep``.

Outputs in ``out_dir`` (all written atomically): ``report.json`` (losses and gaps with bootstrap intervals,
how each model was trained, the probe comparison, the data manifest, the label space, config, provenance),
``loss_by_position.csv`` (with each gap and its interval by position), ``probes.csv`` (one row per model × layer
× offset × method), ``probe_comparison.csv`` (one row per layer × offset × method: each model's top-1 with its
interval, its gain over the best baseline and its difference to the baseline model), ``loss_by_position.png``,
``loss_difference.png``, ``probe_top1.png`` and ``probe_gain.png`` (heatmaps with a difference panel).

Example:
    $ forethought myopia-gap --preset cpu --out results/myopia_cpu
    $ forethought compare --run results/myopia_cpu --out results/compare_cpu
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from forethought import plots
from forethought.data import TokenSplits
from forethought.devices import resolve_device
from forethought.errors import InvalidArgumentError
from forethought.experiments.commands import Compare
from forethought.experiments.common import check_probe_inputs, model_data, parse_ints, parse_models
from forethought.models import load_model
from forethought.myopic_training.evaluation import MyopiaReport, evaluate_regimes, format_gap, plot_report
from forethought.probes.sweep import ProbeSweepConfig, label_space_summary, probe_sweep
from forethought.regimes import REGIMES, is_probed
from forethought.reporting import check_out_dir, prepare_out_dir, provenance, save_figure, write_csv, write_json
from forethought.runs import load_run


@dataclass
class RegimeComparison:
    """What :func:`compare_regimes` measured: the loss report, the probe table and the side-by-side table."""

    losses: MyopiaReport
    probes: pd.DataFrame
    comparison: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        """The side-by-side table: one row per (layer, offset), every model's probe and loss columns."""
        return self.comparison.copy()

    def plot(self, metric: str = "top1") -> Any:
        """Probe heatmaps by layer and offset for every probed model (:func:`forethought.plots.plot_probe_heatmap`)."""
        from forethought.plots import label_space_note, plot_probe_heatmap

        return plot_probe_heatmap(self.probes, metric=metric, title=f"Future-token probes: {metric}"
                                  + label_space_note(self.probes))

    def __repr__(self) -> str:
        return (f"RegimeComparison({self.losses!r}; probes: {len(self.probes)} rows over "
                f"{self.probes['model'].nunique() if len(self.probes) else 0} models)")


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
    trained_as: Mapping[str, str | None] | None = None,
    batch_size: int = 32,
    bootstrap_seed: int | None = None,
) -> RegimeComparison:
    """Losses, myopia gap and probe accuracy of every model, side by side (see the module docstring).

    Args:
        models: ``{"vanilla": m1, "myopic": m2, "bigram": m3}``; any names work, ``baseline`` must be one of them.
            A model named after a registered regime is evaluated in its forward (``"bigram"``: past ablated), and
            probed only when that is the plain forward (:attr:`forethought.regimes.Regime.probed`).
        data: token splits; probes train on ``data.train`` and everything is scored on ``data.validation``.
        out_dir: if given, write the tables, report and figures there.
        layers: ``"all"`` or the residual-stream depths to probe (passed to :func:`forethought.probes.probe_sweep`).
        offsets: future offsets ``N`` to probe (``0`` = the next token), passed to the probe sweep.
        method: the probe method (``"vocab"``, ``"logistic"``, ``"future_lens"`` or ``"ridge"``), passed to the
            probe sweep.
        config: further probe-sweep settings (:class:`~forethought.probes.ProbeSweepConfig`).
        baseline: the model every other one is compared with.
        seed: seeds the probe sweep (and the bootstrap intervals, unless ``bootstrap_seed`` is given).
        progress: show progress bars.
        trained_as: name → how that model was trained, for the report (default: the name when it is a regime).
        batch_size: sequences per forward pass when scoring losses.
        bootstrap_seed: seeds the loss intervals (default: ``seed``); a run's own seed reproduces its intervals.

    Example:
        >>> import torch
        >>> from forethought.data import TokenSplits
        >>> from forethought.models import tiny_model
        >>> tokens = torch.randint(0, 12, (60, 16), generator=torch.Generator().manual_seed(0))
        >>> data = TokenSplits(train=tokens[:48], validation=tokens[48:], tokenizer=None)
        >>> models = {name: tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=12, n_ctx=16, seed=seed)
        ...           for seed, name in enumerate(["vanilla", "myopic"])}
        >>> result = compare_regimes(models, data, offsets=[0, 1], progress=False)
        >>> [column for column in result.comparison.columns if column.endswith(("_top1", "_vanilla"))]
        ['vanilla_top1', 'myopic_top1', 'myopic_minus_vanilla']
    """
    if baseline not in models:
        raise InvalidArgumentError(f"baseline={baseline!r} is not among the models {sorted(models)}; name one of "
                                   "them 'vanilla' or pass baseline=...")
    losses = evaluate_regimes(models, data, batch_size=batch_size, progress=progress, trained_as=trained_as,
                              baseline=baseline, seed=seed if bootstrap_seed is None else bootstrap_seed)
    probed = {name: model for name, model in models.items() if is_probed(name)}
    probes = probe_sweep(probed, data, layers=layers, offsets=offsets, method=method, seed=seed, config=config,
                         reference=baseline if baseline in probed else None, progress=progress).to_frame()
    comparison = side_by_side(probes, baseline)
    result = RegimeComparison(losses=losses, probes=probes, comparison=comparison)
    if out_dir is not None:
        sweep = config or ProbeSweepConfig()
        _write(result, Path(out_dir), baseline, {"layers": layers, "offsets": list(offsets), "method": method,
                                                 "baseline": baseline, "seed": seed, "top_k": sweep.top_k,
                                                 "max_epochs": sweep.vocab.max_epochs, "control": sweep.control},
               seed, getattr(data, "manifest", None))
    return result


def side_by_side(probes: pd.DataFrame, baseline: str, metric: str = "top1") -> pd.DataFrame:
    """One row per (layer, offset, method): each model's ``metric`` and its difference to ``baseline``'s.

    Each model's ``_ci_low``/``_ci_high`` interval and ``gain_over_baseline`` (with its paired interval) come along
    when the table has them. For ``top1`` from a sweep with ``reference=baseline`` the difference
    ``<model>_minus_<baseline>`` has its own 95 % paired-bootstrap interval over the shared test sequences
    (``_ci_low``/``_ci_high``). The difference of the gains over the baselines is the same number (both models
    are scored against the same baselines), so it has the same interval.
    """
    index = ["layer", "offset", "method"]
    order = [baseline] + [name for name in probes["model"].unique() if name != baseline]
    extras = [column for column in (f"{metric}_ci_low", f"{metric}_ci_high", "gain_over_baseline",
                                    "gain_over_baseline_ci_low", "gain_over_baseline_ci_high") if column in probes]
    paired = metric == "top1" and "minus_reference_ci_low" in probes
    differences = ["minus_reference", "minus_reference_ci_low", "minus_reference_ci_high"] if paired else []
    wide = {column: probes.pivot_table(index=index, columns="model", values=column, sort=False, dropna=False)
            for column in [metric, *extras, *differences]}
    table = pd.DataFrame({f"{name}_{column}": wide[column][name] for name in order
                          for column in [metric, *extras]})
    for name in order[1:]:
        table[f"{name}_minus_{baseline}"] = wide[metric][name] - wide[metric][baseline]
        if paired:
            for bound in ("ci_low", "ci_high"):
                table[f"{name}_minus_{baseline}_{bound}"] = wide[f"minus_reference_{bound}"][name]
    return table.reset_index()


def _write(result: RegimeComparison, out: Path, baseline: str, settings: dict[str, Any], seed: int,
           manifest: dict[str, Any] | None) -> None:
    out = prepare_out_dir(out)
    write_csv(out / "loss_by_position.csv", result.losses.to_frame())
    write_csv(out / "probes.csv", result.probes)
    write_csv(out / "probe_comparison.csv", result.comparison)
    for name, figure in plot_report(result.losses, baseline=baseline).items():
        save_figure(figure, out / f"{name}.png")
    save_figure(plots.plot_probe_heatmap(result.probes, metric="top1"), out / "probe_top1.png")
    save_figure(plots.plot_probe_heatmap(result.probes, metric="gain_over_baseline",
                                         title="Probe top-1 gain over the stronger of unigram and bigram"
                                         + plots.label_space_note(result.probes)), out / "probe_gain.png")
    write_json(out / "report.json", {
        **result.losses.to_dict(),
        "probe_comparison": result.comparison.to_dict(orient="records"),
        "label_space": label_space_summary(result.probes),
        "data": manifest,
        "config": settings,
        "files": ["report.json", "loss_by_position.csv", "probes.csv", "probe_comparison.csv",
                  "loss_by_position.png", "loss_difference.png", "probe_top1.png", "probe_gain.png"],
        "provenance": provenance(seed),
    })


def run(args: Compare) -> int:
    """``forethought compare``: score the models of ``--run`` (or of ``--model``) and write the tables to ``--out``.

    The options, the models (layers, context length) and the data (offsets) are checked before ``--out`` exists.
    """
    layers: Any = "all" if args.layers.strip() == "all" else parse_ints(args.layers, "layers")
    offsets = parse_ints(args.offsets, "offsets")
    check_out_dir(args.out)
    device = resolve_device(args.device)
    if args.run:
        run_dir = load_run(args.run, device=device)
        scored = [name for name, regime in REGIMES.items() if not regime.needs_past_model]  # loaded without a past
        models = {name: model for name, model in run_dir.models.items() if name in scored}
        if not models:
            raise InvalidArgumentError(f"--run {args.run!r} holds none of the models {', '.join(scored)}")
        splits, trained_as, bootstrap_seed = run_dir.splits, run_dir.trained_as, run_dir.manifest.get("seed")
    else:
        sources = parse_models(args.model or [])
        if args.baseline not in sources:
            raise InvalidArgumentError(f"--baseline {args.baseline!r} is not among the models {sorted(sources)}")
        models = {name: load_model(source, device=device) for name, source in sources.items()}
        splits, trained = model_data(sources, models, args.data, args.seed)
        trained_as = {name: (entry or {}).get("trained_as") for name, entry in trained.items()}
        bootstrap_seed = None
    if args.baseline not in models:
        raise InvalidArgumentError(f"--baseline {args.baseline!r} is not among the models {sorted(models)}")
    check_probe_inputs(models, layers, offsets, splits.seq_len, splits)
    config = ProbeSweepConfig(top_k=args.top_k, control=args.control).with_max_epochs(args.max_epochs)
    prepare_out_dir(args.out)
    result = compare_regimes(models, splits, out_dir=args.out, layers=layers, offsets=offsets, method=args.method,
                             baseline=args.baseline, seed=args.seed, config=config, progress=args.progress,
                             trained_as=trained_as, bootstrap_seed=bootstrap_seed)
    print(f"myopia gap {format_gap(result.losses)} nats/token; wrote {args.out}")
    return 0
