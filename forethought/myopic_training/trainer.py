"""The trainer: vanilla, myopic, local-myopic and transformer-bigram training of a ``TransformerBridge``.

One function, :func:`train`, whose loop reads top to bottom: sample a batch, forward in the regime's context,
check the loss is finite, backward, clip, AdamW step, warmup + cosine schedule, evaluate every ``eval_every``
steps, checkpoint every ``checkpoint_every`` steps. It runs on HF ``accelerate`` (``Accelerator``), so the same
script runs on a CPU, one GPU (bf16 autocast) or several GPUs under ``accelerate launch`` (DDP; ``batch_size``
is the global batch, split across processes).

Choices a reader should know:

* **Dropout is off in every regime**: the model is kept in eval mode while it trains. Myopic gradients cannot
  be computed exactly through attention dropout (HF GPT-2 checkpoints default to dropout 0.1), and regimes
  should differ only in their gradients. The paper-style from-scratch models have no dropout anyway.
* **Data order** is a function of ``(seed, step)``: each epoch is a fresh permutation of the training sequences
  drawn from ``numpy.random.default_rng([seed, epoch])``, and the last incomplete batch is dropped. Resuming at
  step ``s`` therefore sees exactly the batches an uninterrupted run sees.
* **Checkpoints** (``out_dir/checkpoint.pt``) hold model, optimizer, scheduler, RNG states (torch, CUDA, numpy,
  python), the data order, the step and the log so far. They are written to a temporary file and renamed, and
  read with ``torch.load(weights_only=True)``: a file carrying a pickled object is refused.
* **Interrupts**: SIGINT or SIGTERM finishes the current step, writes a checkpoint and raises
  :class:`TrainingInterrupted` (a ``KeyboardInterrupt``); a second signal interrupts at once.
* **Numerical guard**: a NaN/inf loss or gradient norm raises :class:`~forethought.errors.NumericalError` before
  the weights are updated; the last checkpoint on disk is the last good one.

Example:
    >>> import torch
    >>> from forethought.models import tiny_model
    >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
    >>> tokens = torch.randint(0, 20, (40, 8), generator=torch.Generator().manual_seed(0))
    >>> config = TrainConfig(regime="myopic", steps=5, batch_size=8, lr=1e-2, eval_every=5, progress=False)
    >>> result = train(config, model, (tokens[:32], tokens[32:]))
    >>> [record["step"] for record in result.history]
    [1, 2, 3, 4, 5]
    >>> result.eval_loss < 3.5
    True
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from forethought.data import TokenSplits, check_tokens_fit
from forethought.errors import DataError, InvalidArgumentError, NumericalError, check_positive
from forethought.models import copy_model, save_model
from forethought.myopic_training.checkpoints import (  # noqa: F401 - re-exported
    CHECKPOINT_FORMAT,
    check_same_settings,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    seed_everything,
)
from forethought.myopic_training.evaluation import position_loss_sums
from forethought.myopic_training.gradient_split import gradient_split
from forethought.myopic_training.hooks import MODES, myopic
from forethought.myopic_training.regimes import RegimeModel, check_regime, forward_context
from forethought.myopic_training.runtime import (  # noqa: F401 - check_device is re-exported
    JsonLinesLog,
    StopOnSignal,
    check_device,
    make_accelerator,
)
from forethought.options import DEVICES, MIXED_PRECISION
from forethought.reporting import prepare_out_dir

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
MODEL_DIR = "model"
PAST_MODEL_DIR = "past_model"


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
        """The settings that determine the loss curve; a resumed run must use the same ones."""
        ignored = {"eval_every", "eval_batches", "checkpoint_every", "out_dir", "resume", "progress", "device",
                   "gradient_split_every", "gradient_split_batches"}
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name not in ignored}


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model and its log (one dict per step)."""

    model: Any
    config: TrainConfig
    history: list[dict[str, float]] = field(default_factory=list)
    past_model: Any = None
    out_dir: Path | None = None

    @property
    def losses(self) -> list[float]:
        """Training loss at every step."""
        return [record["loss"] for record in self.history]

    @property
    def eval_loss(self) -> float | None:
        """The last validation loss."""
        evals = [record["eval_loss"] for record in self.history if "eval_loss" in record]
        return evals[-1] if evals else None

    def regime_model(self) -> RegimeModel:
        """The model with the forward pass its regime evaluates it with."""
        return RegimeModel(self.model, self.config.regime, self.past_model)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint at ``step``."""

    def __init__(self, step: int, checkpoint: Path | None):
        self.step, self.checkpoint = step, checkpoint
        where = f"; checkpoint written to {checkpoint} (rerun with resume to continue)" if checkpoint else ""
        super().__init__(f"training interrupted after step {step}{where}")


def train(
    config: TrainConfig,
    model: Any,
    data: TokenSplits | tuple[Int[Tensor, "n_train pos"], Int[Tensor, "n_val pos"]],
    past_model: Any = None,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place as ``config`` says; see the module docstring for the choices made.

    Args:
        config: the run's settings.
        model: a ``TransformerBridge``: freshly initialised (from scratch) or loaded (fine-tuning).
        data: train and validation token sequences (a :class:`~forethought.data.TokenSplits` or a pair).
        past_model: the frozen model that supplies the past in the ``"local-myopic"`` regime; by default a frozen
            copy of ``model`` as it is before training (the pretrained model, when fine-tuning).
        on_step: called with each step's log record (``step``, ``loss``, ``lr``, ``grad_norm``, ``eval_loss``,
            ``gradient_split``).

    Returns:
        A :class:`TrainResult`. With ``out_dir`` set, the directory holds ``checkpoint.pt``, ``log.jsonl`` and the
        final model in ``model/`` (and the frozen past model in ``past_model/`` for ``"local-myopic"``).

    Raises:
        InvalidArgumentError: ``out_dir`` already holds a run and ``resume`` is not set; bad settings.
        CheckpointError: the checkpoint is corrupt, unsafe, or was written with other settings.
        NumericalError: the loss or gradient became NaN/inf (the last good checkpoint is kept).
        TrainingInterrupted: SIGINT/SIGTERM (a checkpoint was written first).
    """
    train_tokens, val_tokens = (data.train, data.validation) if isinstance(data, TokenSplits) else data
    for tokens in (train_tokens, val_tokens):
        check_tokens_fit(model, tokens)
    if len(train_tokens) < config.batch_size:
        raise DataError(f"{len(train_tokens)} training sequences are fewer than batch_size={config.batch_size}; "
                        "use a smaller batch or more data")
    out = _run_dir(config)
    accelerator = make_accelerator(config.device, config.mixed_precision)
    if config.batch_size % accelerator.num_processes:
        raise InvalidArgumentError(f"batch_size={config.batch_size} is not divisible by the "
                                   f"{accelerator.num_processes} processes")
    seed_everything(config.seed)
    model.eval()  # dropout off in every regime (see module docstring)
    past_model = _frozen_past_model(config, model, past_model)
    optimizer = torch.optim.AdamW(_parameter_groups(model, config.weight_decay), lr=config.lr,
                                  betas=config.adam_betas)
    scheduler = warmup_cosine_schedule(optimizer, config.steps, config.warmup_steps, config.min_lr_ratio)
    for module in (model, past_model):
        if module is not None:
            module.to(accelerator.device, print_details=False)
    if accelerator.num_processes > 1 and accelerator.ddp_handler is not None:  # DDP searches only where needed
        accelerator.ddp_handler.find_unused_parameters = _leaves_parameters_unused(config, model, past_model)
    wrapped, optimizer = accelerator.prepare(model, optimizer, device_placement=[False, False])
    model = accelerator.unwrap_model(wrapped)

    step, history = 0, []
    if out is not None and config.resume and (out / CHECKPOINT).exists():
        state = load_checkpoint(out / CHECKPOINT, config.curve_settings(), model, optimizer, scheduler, past_model)
        step, history = int(state["step"]), list(state["history"])
        if accelerator.is_main_process:
            tqdm.write(f"resuming {config.regime} from step {step} of {config.steps}", file=sys.stderr)
    start_step = step
    log = JsonLinesLog(out / LOG, history) if out is not None and accelerator.is_main_process else None
    order = BatchOrder(len(train_tokens), config.batch_size, config.seed)
    eval_tokens = val_tokens[: config.eval_batches * config.batch_size] if config.eval_batches else val_tokens
    last_checkpoint = step if out is not None and step else None

    bar = tqdm(total=config.steps, initial=step, desc=config.regime, dynamic_ncols=True,
               disable=not config.progress or not accelerator.is_local_main_process)
    with StopOnSignal() as stop, bar:
        while step < config.steps:
            rows = order.batch(step)[accelerator.process_index :: accelerator.num_processes]
            tokens = train_tokens[rows].to(accelerator.device)
            with accelerator.autocast(), training_context(config, model, past_model):
                loss = wrapped(tokens, return_type="loss")
            mean_loss = accelerator.reduce(loss.detach().float(), reduction="mean").item()
            if not math.isfinite(mean_loss):
                raise NumericalError(_numerical_message("loss", mean_loss, step + 1, out, last_checkpoint))
            accelerator.backward(loss)
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.grad_clip or math.inf)
            grad_norm = float(grad_norm)
            if not math.isfinite(grad_norm):
                raise NumericalError(_numerical_message("gradient norm", grad_norm, step + 1, out, last_checkpoint))
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            record = {"step": step, "loss": mean_loss, "lr": lr, "grad_norm": grad_norm}
            if step % config.eval_every == 0 or step == config.steps:
                record["eval_loss"] = _evaluate(accelerator, config, model, past_model, eval_tokens)
                if config.gradient_split_every and (step % config.gradient_split_every == 0 or step == config.steps):
                    record["gradient_split"] = _gradient_split(accelerator, config, model, past_model, eval_tokens)
            history.append(record)
            if log is not None:
                log.append(record)
            bar.update()
            bar.set_postfix({key: f"{record[key]:.4f}" for key in ("loss", "eval_loss") if key in record})
            if on_step is not None:
                on_step(record)
            if out is not None and (step % config.checkpoint_every == 0 or step == config.steps or stop.signum):
                _check_finite_weights(model, step, out, last_checkpoint)
                save_checkpoint(out / CHECKPOINT, accelerator, step=step, settings=config.curve_settings(),
                                data_order={"seed": config.seed, "n_sequences": len(train_tokens),
                                            "batch_size": config.batch_size},
                                history=history, model=model, optimizer=optimizer, scheduler=scheduler,
                                past_model=past_model)
                last_checkpoint = step
            if stop.signum:
                raise TrainingInterrupted(step, out / CHECKPOINT if out is not None else None)

    if out is not None and accelerator.is_main_process and (step > start_step or not (out / MODEL_DIR).exists()):
        save_model(model, out / MODEL_DIR)
        if past_model is not None:
            save_model(past_model, out / PAST_MODEL_DIR)
    accelerator.wait_for_everyone()
    return TrainResult(model=model, config=config, history=history, past_model=past_model, out_dir=out)


