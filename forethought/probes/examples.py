"""Probe examples from one activation pass: hidden states at probe positions and every label a sweep scores.

:func:`collect_examples` keeps the features in memory; :func:`stream_examples` writes them to an on-disk
:class:`~forethought.probes.feature_store.FeatureStore` one batch at a time (same examples, same order), so
host memory holds one batch. Both run the model once over the tokens and read the residual stream at every
probed depth plus the last one (the model's own greedy predictions, and for the lens methods the future
final-layer residuals, come from it). :func:`split_data` cuts a sweep's data into training and test sequences.

Example:
    >>> import torch
    >>> from forethought.models import tiny_model
    >>> from forethought.probes.targets import LabelSpace
    >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=12, n_ctx=16)
    >>> tokens = torch.randint(0, 12, (3, 16), generator=torch.Generator().manual_seed(0))
    >>> split = collect_examples(model, tokens, [0, 1], [0, 2], LabelSpace.full(12), batch_size=2,
    ...                          feature_dtype=torch.float32, device=torch.device("cpu"), with_resid=True)
    >>> split.features.shape, split.labels.shape, split.future_resid.shape  # 3 sequences x 13 positions
    (torch.Size([2, 39, 16]), torch.Size([2, 39]), torch.Size([2, 39, 16]))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from forethought.activations import collect_activations
from forethought.data.tokens import TokenSplits, split_sequences
from forethought.errors import DataError, InvalidArgumentError
from forethought.hook_names import RESID
from forethought.probes.feature_store import FeatureStore, rows_that_fit
from forethought.probes.future_lens import decode
from forethought.probes.targets import LabelSpace, future_labels, model_predictions, n_positions

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@dataclass
class Examples:
    """The probe examples of one split: features at probe positions and every label the sweep scores."""

    features: Float[Tensor, "layer n d_model"] | FeatureStore
    current: Int[Tensor, " n"]
    labels: Int[Tensor, "offset n"]  # class labels of the true future tokens
    greedy: Int[Tensor, "offset n"]  # class labels of the model's own predictions
    future_resid: Float[Tensor, "offset n d_model"] | FeatureStore | None
    sequence: Int[Tensor, " n"]  # which sequence each example comes from

    @property
    def n(self) -> int:
        """The number of examples."""
        return self.features.shape[1]

    def cat(self, other: Examples) -> Examples:
        """These examples followed by ``other``'s (in memory; sequence ids kept distinct)."""
        resid = None if self.future_resid is None else torch.cat([self.future_resid, other.future_resid], 1)
        return Examples(torch.cat([self.features, other.features], 1), torch.cat([self.current, other.current]),
                        torch.cat([self.labels, other.labels], 1), torch.cat([self.greedy, other.greedy], 1), resid,
                        torch.cat([self.sequence, other.sequence + int(self.sequence.max()) + 1]))


@torch.no_grad()
def collect_examples(model: TransformerBridge, tokens: Int[Tensor, "seq pos"], layers: list[int], offsets: list[int],
                     space: LabelSpace, *, batch_size: int, feature_dtype: torch.dtype, device: torch.device,
                     with_resid: bool, progress: bool = False) -> Examples:
    """One activation pass over ``tokens`` → the probe examples of every offset (all share positions).

    Labels are classes of ``space``; the model's own prediction is the argmax of its next-token distribution
    over the whole vocabulary, encoded into ``space`` (``"other"`` when that token is outside the top k, which
    no prediction can then hit), so that it is scored exactly as the true token is.
    """
    final = model.cfg.n_layers
    collected = sorted({*layers, final})
    acts = collect_activations(model, tokens, hooks=[RESID], layers=collected, batch_size=batch_size,
                               device=device, dtype=feature_dtype, progress=progress,
                               split_between_processes=False)[RESID]
    n_seq, seq_len = tokens.shape
    n_pos = n_positions(seq_len, offsets)
    index = [collected.index(layer) for layer in layers]
    features = acts[index, :, :n_pos].reshape(len(layers), n_seq * n_pos, -1)
    last = acts[collected.index(final)]  # [seq, pos, d]: the input of the final norm
    predictions = greedy_classes(model, last, space, device)
    future_resid = None
    if with_resid:
        future_resid = torch.stack([last[:, offset : offset + n_pos] for offset in offsets]).reshape(
            len(offsets), n_seq * n_pos, -1)
    del acts
    return _labelled(features, tokens, offsets, space, predictions, future_resid)


