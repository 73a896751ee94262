"""One training loop: a model, a batch source and a loss function, in vanilla, myopic or another regime.

:func:`run_training` reads top to bottom: take the step's batch, forward in the regime's training context (myopic
gradients for ``"myopic"``, see :meth:`forethought.regimes.Regime.training_context`), backward, check the loss and
the gradient norm are finite, clip, AdamW step, warmup + cosine schedule, evaluate every ``eval_every`` steps,
checkpoint every ``checkpoint_every`` steps. It runs on HF ``accelerate``: a CPU, one GPU (bf16 autocast) or several
under ``accelerate launch`` (DDP; ``batch_size`` is the global batch, split across processes). Language modelling
(:func:`~forethought.myopic_training.train`) and the synthetic pre-caching study
(:func:`forethought.synthetic.train_regime`) are both this loop.

* **Dropout is off**: the model is kept in eval mode while it trains (myopic gradients cannot be computed exactly
  through attention dropout, and regimes should differ only in their gradients).
* **Resume**: with ``config.resume`` and an existing ``checkpoint`` file, the run continues from it
  (:mod:`~forethought.myopic_training.checkpoints`); the batch source's state is restored, so the losses are
  those of an uninterrupted run.
* **Interrupts**: SIGINT or SIGTERM finishes the current step, writes a checkpoint and raises
  :class:`TrainingInterrupted` (a ``KeyboardInterrupt``); a second signal interrupts at once.
* **Numerical guard**: a NaN/inf loss or gradient norm raises :class:`~forethought.errors.NumericalError` before
  the weights are updated; the last checkpoint on disk is the last good one.

Example:
    >>> from forethought.models import tiny_model
    >>> from forethought.myopic_training.batches import TokenBatches
    >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
    >>> tokens = torch.randint(0, 20, (32, 8), generator=torch.Generator().manual_seed(0))
    >>> config = TrainConfig(regime="myopic", steps=3, batch_size=8, lr=1e-2, progress=False)
    >>> result = run_training(config, model, TokenBatches(tokens, 8, seed=0),
    ...                       lambda model, batch: model(batch, return_type="loss"))
    >>> len(result.losses)
    3
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate.utils import set_seed
from torch import Tensor, nn
from tqdm.auto import tqdm

from forethought.config import TrainConfig
from forethought.errors import InvalidArgumentError, NumericalError
from forethought.myopic_training.batches import BatchSource
from forethought.myopic_training.checkpoints import load_checkpoint, save_checkpoint
from forethought.myopic_training.regimes import RegimeModel
from forethought.myopic_training.runtime import JsonLinesLog, Runtime, StopOnSignal, make_runtime
from forethought.regimes import get_regime

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

#: ``loss_fn(model, batch)``: the scalar training loss of one batch (``model`` may be wrapped for DDP).
LossFn = Callable[[nn.Module, Any], Tensor]
#: ``evaluate(runtime, model, step)``: entries added to the log record at evaluation steps.
EvaluateFn = Callable[[Runtime, nn.Module, int], dict[str, Any]]


@dataclass
class TrainResult:
    """What the training loop returns: the trained model and its log (one dict per step)."""

    model: torch.nn.Module
    config: TrainConfig
    history: list[dict[str, float]] = field(default_factory=list)
    past_model: TransformerBridge | None = None
    out_dir: Path | None = None
    start_step: int = 0
    seconds: float = 0.0

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

    def to_frame(self) -> Any:
        """The training log as a DataFrame: one row per step (``step``, ``loss``, ``lr``, ``eval_loss``, ...)."""
        import pandas as pd

        return pd.DataFrame(self.history)

    def plot(self, title: str | None = None) -> Any:
        """Training and validation loss by step (:func:`forethought.plots.plot_training_curves`)."""
        from forethought.plots import plot_training_curves

        return plot_training_curves(self.history, title=title or f"Training ({self.config.regime})")

    def __repr__(self) -> str:
        final = f"{self.losses[-1]:.4f}" if self.history else "n/a"
        evaluated = f", eval loss {self.eval_loss:.4f}" if self.eval_loss is not None else ""
        return (f"TrainResult({self.config.regime}, {len(self.history)} steps from step {self.start_step}, "
                f"final loss {final}{evaluated}, {self.seconds:.1f} s)")


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint at ``step``."""

    def __init__(self, step: int, checkpoint: Path | None):
        self.step, self.checkpoint = step, checkpoint
        where = f"; checkpoint written to {checkpoint} (rerun with resume to continue)" if checkpoint else ""
        super().__init__(f"training interrupted after step {step}{where}")