def training_context(config: TrainConfig, model: Any, past_model: Any = None) -> AbstractContextManager:
    """The context of a training forward: myopic gradients for ``"myopic"``, else the regime's forward."""
    if config.regime == "myopic":
        return myopic(model, mode=config.mode, beta=config.beta)
    return forward_context(config.regime, model, past_model)


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, steps: int, warmup_steps: int,
                           min_lr_ratio: float) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warmup over ``warmup_steps`` (step ``s`` uses ``lr * (s + 1) / warmup_steps``), then cosine decay
    to ``lr * min_lr_ratio`` at step ``steps``; built from ``torch.optim.lr_scheduler``.

    Example:
        >>> optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> schedule = warmup_cosine_schedule(optimizer, steps=4, warmup_steps=2, min_lr_ratio=0.0)
        >>> lrs = []
        >>> for _ in range(4):
        ...     lrs.append(round(schedule.get_last_lr()[0], 3)); optimizer.step(); schedule.step()
        >>> lrs
        [0.5, 1.0, 1.0, 0.5]
    """
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    base_lr = optimizer.param_groups[0]["lr"]
    cosine = CosineAnnealingLR(optimizer, T_max=steps - warmup_steps, eta_min=base_lr * min_lr_ratio)
    if warmup_steps <= 1:
        return cosine
    warmup = LinearLR(optimizer, start_factor=1 / warmup_steps, end_factor=1.0, total_iters=warmup_steps - 1)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])


@dataclass(frozen=True)
class BatchOrder:
    """Which training sequences make up the batch of each step: a pure function of ``(seed, step)``.

    Each epoch is a permutation drawn from ``numpy.random.default_rng([seed, epoch])``; the last incomplete
    batch of an epoch is dropped.

    Example:
        >>> order = BatchOrder(n_sequences=10, batch_size=4, seed=0)
        >>> sorted(order.batch(0).tolist() + order.batch(1).tolist()) == sorted(set(order.epoch(0)[:8].tolist()))
        True
    """

    n_sequences: int
    batch_size: int
    seed: int

    @property
    def batches_per_epoch(self) -> int:
        return self.n_sequences // self.batch_size

    def batch(self, step: int) -> Int[Tensor, " batch"]:
        epoch, index = divmod(step, self.batches_per_epoch)
        return self.epoch(epoch)[index * self.batch_size : (index + 1) * self.batch_size]

    def epoch(self, epoch: int) -> Int[Tensor, " n_sequences"]:
        return _permutation(self.n_sequences, self.seed, epoch)


@lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> Tensor:
    return torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(n))


# -- helpers ------------------------------------------------------------------------------------------------------


def _run_dir(config: TrainConfig) -> Path | None:
    if config.out_dir is None:
        return None
    out = Path(config.out_dir).expanduser()
    if (out / CHECKPOINT).exists() and not config.resume:
        raise InvalidArgumentError(
            f"{str(out)!r} already holds a training run ({CHECKPOINT}); resume it (--resume) or choose another "
            "directory"
        )
    return prepare_out_dir(out)


def _leaves_parameters_unused(config: TrainConfig, model: Any, past_model: Any) -> bool:
    """Whether a training forward leaves a trainable parameter without gradient (probed with one two-token
    backward): DDP must then search the graph for unused parameters on every step. Fused-qkv bridges (GPT-2,
    NeoX) hold a fused weight that gets no gradient and the bigram regime never uses W_Q, W_K; split-projection
    models (native, Llama) in the other regimes use every parameter."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    tokens = torch.zeros(1, 2, dtype=torch.long, device=parameters[0].device)
    with training_context(config, model, past_model):
        loss = model(tokens, return_type="loss")
    return any(grad is None for grad in torch.autograd.grad(loss, parameters, allow_unused=True))


