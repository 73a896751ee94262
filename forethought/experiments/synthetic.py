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
from forethought.errors import check_positive
from forethought.reporting import check_out_dir
from forethought.synthetic import PAPER_PS, PRESETS, SyntheticConfig, run_experiment, run_sweep
from forethought.synthetic.config import MYOPIC_MODES

HELP = ("The synthetic pre-caching experiment: train a vanilla and a myopic transformer on D_p and probe "
        "their residual streams for sin(F x) of past inputs.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                        help="smoke: seconds (CI); cpu: the default main job, minutes on a CPU; paper: the paper's "
                             "setting, for a GPU")
    parser.add_argument("--out", default="results/synthetic", help="output directory (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="model initialisation and data seed")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    parser.add_argument("--p", type=float, nargs="+", metavar="P",
                        help=f"probability of a past-sum target; several values run a sweep (the paper's: "
                             f"{' '.join(f'{p:g}' for p in PAPER_PS)})")
    overrides = parser.add_argument_group("overrides of the preset")
    overrides.add_argument("--k", type=int, help="terms in the past sum (K)")
    overrides.add_argument("--frequency", "-F", type=float, help="F in sin(F x); keep it >= 8")
    overrides.add_argument("--steps", type=int, help="training steps per regime")
    overrides.add_argument("--batch-size", type=int, help="sequences per step")
    overrides.add_argument("--lr", type=float, help="peak AdamW learning rate")
    overrides.add_argument("--myopic-mode", choices=MYOPIC_MODES, help="how myopic gradients treat the past")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (default: %(default)s; the presets' models are so small that more "
                             "threads mostly wait for each other, and slow down badly on a busy machine)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted (or reuse a finished) run in --out from its checkpoints")
    parser.add_argument("--checkpoint-every", type=int, default=1000, metavar="N",
                        help="write training checkpoints every N steps (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def config_from_args(args: argparse.Namespace) -> SyntheticConfig:
    """The preset with the command line's overrides applied (validated)."""
    overrides = {name: getattr(args, name) for name in ("k", "frequency", "steps", "batch_size", "lr", "myopic_mode")
                 if getattr(args, name, None) is not None}
    config = PRESETS[args.preset]
    if "steps" in overrides:
        check_positive("steps", overrides["steps"], integer=True)
        overrides["warmup_steps"] = min(config.warmup_steps, overrides["steps"] // 10)
    return replace(config, seed=args.seed, **overrides)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    ps = args.p or [config.p]
    for p in ps:
        replace(config, p=p)  # validate every p before any work
    device = resolve_device(args.device)
    check_positive("threads", args.threads, integer=True)
    check_positive("checkpoint-every", args.checkpoint_every, integer=True)
    checkpointing = {"resume": args.resume, "checkpoint_every": args.checkpoint_every}
    out = check_out_dir(args.out)  # run_experiment creates it once the arguments are all checked
    extra = {"preset": args.preset, **({"threads": args.threads} if device.type == "cpu" else {})}
    progress = not args.no_progress
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
