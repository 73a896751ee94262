"""``forethought synthetic``: the synthetic pre-caching experiment (Wu, Morris & Levine 2024, §4).

A thin runner: the command (:class:`~forethought.experiments.commands.Synthetic`) holds the preset with its
overrides (a :class:`~forethought.config.SyntheticConfig`) and the ``--p`` values;
:func:`forethought.synthetic.run_experiment` (one ``p``) or :func:`~forethought.synthetic.run_sweep` (several)
trains, evaluates and probes both regimes and writes the outputs to ``--out`` (see
:mod:`forethought.synthetic.study`), and the headline numbers are printed.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from forethought.devices import resolve_device
from forethought.errors import NumericalError
from forethought.experiments.commands import Synthetic
from forethought.experiments.common import nan_cause
from forethought.reporting import check_out_dir
from forethought.synthetic import PRESETS, run_experiment, run_sweep


def run(command: Synthetic) -> int:
    """``forethought synthetic``: run the preset once per ``--p`` value, print a summary, write to ``--out``."""
    configs = command.configs()
    configs[0].model_config()  # the model's settings (--normalization) are checked before any work
    device = resolve_device(command.device)
    checkpointing = {"resume": command.resume, "checkpoint_every": command.checkpoint_every}
    out = check_out_dir(command.out)  # run_experiment creates it once the arguments are all checked
    extra = {"preset": command.preset, **({"threads": command.threads} if device.type == "cpu" else {})}
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(command.threads)
    try:
        if len(configs) == 1:
            report = run_experiment(configs[0], out, device=device, progress=command.progress, extra_config=extra,
                                    **checkpointing)
            print(_format_summary(report["summary"], report["regimes"]))
        else:
            report = run_sweep(configs[0], [config.p for config in configs], out, device=device,
                               progress=command.progress, extra_config=extra, **checkpointing)
            print(pd.DataFrame(report["sweep"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    except NumericalError as error:
        raise NumericalError(nan_cause(str(error), {
            "--lr": (configs[0].lr, max(preset.lr for preset in PRESETS.values())),
            "--frequency": (configs[0].frequency, max(preset.frequency for preset in PRESETS.values()))})
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