def _frozen_past_model(config: TrainConfig, model: Any, past_model: Any) -> Any:
    if config.regime != "local-myopic":
        return None
    past = copy_model(model) if past_model is None else past_model
    return past.eval().requires_grad_(False)


def _parameter_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices (embeddings, projections), none on biases and norm gains (as nanoGPT)."""
    seen: set[int] = set()
    decay, no_decay = [], []
    for parameter in model.parameters():
        if not parameter.requires_grad or id(parameter) in seen:
            continue
        seen.add(id(parameter))
        (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _evaluate(accelerator: Any, config: TrainConfig, model: Any, past_model: Any, tokens: Tensor) -> float:
    """Mean validation loss in the regime's forward; each process takes a shard and the sums are reduced."""
    shard = tokens[accelerator.process_index :: accelerator.num_processes]
    sums = torch.zeros(tokens.shape[1] - 1, dtype=torch.float64)
    if len(shard):
        regime_model = RegimeModel(model, config.regime, past_model)
        with accelerator.autocast():
            sums = position_loss_sums(regime_model, shard, batch_size=config.batch_size)
    totals = torch.cat([sums, torch.tensor([float(len(shard))], dtype=torch.float64)]).to(accelerator.device)
    totals = accelerator.reduce(totals, reduction="sum").cpu()
    return (totals[:-1].sum() / (totals[-1] * (tokens.shape[1] - 1))).item()


