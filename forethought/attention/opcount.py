"""Count what a GPU pays for without a GPU: aten operations and ``[..., T, T]`` tensors created by a callable.

Kernel launches and memory traffic of attention show on a CPU only as numbers of operations and as square
``[..., T, T]`` score/pattern tensors. :class:`OpCounter` records both with a ``TorchDispatchMode``.

Example:
    >>> import torch
    >>> with OpCounter(seq_len=4) as counter:
    ...     _ = torch.ones(2, 4, 4).softmax(-1)
    >>> counter.ops, counter.square
    (2, 2)
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class OpCounter(TorchDispatchMode):
    """Counts aten operations (``ops``) and the ``[..., seq_len, seq_len]`` tensors they return (``square``).

    ``square_by_op`` counts the latter by operation name.
    """

    def __init__(self, seq_len: int):
        super().__init__()
        self.seq_len = seq_len
        self.ops = 0
        self.square = 0
        self.square_by_op: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor) and tensor.ndim >= 2 and tensor.shape[-2:] == (
                    self.seq_len, self.seq_len):
                self.square += 1
                self.square_by_op[str(func)] += 1
        return out


def training_step_counts(model_dir: str, tokens: torch.Tensor, modes: tuple[str, ...] = ("strict",),
                         tokenizer: Any = None) -> dict[str, tuple[int, int]]:
    """``{step: (aten ops, [..., T, T] tensors)}`` of one training step (forward, backward, AdamW) per kind.

    The steps: plain HF transformers with ``attn_implementation="sdpa"`` (``"hf-sdpa"``), and forethought's
    bridge on the same weights with its eager attention (``"eager"``), its fused kernel (``"vanilla"``) and a
    myopic step per mode (``"myopic-strict"``, ...). Each step is counted after one uncounted step, so optimizer
    state and first-call costs are outside the count; AdamW is the multi-tensor one a GPU runs.
    """
    from transformers import AutoModelForCausalLM

    from forethought.models import load_model
    from forethought.myopic_training import myopic

    hf = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    bridges = {name: load_model(model_dir, attention=attention, tokenizer=tokenizer, require_tokenizer=False).eval()
               for name, attention in (("eager", "eager"), ("vanilla", "sdpa"))}

    def hf_loss() -> torch.Tensor:
        return hf(tokens, labels=tokens).loss

    def bridge_loss(model: Any, mode: str | None) -> torch.Tensor:
        if mode is None:
            return model(tokens, return_type="loss")
        with myopic(model, mode=mode):
            return model(tokens, return_type="loss")

    steps = {"hf-sdpa": (hf, hf_loss),
             "eager": (bridges["eager"], lambda: bridge_loss(bridges["eager"], None)),
             "vanilla": (bridges["vanilla"], lambda: bridge_loss(bridges["vanilla"], None))}
    for mode in modes:
        steps[f"myopic-{mode}"] = (bridges["vanilla"], lambda mode=mode: bridge_loss(bridges["vanilla"], mode))
    counts = {}
    for name, (model, loss_fn) in steps.items():
        # multi-tensor AdamW, as torch picks on a GPU: a count of per-parameter kernels would charge a model for
        # how many parameter tensors it keeps (the bridge splits GPT-2's fused q/k/v) rather than for its work
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)

        def step(loss_fn: Any = loss_fn, optimizer: Any = optimizer) -> None:
            loss_fn().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        step()
        with OpCounter(tokens.shape[1]) as counter:
            step()
        counts[name] = (counter.ops, counter.square)
    return counts
