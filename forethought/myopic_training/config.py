"""The settings of a training run (:class:`TrainConfig`), shared by every model the training loop trains.

Example:
    >>> config = TrainConfig(regime="myopic", steps=10)
    >>> config.warmup_steps, config.curve_settings()["regime"]
    (1, 'myopic')
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Any, Literal

from forethought.errors import InvalidArgumentError, check_positive
from forethought.myopic_training.hooks import MODES
from forethought.myopic_training.regimes import check_regime
from forethought.options import DEVICES, MIXED_PRECISION


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    Attributes:
        regime: ``"vanilla"``, ``"myopic"``, ``"local-myopic"`` or ``"bigram"`` (see
            :mod:`~forethought.myopic_training.regimes`).
        mode: myopic gradient mode, ``"strict"`` or ``"cutgrad"`` (``"myopic"`` regime only).
        beta: interpolation towards the vanilla gradient in ``[0, 1]`` (``"myopic"`` regime only).
        steps: optimizer steps.
        batch_size: sequences per step (the global batch across processes).
        lr: peak learning rate of AdamW.
        warmup_steps: linear warmup from ``lr / warmup_steps`` to ``lr``; ``None``: ``min(100, steps // 10)``.
        min_lr_ratio: the cosine decay ends at ``lr * min_lr_ratio``.
        weight_decay: AdamW weight decay, applied to matrices only (not to biases, norms).
        weight_decay_all: apply ``weight_decay`` to every trainable parameter (biases and norm gains too), as a
            plain ``torch.optim.AdamW(model.parameters())`` does.
        adam_betas: AdamW betas.
        grad_clip: clip the global gradient norm to this value (``None``: no clipping).
        eval_every: evaluate on the validation set every this many steps (and at the last step).
        eval_batches: evaluate on at most this many batches of validation sequences (``None``: all).
        checkpoint_every: write a checkpoint every this many steps (and at the last step); needs ``out_dir``.
        seed: seed of the data order and of torch/numpy/python RNGs.
        out_dir: where checkpoints, the JSON-lines log and the final model go (``None``: nothing is written).
        resume: continue from ``out_dir/checkpoint.pt`` if it exists.
        mixed_precision: ``"auto"`` (bf16 autocast on a CUDA GPU that supports it, else none), ``"no"``, ``"bf16"``.
        device: ``"auto"`` (accelerate's choice), ``"cpu"``, ``"cuda"`` or ``"mps"``.
        progress: show a tqdm progress bar.
        gradient_split_every: at evaluation steps that are multiples of this (a multiple of ``eval_every``) and
            at the last step, record the gradient split (:func:`~forethought.myopic_training.gradient_split`,
            both modes, on the validation sequences) in the log record's ``"gradient_split"`` entry (``None``: never).
        gradient_split_batches: validation batches of ``batch_size`` sequences the split's expected gradient is
            accumulated over.
    """

    regime: str = "vanilla"
    mode: Literal["strict", "cutgrad"] = "strict"
    beta: float = 0.0
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    weight_decay_all: bool = False
    adam_betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0
    eval_every: int = 100
    eval_batches: int | None = None
    checkpoint_every: int = 100
    seed: int = 0
    out_dir: str | os.PathLike | None = None
    resume: bool = False
    mixed_precision: str = "auto"
    device: str = "auto"
    progress: bool = True
    gradient_split_every: int | None = None
    gradient_split_batches: int = 4

    def __post_init__(self) -> None:
        check_regime(self.regime)
        if self.mode not in MODES:
            raise InvalidArgumentError(f"mode={self.mode!r} is unknown; choose one of {', '.join(MODES)}")
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not 0 <= self.beta <= 1:
            raise InvalidArgumentError(f"beta={self.beta!r} is not allowed; expected a number in [0, 1]")
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every"):
            check_positive(name, getattr(self, name), integer=True)
        check_positive("lr", self.lr)
        if not math.isfinite(self.lr):
            raise InvalidArgumentError(f"lr={self.lr!r} is not allowed; expected a finite positive number")
        if self.eval_batches is not None:
            check_positive("eval_batches", self.eval_batches, integer=True)
        if self.grad_clip is not None:
            check_positive("grad_clip", self.grad_clip)
        if self.warmup_steps is None:
            self.warmup_steps = min(100, self.steps // 10)
        if not isinstance(self.warmup_steps, int) or not 0 <= self.warmup_steps < self.steps:
            raise InvalidArgumentError(
                f"warmup_steps={self.warmup_steps!r} is not allowed; expected an integer in [0, steps={self.steps})"
            )
        if not 0 <= self.min_lr_ratio <= 1:
            raise InvalidArgumentError(f"min_lr_ratio={self.min_lr_ratio!r} is not allowed; expected 0 <= x <= 1")
        if not self.weight_decay >= 0:
            raise InvalidArgumentError(f"weight_decay={self.weight_decay!r} is not allowed; expected >= 0")
        if not isinstance(self.weight_decay_all, bool):
            raise InvalidArgumentError(f"weight_decay_all={self.weight_decay_all!r} is not allowed; expected a bool")
        self.adam_betas = tuple(self.adam_betas)
        if len(self.adam_betas) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool)
                                                 and 0 <= b < 1 for b in self.adam_betas):
            raise InvalidArgumentError(f"adam_betas={self.adam_betas!r} is not allowed; expected two numbers in [0, 1)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise InvalidArgumentError(f"seed={self.seed!r} is not allowed; expected an integer in [0, 2**32)")
        if self.mixed_precision not in MIXED_PRECISION:
            raise InvalidArgumentError(
                f"mixed_precision={self.mixed_precision!r} is unknown; choose one of {', '.join(MIXED_PRECISION)}"
            )
        if self.device not in DEVICES:
            raise InvalidArgumentError(f"device={self.device!r} is unknown; choose one of {', '.join(DEVICES)}")
        check_positive("gradient_split_batches", self.gradient_split_batches, integer=True)
        if self.gradient_split_every is not None:
            check_positive("gradient_split_every", self.gradient_split_every, integer=True)
            if self.gradient_split_every % self.eval_every:
                raise InvalidArgumentError(f"gradient_split_every={self.gradient_split_every} is not a multiple of "
                                           f"eval_every={self.eval_every}; the split is recorded at evaluation steps")

    def curve_settings(self) -> dict[str, Any]:
        """The settings that determine the loss curve; a resumed run must use the same ones.

        ``weight_decay_all`` is listed only when set, so that checkpoints written before it existed still resume.
        """
        ignored = {"eval_every", "eval_batches", "checkpoint_every", "out_dir", "resume", "progress", "device",
                   "gradient_split_every", "gradient_split_batches"}
        if not self.weight_decay_all:
            ignored.add("weight_decay_all")
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name not in ignored}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, os.PathLike):
        return str(value)
    return value