def _check_finite_weights(model: torch.nn.Module, step: int, out: Path | None, last_checkpoint: int | None) -> None:
    """Raise :class:`NumericalError` before a poisoned state is written: every weight must be finite."""
    bad = sum(int((~torch.isfinite(p)).sum()) for p in model.parameters())
    if bad:
        kept = (f"the last good checkpoint (step {last_checkpoint}) is kept in {str(out / CHECKPOINT)!r}"
                if last_checkpoint else "no checkpoint was written")
        raise NumericalError(f"{bad} weights are NaN or infinite after step {step}; stopped before saving them and "
                             f"{kept}. Lower the learning rate or raise warmup_steps and start a new run")


def _gradient_split(accelerator: Any, config: TrainConfig, model: Any, past_model: Any,
                    tokens: Tensor) -> list[dict[str, Any]]:
    """The gradient split of the validation loss in the regime's forward, as JSON-ready rows (every process
    computes it on the same sequences)."""
    def loss_fn(bridge: Any, batch: Tensor) -> Tensor:
        with accelerator.autocast(), forward_context(config.regime, bridge, past_model):
            return bridge(batch, return_type="loss")

    tokens = tokens[: config.gradient_split_batches * config.batch_size]
    return gradient_split(model, tokens, loss_fn=loss_fn, batch_size=config.batch_size).records()


def _numerical_message(what: str, value: float, step: int, out: Path | None, last_checkpoint: int | None) -> str:
    kept = (f"the last good checkpoint (step {last_checkpoint}) is kept in {str(out / CHECKPOINT)!r}"
            if last_checkpoint else "no checkpoint was written")
    return (f"the training {what} is {value} at step {step}; stopped before updating the weights and {kept}. "
            "Lower the learning rate or raise warmup_steps and start a new run")


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, os.PathLike):
        return str(value)
    return value
