"""``forethought gradient-split``: how much of a model's gradient is pre-caching?

The vanilla gradient ``g`` of the loss splits exactly into the myopic gradient ``g_m`` and the pre-caching gradient
``g_p = g − g_m`` (:mod:`forethought.myopic_training.gradient_split`). This command reports, per parameter group
and in total, ``precaching_share = ⟨g_p, g⟩ / ‖g‖²`` (the fraction of a gradient step's first-order loss decrease
due to pre-caching), ``‖g_p‖ / ‖g‖`` and ``cos(g_p, g_m)``, for the ``strict`` and ``cutgrad`` modes. The metrics
are those of the **expected gradient** (``g`` and ``g_m`` accumulated over ``--batches`` batches); the spread of
the per-batch values is reported beside them.

Three sources:

* ``--model NAME_OR_DIR``: a language model (a hub name, a ``save_pretrained`` directory, or a training run's
  ``model/``); the loss is its next-token loss on the validation sequences of ``--dataset`` (cut with its own
  tokenizer and ``--seq-len``, split with ``--seed``).
* ``--synthetic-checkpoint PATH``: a model trained by ``forethought synthetic`` (``OUT/checkpoints/vanilla.pt`` or
  ``myopic.pt``); the loss is the run's Huber loss on fresh D_p sequences.
* ``--synthetic-preset PRESET``: train a vanilla model on D_p with that preset (``--steps`` to shorten it) and
  record the split every ``--every`` steps: the pre-caching share over training.

Outputs in ``--out`` (each written atomically): ``report.json`` (settings, the split's rows, definitions,
provenance), ``gradient_split.csv`` (one row per group × mode, and per step over training),
``gradient_split_batches.csv`` (the per-batch values) and ``gradient_split.png`` (the share per group; over
training: the total share and the training loss against the step).

Example:
    $ forethought gradient-split --model results/myopia_cpu/runs/vanilla/model --out results/split_lm
    $ forethought gradient-split --synthetic-preset cpu --steps 1500 --every 100 --out results/split_synthetic
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.nn import functional as F

from forethought import synthetic
from forethought.devices import resolve_device
from forethought.errors import InvalidArgumentError
from forethought.experiments.commands import GradientSplitCommand
from forethought.experiments.common import load_splits
from forethought.models import load_model
from forethought.myopic_training.gradient_split import (
    TOTAL,
    GradientSplit,
    gradient_split,
    plot_gradient_split,
)
from forethought.reporting import check_out_dir, prepare_out_dir, provenance, save_figure, write_csv, write_json
from forethought.synthetic import PrecacheBatch, RegressionTransformer
from forethought.synthetic.study import saved_config as _saved_config

DEFINITIONS = {
    "g": "vanilla gradient of the loss, accumulated (averaged) over the batches: the expected gradient",
    "g_m": "myopic gradient (forethought.myopic_training.myopic, the row's mode), accumulated the same way",
    "g_p": "pre-caching gradient g - g_m: what reaches a position's computation only from later positions' losses",
    "precaching_share": "<g_p, g> / ||g||^2: the fraction of a gradient step's first-order loss decrease due to "
                        "pre-caching",
    "norm_ratio": "||g_p|| / ||g||",
    "cos_precaching_myopic": "cos(g_p, g_m); null where g_p or g_m is zero",
    "share_batch_*": "mean, sd, min and max over batches of the share computed on each batch's gradient alone",
}


def run(args: GradientSplitCommand) -> int:
    """``forethought gradient-split``: split the gradient of a model or of synthetic training and write the report."""
    device = resolve_device(args.device)
    out = check_out_dir(args.out)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    try:
        if args.synthetic_preset is not None:
            report = _over_synthetic_training(args, device, out)
        elif args.synthetic_checkpoint is not None:
            model = synthetic.load_trained_model(args.synthetic_checkpoint, device=device)
            config = replace(saved_config(args.synthetic_checkpoint), seed=args.seed)
            split = gradient_split(model, synthetic_batches(config, args.batches, args.batch_size, device),
                                   loss_fn=huber_loss(config.huber_delta), modes=args.modes,
                                   progress=args.progress)
            report = _write_single(out, split, args, source={"synthetic_checkpoint": str(args.synthetic_checkpoint),
                                                             "task": asdict(config.task())})
        else:
            model = load_model(args.model, device=device)
            if model.tokenizer is None:
                raise InvalidArgumentError(f"--model {args.model!r} has no tokenizer; save one beside its weights")
            splits = load_splits(args.data, args.seed, tokenizer=model.tokenizer)
            tokens = splits.validation[: args.batches * args.batch_size]
            split = gradient_split(model, tokens, modes=args.modes, batch_size=args.batch_size,
                                   progress=args.progress)
            report = _write_single(out, split, args, source={
                "model": str(args.model), "dataset": args.data.dataset, "seq_len": args.data.seq_len,
                "n_sequences": len(tokens), "split": "validation"})
    finally:
        torch.set_num_threads(threads)
    print(report["summary_line"])
    print(f"wrote {out / 'report.json'}")
    return 0


def huber_loss(delta: float):
    """The synthetic task's loss, ``loss_fn(model, batch)`` for :func:`gradient_split`."""
    def loss_fn(model: Any, batch: Any) -> torch.Tensor:
        device = model.input_map.weight.device
        return F.huber_loss(model(batch.inputs.to(device)), batch.targets.to(device), delta=delta)

    return loss_fn


