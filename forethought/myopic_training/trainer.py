"""The trainer: a ``TransformerBridge`` trained in any regime (:mod:`forethought.regimes`) on token sequences.

:func:`train` runs the shared training loop (:func:`~forethought.myopic_training.loop.run_training`: batch,
forward in the regime's context, NaN guard, backward, clip, AdamW, warmup + cosine schedule, checkpoints) on token
sequences with the language-modelling loss, evaluates on the validation sequences every ``eval_every`` steps, and
writes the run directory. It runs on HF ``accelerate``, so the same script runs on a CPU, one GPU (bf16 autocast)
or several GPUs under ``accelerate launch`` (DDP; ``batch_size`` is the global batch, split across processes).

Choices a reader should know:

* **Dropout is off in every regime**: the model is kept in eval mode while it trains. Myopic gradients cannot
  be computed exactly through attention dropout (HF GPT-2 checkpoints default to dropout 0.1), and regimes
  should differ only in their gradients. The paper-style from-scratch models have no dropout anyway.
* **Data order** is a function of ``(seed, step)``: each epoch is a fresh permutation of the training sequences
  drawn from ``numpy.random.default_rng([seed, epoch])``, and the last incomplete batch is dropped. Resuming at
  step ``s`` therefore sees exactly the batches an uninterrupted run sees.
* **Checkpoints** (``out_dir/checkpoint.pt``, :mod:`~forethought.myopic_training.checkpoints`) hold model,
  optimizer, scheduler, RNG states (torch, CUDA, numpy, python), the data order, the step and the log so far.
  They are written to a temporary file and renamed, and read with ``torch.load(weights_only=True)``: a file
  carrying a pickled object is refused.
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

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Int
from torch import Tensor

from forethought.config import TrainConfig
from forethought.data import TokenSplits, check_tokens_fit
from forethought.errors import DataError, InvalidArgumentError
from forethought.models import copy_model, save_model
from forethought.myopic_training.batches import BatchOrder, TokenBatches
from forethought.myopic_training.checkpoints import read_checkpoint
from forethought.myopic_training.evaluation import position_loss_sums
from forethought.myopic_training.gradient_split import gradient_split
from forethought.myopic_training.loop import (
    TrainingInterrupted,
    TrainResult,
    run_training,
    warmup_cosine_schedule,
)
from forethought.myopic_training.regimes import RegimeModel
from forethought.myopic_training.runtime import Runtime, check_device
from forethought.regimes import get_regime
from forethought.reporting import prepare_out_dir

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["CHECKPOINT", "LOG", "MODEL_DIR", "PAST_MODEL_DIR", "BatchOrder", "TrainConfig", "TrainResult",
           "TrainingInterrupted", "check_device", "read_checkpoint", "train", "warmup_cosine_schedule"]

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
MODEL_DIR = "model"
PAST_MODEL_DIR = "past_model"


def train(
    config: TrainConfig,
    model: TransformerBridge,
    data: TokenSplits | tuple[Int[Tensor, "n_train pos"], Int[Tensor, "n_val pos"]],
    past_model: TransformerBridge | None = None,
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
    model.eval()  # dropout off in every regime (see module docstring)
    past_model = _frozen_past_model(config, model, past_model)
    eval_tokens = val_tokens[: config.eval_batches * config.batch_size] if config.eval_batches else val_tokens

    def evaluate(runtime: Runtime, model: TransformerBridge, step: int) -> dict[str, Any]:
        record = {"eval_loss": _evaluate(runtime, config, model, past_model, eval_tokens)}
        if config.gradient_split_every and (step % config.gradient_split_every == 0 or step == config.steps):
            record["gradient_split"] = _gradient_split(runtime, config, model, past_model, eval_tokens)
        return record

    result = run_training(
        config, model, TokenBatches(train_tokens, config.batch_size, config.seed), _language_model_loss,
        past_model=past_model, evaluate=evaluate, checkpoint=out / CHECKPOINT if out is not None else None,
        log=out / LOG if out is not None else None, on_step=on_step,
        find_unused_parameters=lambda: _leaves_parameters_unused(config, model, past_model),
    )
    result.out_dir = out
    from accelerate import PartialState

    process = PartialState()
    if out is not None and process.is_main_process and (len(result.history) > result.start_step
                                                        or not (out / MODEL_DIR).exists()):
        save_model(result.model, out / MODEL_DIR)
        if result.past_model is not None:
            save_model(result.past_model, out / PAST_MODEL_DIR)
    process.wait_for_everyone()
    return result


def _language_model_loss(model: TransformerBridge, tokens: Int[Tensor, "batch pos"]) -> Tensor:
    """The mean next-token cross-entropy of ``tokens``."""
    return model(tokens, return_type="loss")


# -- helpers --------------------------------------------------------------------------------------------------------


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


def _leaves_parameters_unused(config: TrainConfig, model: TransformerBridge,
                              past_model: TransformerBridge | None) -> bool:
    """Whether a training forward leaves a trainable parameter without gradient.

    It is probed with one two-token backward; if so, DDP must search the graph for unused parameters on every
    step. Fused-qkv bridges (GPT-2, NeoX) hold a fused weight that gets no gradient and the bigram regime never
    uses W_Q, W_K; split-projection models (native, Llama) in the other regimes use every parameter.
    """
    parameters = [p for p in model.parameters() if p.requires_grad]
    tokens = torch.zeros(1, 2, dtype=torch.long, device=parameters[0].device)
    with get_regime(config.regime).training_context(model, config, past_model):
        loss = model(tokens, return_type="loss")
    return any(grad is None for grad in torch.autograd.grad(loss, parameters, allow_unused=True))


def _frozen_past_model(config: TrainConfig, model: TransformerBridge,
                       past_model: TransformerBridge | None) -> Any:
    if not get_regime(config.regime).needs_past_model:
        return None
    past = copy_model(model) if past_model is None else past_model
    return past.eval().requires_grad_(False)


def _evaluate(runtime: Runtime, config: TrainConfig, model: TransformerBridge, past_model: TransformerBridge | None,
              tokens: Tensor) -> float:
    """Mean validation loss in the regime's forward; each process takes a shard and the sums are reduced."""
    accelerator = runtime.accelerator
    shard = tokens[accelerator.process_index :: accelerator.num_processes]
    sums = torch.zeros(tokens.shape[1] - 1, dtype=torch.float64, device=runtime.device)
    if len(shard):
        regime_model = RegimeModel(model, config.regime, past_model)
        with runtime.autocast():
            sums = position_loss_sums(regime_model, shard, batch_size=config.batch_size)
    count = torch.tensor([float(len(shard))], dtype=torch.float64, device=runtime.device)
    totals = torch.cat([sums.to(runtime.device), count])
    totals = accelerator.reduce(totals, reduction="sum").cpu()
    return (totals[:-1].sum() / (totals[-1] * (tokens.shape[1] - 1))).item()


def _gradient_split(runtime: Runtime, config: TrainConfig, model: TransformerBridge,
                    past_model: TransformerBridge | None, tokens: Tensor) -> list[dict[str, Any]]:
    """The gradient split of the validation loss in the regime's forward, as JSON-ready rows.

    Every process computes it on the same sequences.
    """
    def loss_fn(bridge: Any, batch: Tensor) -> Tensor:
        with runtime.autocast(), get_regime(config.regime).forward_context(bridge, past_model):
            return bridge(batch, return_type="loss")

    tokens = tokens[: config.gradient_split_batches * config.batch_size]
    return gradient_split(model, tokens, loss_fn=loss_fn, batch_size=config.batch_size).records()
