"""Fitting one probe method of a sweep: the method's name → its trainer, on the sweep's examples.

Every method fits all (layer, offset) pairs at once, and with ``config.control`` the Hewitt & Liang control
task of each offset too (the labels come from ``controls``, a random class per current token): the direct
probes train both task sets as one stack, the Future Lens fits its control with :func:`fit_label_lens`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from jaxtyping import Int
from torch import Tensor

from forethought.probes.examples import Examples
from forethought.probes.future_lens import fit_future_lens, fit_label_lens, fit_ridge_lens
from forethought.probes.linear import AffineProbes, Task
from forethought.probes.logistic import fit_logistic_probes
from forethought.probes.targets import LabelSpace
from forethought.probes.vocabulary import fit_vocab_probes

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from forethought.probes.sweep import ProbeSweepConfig


def fit_method(method: str, model: TransformerBridge, fit: Examples, val: Examples,
               controls: Int[Tensor, "offset d_vocab"], layers: list[int], offsets: list[int], space: LabelSpace,
               config: ProbeSweepConfig, seed: int, device: torch.device, progress: bool
               ) -> tuple[AffineProbes, AffineProbes | None]:
    """Fit one method's probes for every (layer, offset) at once, and those of the control tasks.

    Args:
        method: ``"vocab"``, ``"logistic"``, ``"future_lens"`` or ``"ridge"``.
        model: the model probed (the lens methods decode through its final norm and unembedding).
        fit: the training examples.
        val: the examples held out for early stopping (the methods without early stopping train on both).
        controls: every offset's control-task map from the current token to a random class.
        layers: the layers of the features (``"resid"`` depths).
        offsets: the offsets ``N`` to fit a probe for.
        space: the label space of the classes.
        config: the sweep's settings (each method's own, and whether to fit the control task).
        seed: seeds the training.
        device: where to train.
        progress: show progress bars.

    Returns:
        The probes of the offsets, and those of their control tasks (None without ``config.control``, or for
        ``"ridge"``).
    """
    tasks = [Task(offset) for offset in offsets]
    control_tasks = [Task(offset, control=True) for offset in offsets] if config.control else []
    fit_control = controls[:, fit.current] if config.control else None
    val_control = controls[:, val.current] if config.control else None
    if method in ("vocab", "logistic"):
        labels = torch.cat([fit.labels, fit_control]) if config.control else fit.labels
        if method == "vocab":
            trainer = replace(config.vocab, seed=seed, device=str(device), progress=progress)
            val_labels = torch.cat([val.labels, val_control]) if config.control else val.labels
            probes = fit_vocab_probes(fit.features, labels, n_classes=space.n_classes, val_features=val.features,
                                      val_labels=val_labels, config=trainer, layers=layers,
                                      tasks=tasks + control_tasks, label_space=space)
        else:
            both = fit.cat(val)
            labels = torch.cat([both.labels, controls[:, both.current]]) if config.control else both.labels
            probes = fit_logistic_probes(both.features, labels, n_classes=space.n_classes,
                                         config=replace(config.logistic, progress=progress), layers=layers,
                                         tasks=tasks + control_tasks, label_space=space).to(device)
        real = probes.select(tasks=tasks)
        return real, (probes.select(tasks=control_tasks) if config.control else None)
    lens_config = replace(config.future_lens, seed=seed, device=str(device), progress=progress)
    if method == "ridge":
        both = fit.cat(val)
        return fit_ridge_lens(both.features, both.future_resid, model=model, groups=both.sequence, layers=layers,
                              offsets=offsets, label_space=space, seed=seed, progress=progress), None
    lens = fit_future_lens(fit.features, fit.future_resid, model=model, val_features=val.features,
                           val_future_resid=val.future_resid, config=lens_config, layers=layers, offsets=offsets,
                           label_space=space)
    control = None
    if config.control:
        control = fit_label_lens(fit.features, fit_control, model=model, label_space=space, tasks=control_tasks,
                                 init_resid=fit.future_resid.float().mean((0, 1)), val_features=val.features,
                                 val_labels=val_control, config=lens_config, layers=layers)
    return lens, control