def synthetic_batches(config: synthetic.SyntheticConfig, n_batches: int, batch_size: int,
                      device: str | torch.device = "cpu") -> list[PrecacheBatch]:
    """``n_batches`` fixed batches of D_p (drawn from the seed for ``"gradient-split"``), for the split."""
    data = synthetic.held_out(config, "gradient-split", n_batches * batch_size)
    return [PrecacheBatch(x=data.x[i : i + batch_size].to(device), z=data.z[i : i + batch_size].to(device),
                          targets=data.targets[i : i + batch_size].to(device))
            for i in range(0, n_batches * batch_size, batch_size)]


def saved_config(checkpoint: str | Path) -> synthetic.SyntheticConfig:
    """The experiment settings saved in a synthetic checkpoint."""
    return _saved_config(checkpoint)


def _write_single(out: Path, split: GradientSplit, args: GradientSplitCommand, source: dict[str, Any]) -> dict:
    out = prepare_out_dir(out)
    frame = split.to_frame()
    summary = {mode: split.share(mode) for mode in split.modes}
    report = {
        "command": "gradient-split",
        "source": source,
        "config": {"modes": list(split.modes), "batches": split.n_batches, "batch_size": args.batch_size,
                   "seed": args.seed},
        "mean_loss": split.mean_loss,
        "total_precaching_share": summary,
        "split": split.records(),
        "definitions": DEFINITIONS,
        "provenance": provenance(args.seed),
        "summary_line": repr(split),
    }
    save_figure(split.plot(), out / "gradient_split.png")
    write_csv(out / "gradient_split.csv", frame)
    write_csv(out / "gradient_split_batches.csv", split.per_batch)
    write_json(out / "report.json", report)
    return report


def _over_synthetic_training(args: GradientSplitCommand, device: torch.device, out: Path) -> dict:
    """Train a vanilla model on D_p and record the split every ``--every`` steps (and at the last one)."""
    config = replace(synthetic.PRESETS[args.synthetic_preset], seed=args.seed)
    if args.steps is not None:
        config = config.with_steps(args.steps)
    batches = synthetic_batches(config, args.batches, args.batch_size, device)
    loss_fn = huber_loss(config.huber_delta)
    rows, per_batch, started = [], [], time.perf_counter()

    def record(step: int, model: Any) -> None:
        if step % args.every and step != config.steps and step != 0:
            return
        split = gradient_split(model, batches, loss_fn=loss_fn, modes=args.modes)
        rows.extend({"step": step, "loss": split.mean_loss, **row} for row in split.records())
        per_batch.append(split.per_batch.assign(step=step))

    initial = RegressionTransformer(config.model_config(), device=device)
    record(0, initial)
    run = synthetic.train_regime(config, "vanilla", device=device, progress=args.progress, on_step=record)
    out = prepare_out_dir(out)
    frame = pd.DataFrame(rows)
    total = frame[frame["group"] == TOTAL].pivot_table(index="step", columns="mode", values="precaching_share")
    report = {
        "command": "gradient-split",
        "source": {"synthetic_preset": args.synthetic_preset, "regime": "vanilla", "task": asdict(config.task())},
        "config": {**asdict(config), "modes": list(args.modes), "batches": args.batches,
                   "batch_size": args.batch_size, "every": args.every, "device": str(device)},
        "total_precaching_share_by_step": {mode: {int(step): value for step, value in total[mode].items()}
                                           for mode in total.columns},
        "split": frame.to_dict("records"),
        "definitions": {**DEFINITIONS, "loss": "mean Huber loss of the split's batches at that step"},
        "train_seconds": run.seconds,
        "wall_time_s": time.perf_counter() - started,
        "provenance": provenance(config.seed),
        "summary_line": "total precaching_share by step (vanilla, synthetic " f"{args.synthetic_preset}):\n"
                        + total.join(frame[frame["group"] == TOTAL].groupby("step")["loss"].first())
                        .to_string(float_format=lambda v: f"{v:.4f}"),
    }
    save_figure(plot_share_over_training(frame), out / "gradient_split.png")
    final = frame[frame["step"] == frame["step"].max()]
    save_figure(plot_gradient_split(final, title=f"Pre-caching share at step {int(final['step'].iloc[0])}"),
                out / "gradient_split_final.png")
    write_csv(out / "gradient_split.csv", frame)
    write_csv(out / "gradient_split_batches.csv", pd.concat(per_batch, ignore_index=True))
    write_json(out / "report.json", report)
    return report


def plot_share_over_training(frame: pd.DataFrame, title: str = "Vanilla training on D_p"):
    """Two panels against the step: the loss of the split's batches, and the total pre-caching share per mode.

    ``frame`` has the columns ``step``, ``group``, ``mode``, ``precaching_share`` and ``loss``.

    Example:
        >>> frame = pd.DataFrame({"step": [0, 0, 10, 10], "group": "total", "mode": ["strict", "cutgrad"] * 2,
        ...                       "precaching_share": [0.1, 0.05, 0.5, 0.4], "loss": [0.6, 0.6, 0.3, 0.3]})
        >>> [ax.get_ylabel() for ax in plot_share_over_training(frame).axes]
        ['Huber loss', 'precaching_share (total)']
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    total = frame[frame["group"] == TOTAL]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 6), sharex=True)
    losses = total.groupby("step", as_index=False)["loss"].first()
    top.plot(losses["step"], losses["loss"], marker="o", color="0.2")
    top.set(ylabel="Huber loss", title=title, ylim=(0, None))
    sns.lineplot(data=total, x="step", y="precaching_share", hue="mode", marker="o", ax=bottom)
    bottom.axhline(0.0, color="0.4", linewidth=0.8)
    bottom.set(xlabel="step", ylabel="precaching_share (total)")
    fig.tight_layout()
    return fig
