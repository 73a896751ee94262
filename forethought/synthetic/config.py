"""The settings of the synthetic pre-caching study (:class:`SyntheticConfig`) and its presets (:data:`PRESETS`).

Example:
    >>> PRESETS["smoke"].task()
    PrecacheTask(k=2, frequency=8.0, p=1.0, seq_len=8)
"""

from __future__ import annotations

from dataclasses import dataclass

from forethought.errors import InvalidArgumentError, check_positive
from forethought.synthetic.model import RegressionModelConfig
from forethought.synthetic.task import PrecacheTask

MYOPIC_MODES = ("strict", "cutgrad")


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that defines one run of the experiment (see :data:`PRESETS`).

    Args:
        k, frequency, p, seq_len: the task D_p (:class:`~forethought.synthetic.task.PrecacheTask`).
        n_layers, d_model, n_heads, d_mlp, normalization, mlp_init_scale: the model
            (:class:`~forethought.synthetic.model.RegressionModelConfig`).
        batch_size, steps, lr, weight_decay, warmup_steps, min_lr_ratio: AdamW with a linear warm-up and a cosine
            decay to ``min_lr_ratio * lr``.
        huber_delta: the Huber loss threshold (training and evaluation).
        myopic_mode: ``"strict"`` or ``"cutgrad"`` (:func:`~forethought.myopic_training.myopic`).
        eval_sequences: size of the fixed held-out set for the losses.
        probe_sequences: sequences whose residual streams train and test the probes.
        seed: model initialisation (shared by both regimes) and data streams.
    """

    k: int = 3
    frequency: float = 8.0
    p: float = 1.0
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
    myopic_mode: str = "strict"
    eval_sequences: int = 1024
    probe_sequences: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        self.task()  # validates k, frequency, p, seq_len
        for name in ("n_layers", "d_model", "n_heads", "batch_size", "steps", "eval_sequences", "probe_sequences"):
            check_positive(name, getattr(self, name), integer=True)
        for name in ("lr", "huber_delta", "min_lr_ratio"):
            check_positive(name, getattr(self, name))
        if self.d_model % self.n_heads:
            raise InvalidArgumentError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.seq_len <= self.max_lag:
            raise InvalidArgumentError(
                f"seq_len={self.seq_len} leaves no position to probe lags up to K+2={self.max_lag}; "
                f"use seq_len > {self.max_lag}"
            )
        if not 0 <= self.warmup_steps < self.steps:
            raise InvalidArgumentError(
                f"warmup_steps={self.warmup_steps} is not allowed; expected 0 <= warmup_steps < steps={self.steps}"
            )
        if self.myopic_mode not in MYOPIC_MODES:
            raise InvalidArgumentError(f"myopic_mode={self.myopic_mode!r} is unknown; choose one of {MYOPIC_MODES}")
        if self.weight_decay < 0:
            raise InvalidArgumentError(f"weight_decay={self.weight_decay!r} is not allowed; expected >= 0")

    @property
    def max_lag(self) -> int:
        """The largest probed lag, K + 2."""
        return self.k + 2

    def task(self) -> PrecacheTask:
        return PrecacheTask(k=self.k, frequency=self.frequency, p=self.p, seq_len=self.seq_len)

    def model_config(self) -> RegressionModelConfig:
        return RegressionModelConfig(n_inputs=2, n_layers=self.n_layers, d_model=self.d_model, n_heads=self.n_heads,
                                     n_ctx=self.seq_len, d_mlp=self.d_mlp, normalization=self.normalization,
                                     mlp_init_scale=self.mlp_init_scale, seed=self.seed)


#: ``cpu`` (the default, and the defaults of :class:`SyntheticConfig`): the main job, about 3.5 minutes of one CPU
#: core. Two choices make the pre-caching solution appear within a few thousand steps instead of the paper's tens of
#: millions of sequences: no layer norm (a layer norm squashes ``x`` before the MLP that must compute ``sin(F x)``)
#: and MLP input weights initialised 8 times larger (``sin(8 x)`` is far from the smooth functions a freshly
#: initialised MLP computes). With GPT-2's layer norm the vanilla model left the zero-predictor plateau after 1,100
#: to more than 3,000 steps depending on the seed; without it, after 500 to 900.
#: ``smoke``: the same recipe at toy size, seconds, for CI (it does not learn the task).
#: ``paper``: the paper's setting (K=10, F=10, T=64, 2-layer GPT-2 with layer norm and TransformerLens'
#: initialisation, d=128, 2 heads, batch 512, AdamW 1e-3, ~30M sequences), for a GPU.
PRESETS: dict[str, SyntheticConfig] = {
    "smoke": SyntheticConfig(k=2, seq_len=8, d_model=32, n_heads=2, d_mlp=64, batch_size=32, steps=30,
                             warmup_steps=5, eval_sequences=64, probe_sequences=64),
    "cpu": SyntheticConfig(),
    "paper": SyntheticConfig(k=10, frequency=10.0, seq_len=64, n_layers=2, d_model=128, n_heads=2, d_mlp=None,
                             normalization="LN", mlp_init_scale=1.0, batch_size=512, steps=60_000, warmup_steps=1000,
                             eval_sequences=4096, probe_sequences=2048),
}