@torch.no_grad()
def stream_examples(model: TransformerBridge, tokens: Int[Tensor, "seq pos"], layers: list[int], offsets: list[int],
                    space: LabelSpace, path: Path, *, batch_size: int, feature_dtype: torch.dtype,
                    device: torch.device, with_resid: bool = False, progress: bool = False) -> Examples:
    """:func:`collect_examples` one activation batch at a time, features going to a :class:`FeatureStore`.

    The store at ``path`` holds the features in the same example order, so memory holds one batch; with
    ``with_resid`` the future final-layer residuals go to a second store beside it (``<path stem>_resid.bin``).
    """
    final = model.cfg.n_layers
    collected = sorted({*layers, final})
    index = [collected.index(layer) for layer in layers]
    n_pos = n_positions(tokens.shape[1], offsets)
    store = FeatureStore.create(path, len(layers), model.cfg.d_model, feature_dtype)
    resid = FeatureStore.create(path.with_name(f"{path.stem}_resid.bin"), len(offsets), model.cfg.d_model,
                                feature_dtype) if with_resid else None
    predictions = []
    batches = range(0, len(tokens), batch_size)
    for start in tqdm(batches, desc=f"activations → {path.stem}", disable=not progress, unit="batch"):
        batch = tokens[start : start + batch_size]
        acts = collect_activations(model, batch, hooks=[RESID], layers=collected, batch_size=len(batch),
                                   device=device, dtype=feature_dtype, progress=False,
                                   split_between_processes=False)[RESID]
        store.append(acts[index, :, :n_pos].permute(1, 2, 0, 3).reshape(-1, len(layers), acts.shape[-1]))
        last = acts[collected.index(final)]  # [seq, pos, d]
        if resid is not None:  # [seq, probe_pos, offset, d], example-major like the features
            resid.append(torch.stack([last[:, offset : offset + n_pos] for offset in offsets], 2).flatten(0, 1))
        predictions.append(greedy_classes(model, last, space, device))
    return _labelled(store, tokens, offsets, space, torch.cat(predictions), resid)


def greedy_classes(model: TransformerBridge, last: Float[Tensor, "seq pos d_model"], space: LabelSpace,
                   device: torch.device) -> Int[Tensor, "seq pos"]:
    """The model's own next-token predictions (argmax over the vocabulary) from its final residual.

    They are classes of ``space``, read out a chunk of sequences at a time (~64 MB of logits; on a GPU as many as a
    quarter of its free memory holds).
    """
    row = last.shape[1] * model.cfg.d_vocab  # logits of one sequence
    step = rows_that_fit(device, bytes_per_row=3 * 4 * row, default=max(1, 2**24 // row))
    return torch.cat([space.encode(decode(model, last[start : start + step].to(device).float()).argmax(-1)).cpu()
                      for start in range(0, len(last), step)])


def _labelled(features: Tensor | FeatureStore, tokens: Tensor, offsets: list[int], space: LabelSpace,
              predictions: Tensor, future_resid: Tensor | FeatureStore | None) -> Examples:
    """A split's examples: its features and every label of the probe positions of ``tokens``."""
    n_seq, seq_len = tokens.shape
    n_pos = n_positions(seq_len, offsets)
    return Examples(features=features, current=tokens[:, :n_pos].reshape(-1),
                    labels=space.encode(future_labels(tokens, offsets)).reshape(len(offsets), -1),
                    greedy=model_predictions(predictions, offsets).reshape(len(offsets), -1),
                    future_resid=future_resid,
                    sequence=torch.arange(n_seq, device=tokens.device).repeat_interleave(n_pos))


def split_data(data: Any, test_fraction: float, seed: int) -> tuple[Int[Tensor, "seq pos"], Int[Tensor, "seq pos"]]:
    """Training and test sequences.

    A :class:`~forethought.data.TokenSplits` is taken as it is, a token tensor is split by sequence
    (``test_fraction`` of them for testing); anything else, empty splits and ragged lengths are refused.
    """
    if isinstance(data, TokenSplits):
        train, test = data.train, data.validation
    elif isinstance(data, Tensor):
        if data.ndim != 2 or data.dtype not in (torch.int64, torch.int32):
            raise InvalidArgumentError(f"data must be integer tokens [seq, pos] or TokenSplits; got {data.dtype} "
                                       f"of shape {tuple(data.shape)}")
        if data.numel() == 0:
            raise DataError("data holds no tokens; pass at least three sequences")
        train, test = split_sequences(data, val_fraction=test_fraction, seed=seed)
    else:
        raise InvalidArgumentError(f"data must be a token tensor or TokenSplits; got {type(data).__name__}")
    if train.numel() == 0 or test.numel() == 0:
        raise DataError("the training or test split holds no tokens")
    if train.shape[1] != test.shape[1]:
        raise InvalidArgumentError(f"train and test sequences differ in length ({train.shape[1]} vs {test.shape[1]})")
    return train, test