def run_training(
    config: TrainConfig,
    model: nn.Module,
    batches: BatchSource,
    loss_fn: LossFn,
    *,
    bridge: TransformerBridge | None = None,
    past_model: TransformerBridge | None = None,
    evaluate: EvaluateFn | None = None,
    settings: dict[str, Any] | None = None,
    checkpoint: str | os.PathLike | None = None,
    log: str | os.PathLike | None = None,
    find_unused_parameters: Callable[[], bool] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``batches`` with ``loss_fn`` as ``config`` says (see the module docstring).

    Args:
        config: steps, optimizer, schedule, regime, checkpointing, device and precision.
        model: the module whose trainable parameters are trained.
        batches: where each step's batch comes from (:class:`~forethought.myopic_training.batches.BatchSource`).
        loss_fn: ``loss_fn(model, batch)``, the scalar loss; it runs inside the regime's context.
        bridge: the ``TransformerBridge`` inside ``model`` that the regime acts on (default: ``model`` itself).
        past_model: the frozen model that supplies the past in the ``"local-myopic"`` regime.
        evaluate: ``evaluate(runtime, model, step)`` returns entries for the log record (e.g. ``eval_loss``) every
            ``eval_every`` steps and at the last step (``runtime``: a :class:`~.runtime.Runtime`).
        settings: what a resumed run must share with the checkpoint (default: ``config.curve_settings()``).
        checkpoint: the checkpoint file (``None``: none is written or read).
        log: a JSON-lines log file, one record per step (``None``: none).
        find_unused_parameters: under DDP, whether a training step leaves a parameter without gradient (the
            default, ``None``, assumes it may).
        on_step: called with each step's log record (``step``, ``loss``, ``lr``, ``grad_norm`` and what
            ``evaluate`` returned), outside the regime's context.

    Raises:
        CheckpointError: the checkpoint is corrupt, unsafe, or was written with other settings.
        NumericalError: the loss or gradient became NaN/inf (the last good checkpoint is kept).
        TrainingInterrupted: SIGINT/SIGTERM (a checkpoint was written first).
    """
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    settings = config.curve_settings() if settings is None else settings
    bridge = model if bridge is None else bridge
    runtime = make_runtime(config.device, config.mixed_precision)
    accelerator, device = runtime.accelerator, runtime.device
    if config.batch_size % accelerator.num_processes:
        raise InvalidArgumentError(f"batch_size={config.batch_size} is not divisible by the "
                                   f"{accelerator.num_processes} processes")
    set_seed(config.seed)
    regime = get_regime(config.regime)
    model.eval()  # dropout off in every regime (see module docstring)
    groups = parameter_groups(model, config.weight_decay, every_parameter=config.weight_decay_all)
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.adam_betas)
    scheduler = warmup_cosine_schedule(optimizer, config.steps, config.warmup_steps, config.min_lr_ratio)
    for module in (model, past_model):
        if module is not None:
            _move(module, device)
    if accelerator.num_processes > 1 and accelerator.ddp_handler is not None and find_unused_parameters is not None:
        accelerator.ddp_handler.find_unused_parameters = find_unused_parameters()  # DDP searches only where needed
    # the optimizer stays plain torch: accelerate's wrapper adds nothing without loss scaling or gradient accumulation,
    # and costs a package lookup per step, which a small model's step (the synthetic study) feels
    wrapped = accelerator.prepare_model(model, device_placement=False)
    # without accelerate's mixed-precision wrapper on forward: steps run under runtime.autocast() below, and the
    # model the run returns (and evaluates) computes in its own precision, as it will once saved and loaded
    model = accelerator.unwrap_model(wrapped, keep_fp32_wrapper=False)

    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    step, history, seconds = 0, [], 0.0
    if checkpoint is not None and config.resume and checkpoint.exists():
        state = load_checkpoint(checkpoint, settings, model, optimizer, scheduler, past_model)
        step, history, seconds = int(state["step"]), list(state["history"]), float(state.get("seconds", 0.0))
        batches.load_state_dict(state["data_order"])
        if accelerator.is_main_process:
            tqdm.write(f"resuming {config.regime} from step {step} of {config.steps}", file=sys.stderr)
    start_step = step
    log_file = JsonLinesLog(Path(log), history) if log is not None and accelerator.is_main_process else None
    last_checkpoint = step if checkpoint is not None and step else None

    bar = tqdm(total=config.steps, initial=step, desc=config.regime, dynamic_ncols=True,
               disable=not config.progress or not accelerator.is_local_main_process)
    started = time.perf_counter()
    with StopOnSignal() as stop, bar:
        while step < config.steps:
            batch = batches.batch(step, device, accelerator.process_index, accelerator.num_processes)
            with runtime.autocast(), regime.training_context(bridge, config, past_model):
                loss = loss_fn(wrapped, batch)
            mean_loss = accelerator.reduce(loss.detach().float(), reduction="mean")
            accelerator.backward(loss)
            # one wait for the device per step: the loss and the gradient norm come back together
            mean_loss, grad_norm = torch.stack([mean_loss, gradient_norm(accelerator, trainable, config.grad_clip)
                                                .float()]).tolist()
            for what, value in (("loss", mean_loss), ("gradient norm", grad_norm)):
                if not math.isfinite(value):
                    raise NumericalError(_numerical_message(what, value, step + 1, checkpoint, last_checkpoint))
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            record = {"step": step, "loss": mean_loss, "lr": lr, "grad_norm": grad_norm}
            if evaluate is not None and (step % config.eval_every == 0 or step == config.steps):
                record.update(evaluate(runtime, model, step))
            history.append(record)
            if log_file is not None:
                log_file.append(record)
            bar.update()
            bar.set_postfix({key: f"{record[key]:.4f}" for key in ("loss", "eval_loss") if key in record})
            if on_step is not None:
                on_step(record)
            if checkpoint is not None and (step % config.checkpoint_every == 0 or step == config.steps
                                           or stop.signum):
                _check_finite_weights(model, step, checkpoint, last_checkpoint)
                save_checkpoint(checkpoint, accelerator, step=step, settings=settings,
                                data_order=batches.state_dict(), history=history, model=model, optimizer=optimizer,
                                scheduler=scheduler, past_model=past_model,
                                seconds=seconds + time.perf_counter() - started)
                last_checkpoint = step
            if stop.signum:
                raise TrainingInterrupted(step, checkpoint)
    return TrainResult(model=model, config=config, history=history, past_model=past_model, start_step=start_step,
                       seconds=seconds + time.perf_counter() - started)


def gradient_norm(accelerator: Any, parameters: list[nn.Parameter], clip: float | None) -> Tensor:
    """The total L2 norm of the gradients (a 0-d tensor on their device), clipped to ``clip`` when given.

    Gradients are unscaled first under float16 loss scaling. Under DDP they are already averaged over processes
    (after ``backward``), so every process computes the same norm.
    """
    if accelerator.scaler is not None:
        accelerator.unscale_gradients()
    grads = [parameter.grad for parameter in parameters if parameter.grad is not None]
    if not grads:
        return torch.zeros((), device=parameters[0].device)
    if clip is not None:
        return torch.nn.utils.clip_grad_norm_(parameters, clip)
    return torch.nn.utils.get_total_norm(grads)


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, steps: int, warmup_steps: int,
                           min_lr_ratio: float) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warmup over ``warmup_steps``, then cosine decay to ``lr * min_lr_ratio`` at step ``steps``.

    During warmup step ``s`` uses ``lr * (s + 1) / warmup_steps``; built from ``torch.optim.lr_scheduler``.

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


def parameter_groups(model: nn.Module, weight_decay: float, every_parameter: bool = False) -> list[dict[str, Any]]:
    """AdamW parameter groups: weight decay on matrices, none on biases and norm gains.

    Matrices are the embeddings and projections (as in nanoGPT); with ``every_parameter``, one group decays
    everything.

    Example:
        >>> [len(group["params"]) for group in parameter_groups(torch.nn.Linear(2, 3), 0.1)]
        [1, 1]
    """
    seen: set[int] = set()
    decay, no_decay = [], []
    for parameter in model.parameters():
        if not parameter.requires_grad or id(parameter) in seen:
            continue
        seen.add(id(parameter))
        (decay if parameter.ndim >= 2 or every_parameter else no_decay).append(parameter)
    if every_parameter:
        return [{"params": decay, "weight_decay": weight_decay}]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _move(module: nn.Module, device: torch.device) -> None:
    """``module.to(device)``, quietly for a ``TransformerBridge`` (whose ``to`` reports by default)."""
    from transformer_lens.model_bridge import TransformerBridge

    if isinstance(module, TransformerBridge):
        module.to(device, print_details=False)
    else:
        module.to(device)


def _kept(checkpoint: Path | None, last_checkpoint: int | None) -> str:
    return (f"the last good checkpoint (step {last_checkpoint}) is kept in {str(checkpoint)!r}"
            if last_checkpoint else "no checkpoint was written")


def _check_finite_weights(model: nn.Module, step: int, checkpoint: Path | None, last_checkpoint: int | None) -> None:
    """Raise :class:`NumericalError` before a poisoned state is written: every weight must be finite."""
    bad = sum(int((~torch.isfinite(p)).sum()) for p in model.parameters())
    if bad:
        raise NumericalError(f"{bad} weights are NaN or infinite after step {step}; stopped before saving them and "
                             f"{_kept(checkpoint, last_checkpoint)}. Lower the learning rate or raise warmup_steps "
                             "and start a new run")


def _numerical_message(what: str, value: float, step: int, checkpoint: Path | None, last_checkpoint: int | None) -> str:
    return (f"the training {what} is {value} at step {step}; stopped before updating the weights and "
            f"{_kept(checkpoint, last_checkpoint)}. Lower the learning rate or raise warmup_steps and start a new run")
