"""``forethought synthetic``: the synthetic pre-caching experiment (Wu, Morris & Levine 2024, §4).

A thin runner: the command line gives a preset and its overrides (a :class:`~forethought.synthetic.SyntheticConfig`),
:func:`forethought.synthetic.run_experiment` (one ``p``) or :func:`~forethought.synthetic.run_sweep` (several)
trains, evaluates and probes both regimes and writes the outputs to ``--out`` (see
:mod:`forethought.synthetic.study`), and the headline numbers are printed.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

import pandas as pd
import torch

from forethought.devices import resolve_device
from forethought.errors import NumericalError, check_positive
from forethought.experiments.arguments import SYNTHETIC_FLAGS
from forethought.experiments.common import nan_cause
from forethought.experiments.config_cli import as_options, dataclass_overrides, option_names
from forethought.reporting import check_out_dir
from forethought.synthetic import PRESETS, SyntheticConfig, run_experiment, run_sweep

#: Settings a refusal may name -> the options a user types for them.
OPTIONS = option_names(SyntheticConfig, SYNTHETIC_FLAGS)


def config_from_args(args: argparse.Namespace) -> SyntheticConfig:
    """The preset with the command line's overrides applied (validated; a refusal names the options)."""
    with as_options(OPTIONS):
        return _config_from_args(args)


def _config_from_args(args: argparse.Namespace) -> SyntheticConfig:
    overrides = dataclass_overrides(SyntheticConfig, args, exclude=("p",))  # --p: one run per value
    config = PRESETS[args.preset]
    if "steps" in overrides and "warmup_steps" not in overrides:
        check_positive("steps", overrides["steps"], integer=True)
        overrides["warmup_steps"] = min(config.warmup_steps, overrides["steps"] // 10)
    return replace(config, **overrides)


def run(args: argparse.Namespace) -> int:
    """``forethought synthetic``: run the preset once per ``--p`` value, print a summary, write to ``--out``."""
    config = config_from_args(args)
    ps = args.p or [config.p]
    with as_options(OPTIONS):
        for p in ps:
            replace(config, p=p)  # validate every p before any work
        config.model_config()  # and the model's settings (--normalization)
    with as_options({"device": "--device"}):
        device = resolve_device(args.device)
    check_positive("threads", args.threads, integer=True)
    check_positive("checkpoint-every", args.checkpoint_every, integer=True)
    checkpointing = {"resume": args.resume, "checkpoint_every": args.checkpoint_every}
    out = check_out_dir(args.out)  # run_experiment creates it once the arguments are all checked
    extra = {"preset": args.preset, **({"threads": args.threads} if device.type == "cpu" else {})}
    progress = args.progress
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    try:
        if len(ps) == 1:
            report = run_experiment(replace(config, p=ps[0]), out, device=device, progress=progress,
                                    extra_config=extra, **checkpointing)
            print(_format_summary(report["summary"], report["regimes"]))
        else:
            report = run_sweep(config, ps, out, device=device, progress=progress, extra_config=extra,
                               **checkpointing)
            print(pd.DataFrame(report["sweep"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    except NumericalError as error:
        raise NumericalError(nan_cause(str(error), {
            "--lr": (config.lr, max(preset.lr for preset in PRESETS.values())),
            "--frequency": (config.frequency, max(preset.frequency for preset in PRESETS.values()))})
        ) from error
    finally:
        torch.set_num_threads(threads)
    print(f"wrote {out / 'report.json'}")
    return 0


def _format_summary(values: dict[str, float], regimes: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'regime':<8} {'eval loss':>10} {'zero loss':>10} {'ratio':>7} {'L1 R2 sin(F x_n)':>18} {'train s':>8}"]
    for regime, result in regimes.items():
        lines.append(f"{regime:<8} {result['eval_loss']:>10.4f} {result['zero_baseline_loss']:>10.4f} "
                     f"{result['loss_ratio']:>7.3f} {values[f'{regime}_layer1_sin_r2']:>18.3f} "
                     f"{result['train_seconds']:>8.1f}")
    return "\n".join(lines)
