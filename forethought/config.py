"""The settings of forethought's runs, as plain dataclasses.

:class:`TrainConfig` holds the training loop's settings and :class:`SyntheticConfig` those of the synthetic
pre-caching study, with its :data:`SYNTHETIC_PRESETS`.

Plain Python, importable without torch, so that the command line builds its options from these dataclasses at once
(:mod:`forethought.experiments.commands`): each field is an option, its line in ``Attributes:`` the option's help.
Fields marked :func:`not_an_option` are set by the command (``--seed``, ``--device``, ``--progress``, ``--out``).

Example:
    >>> config = TrainConfig(regime="myopic", steps=10)
    >>> config.warmup_steps, config.curve_settings()["regime"]
    (1, 'myopic')
    >>> SYNTHETIC_PRESETS["smoke"].k
    2
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal

from forethought.errors import (
    InvalidArgumentError,
    check_choice,
    check_number,
    check_positive,
    check_probability,
    check_seed,
)
from forethought.options import DEVICES, MIXED_PRECISION, MODES
from forethought.regimes import get_regime

if TYPE_CHECKING:
    from forethought.synthetic.model import RegressionModelConfig
    from forethought.synthetic.task import PrecacheTask


def flag(default: bool) -> Any:
    """A ``bool`` field whose options are ``--name`` and ``--no-name`` (as simple-parsing reads its metadata)."""
    return field(default=default, metadata={"custom_args": {"negative_prefix": "--no-"}})


def not_an_option(default: Any) -> Any:
    """A field that has no option of its own: the command sets it (from ``--seed``, ``--device``, ...)."""
    return field(default=default, metadata={"cmd": False})


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    Attributes:
        regime: a registered regime: ``"vanilla"``, ``"myopic"``, ``"local-myopic"``, ``"bigram"`` or one added
            with :func:`~forethought.regimes.register_regime`.
        mode: myopic gradient mode, ``"strict"`` or ``"cutgrad"`` (``"myopic"`` regime only).
        beta: interpolation towards the vanilla gradient in ``[0, 1]`` (``"myopic"`` regime only).
        steps: optimizer steps.
        batch_size: the global batch (over all processes), in sequences per step.
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
    weight_decay_all: bool = flag(False)
    adam_betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0
    eval_every: int = 100
    eval_batches: int | None = None
    checkpoint_every: int = 100
    seed: int = not_an_option(0)
    out_dir: str | os.PathLike | None = not_an_option(None)
    resume: bool = flag(False)
    mixed_precision: str = "auto"
    device: str = not_an_option("auto")
    progress: bool = not_an_option(True)
    gradient_split_every: int | None = None
    gradient_split_batches: int = 4

    def __post_init__(self) -> None:
        get_regime(self.regime)
        check_choice("mode", self.mode, MODES)
        check_number("beta", self.beta, low=0, high=1)
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every"):
            check_positive(name, getattr(self, name), integer=True)
        check_positive("lr", self.lr)
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
        check_number("min_lr_ratio", self.min_lr_ratio, low=0, high=1)
        check_number("weight_decay", self.weight_decay, low=0)
        if not isinstance(self.weight_decay_all, bool):
            raise InvalidArgumentError(f"weight_decay_all={self.weight_decay_all!r} is not allowed; expected a bool")
        self.adam_betas = tuple(self.adam_betas)
        if len(self.adam_betas) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool)
                                                 and 0 <= b < 1 for b in self.adam_betas):
            raise InvalidArgumentError(f"adam_betas={self.adam_betas!r} is not allowed; expected two numbers in [0, 1)")
        check_seed("seed", self.seed)
        check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        check_choice("device", self.device, DEVICES)
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


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that defines one run of the synthetic study (see :data:`SYNTHETIC_PRESETS`).

    Attributes:
        k: terms in the past sum of the task D_p (K; :class:`~forethought.synthetic.task.PrecacheTask`).
        frequency: F in ``sin(F x)``; keep it >= 8 (a low F makes ``sin(F x)`` nearly linear in ``x``).
        p: probability that a position's target is the past sum rather than ``x_n``; in ``(0, 1]``.
        seq_len: positions per sequence (T).
        n_layers: transformer blocks (:class:`~forethought.synthetic.model.RegressionModelConfig`).
        d_model: residual width.
        n_heads: attention heads.
        d_mlp: MLP width (``None``: ``4 * d_model``).
        normalization: ``"LN"`` (GPT-2's layer norm) or ``None`` (none).
        mlp_init_scale: factor on the initial MLP input weights.
        batch_size: sequences per training step.
        steps: training steps per regime.
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps.
        min_lr_ratio: the cosine decay ends at ``min_lr_ratio * lr``.
        huber_delta: the Huber loss threshold (training and evaluation).
        mode: myopic gradient mode, ``"strict"`` or ``"cutgrad"`` (:func:`~forethought.myopic_training.myopic`).
        eval_sequences: size of the fixed held-out set for the losses.
        probe_sequences: sequences whose residual streams train and test the probes.
        seed: model initialisation (shared by both regimes) and data streams.
    """

    k: int = 3
    frequency: float = field(default=8.0, metadata={"alias": ["-F"]})
    p: float = not_an_option(1.0)
    seq_len: int = 16
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    d_mlp: int | None = 128
    normalization: str | None = None
    mlp_init_scale: float = 8.0
    batch_size: int = 128
    steps: int = 4000
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    huber_delta: float = 1.0
    mode: Literal["strict", "cutgrad"] = "strict"
    eval_sequences: int = 1024
    probe_sequences: int = 512
    seed: int = not_an_option(0)

    def __post_init__(self) -> None:
        check_positive("k", self.k, integer=True)  # the task's own checks, without building it (torch)
        check_positive("frequency", self.frequency)
        check_probability("p", self.p)
        for name in ("seq_len", "n_layers", "d_model", "n_heads", "batch_size", "steps", "eval_sequences",
                     "probe_sequences"):
            check_positive(name, getattr(self, name), integer=True)
        for name in ("lr", "huber_delta", "mlp_init_scale"):
            check_positive(name, getattr(self, name))
        check_number("min_lr_ratio", self.min_lr_ratio, low=0, low_open=True, high=1)
        check_seed("seed", self.seed)
        if self.d_mlp is not None:
            check_positive("d_mlp", self.d_mlp, integer=True)
        if self.d_model % self.n_heads:
            raise InvalidArgumentError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.seq_len <= self.max_lag:
            raise InvalidArgumentError(
                f"seq_len={self.seq_len} leaves no position to probe lags up to K+2={self.max_lag}; "
                f"use seq_len > {self.max_lag}"
            )
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or not (
                0 <= self.warmup_steps < self.steps):
            raise InvalidArgumentError(
                f"warmup_steps={self.warmup_steps} is not allowed; expected 0 <= warmup_steps < steps={self.steps}"
            )
        check_choice("mode", self.mode, MODES)
        check_number("weight_decay", self.weight_decay, low=0)

    def with_steps(self, steps: int) -> SyntheticConfig:
        """This config trained for ``steps`` steps, its warm-up shortened to a tenth of them if it was longer.

        Example:
            >>> SYNTHETIC_PRESETS["smoke"].with_steps(20).warmup_steps
            2
        """
        check_positive("steps", steps, integer=True)
        return replace(self, steps=steps, warmup_steps=min(self.warmup_steps, steps // 10))

    @property
    def max_lag(self) -> int:
        """The largest probed lag, K + 2."""
        return self.k + 2

    def task(self) -> PrecacheTask:
        """The task D_p of this run."""
        from forethought.synthetic.task import PrecacheTask

        return PrecacheTask(k=self.k, frequency=self.frequency, p=self.p, seq_len=self.seq_len)

    def model_config(self) -> RegressionModelConfig:
        """The regression transformer of this run."""
        from forethought.synthetic.model import RegressionModelConfig

        return RegressionModelConfig(n_inputs=2, n_layers=self.n_layers, d_model=self.d_model, n_heads=self.n_heads,
                                     n_ctx=self.seq_len, d_mlp=self.d_mlp, normalization=self.normalization,
                                     mlp_init_scale=self.mlp_init_scale, seed=self.seed)


#: Presets of :class:`SyntheticConfig` (``forethought synthetic --preset``).
#: ``cpu`` (the default, and the defaults of :class:`SyntheticConfig`): the main job, about 3.5 minutes of one CPU
#: core. Two choices make the pre-caching solution appear within a few thousand steps instead of the paper's tens of
#: millions of sequences: no layer norm (a layer norm squashes ``x`` before the MLP that must compute ``sin(F x)``)
#: and MLP input weights initialised 8 times larger (``sin(8 x)`` is far from the smooth functions a freshly
#: initialised MLP computes). With GPT-2's layer norm the vanilla model left the zero-predictor plateau after 1,100
#: to more than 3,000 steps depending on the seed; without it, after 500 to 900.
#: ``smoke``: the same recipe at toy size, seconds, for CI (it does not learn the task).
#: ``paper``: the paper's setting (K=10, F=10, T=64, 2-layer GPT-2 with layer norm and TransformerLens'
#: initialisation, d=128, 2 heads, batch 512, AdamW 1e-3, ~30M sequences), for a GPU.
SYNTHETIC_PRESETS: dict[str, SyntheticConfig] = {
    "smoke": SyntheticConfig(k=2, seq_len=8, d_model=32, n_heads=2, d_mlp=64, batch_size=32, steps=30,
                             warmup_steps=5, eval_sequences=64, probe_sequences=64),
    "cpu": SyntheticConfig(),
    "paper": SyntheticConfig(k=10, frequency=10.0, seq_len=64, n_layers=2, d_model=128, n_heads=2, d_mlp=None,
                             normalization="LN", mlp_init_scale=1.0, batch_size=512, steps=60_000, warmup_steps=1000,
                             eval_sequences=4096, probe_sequences=2048),
}
