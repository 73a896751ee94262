"""The ready-made experiments of ``forethought myopia-gap`` (:class:`Preset`, :data:`PRESETS`).

Plain Python, importable without torch, so that ``--help`` lists the presets and their settings at once.

Example:
    >>> PRESETS["smoke"].train["steps"]
    6
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The fields of a :class:`Preset` that say which text is used and how it is cut: the data options of the runners.
DATA_FIELDS = ("dataset", "text_field", "max_documents", "min_doc_tokens", "seq_len", "max_sequences", "val_fraction")


@dataclass(frozen=True)
class Preset:
    """One ready-made experiment.

    Attributes:
        description: one line for ``--help``.
        dataset: text source for :func:`~forethought.data.load_texts`.
        text_field: the text column of ``.jsonl`` files and HF datasets.
        max_documents: keep at most this many documents (``None``: all).
        seq_len: tokens per sequence.
        min_doc_tokens: keep only documents this long; sequences never cross documents (64-token passages;
            ``None``: any length).
        val_fraction: share of sequences held out for validation.
        max_sequences: keep at most this many sequences (``None``: all).
        tokenizer: from scratch: an ``int`` trains a byte-level BPE of that size on the corpus; a string loads a
            hub tokenizer. Fine-tuning uses the model's own tokenizer.
        model: a hub name or directory to fine-tune; ``None`` trains ``architecture`` from scratch.
        architecture: from scratch: ``{"family": "native" | "gpt2" | "neox" | "llama", sizes...}``.
        regimes: regimes to train, in order (``local-myopic`` from scratch needs ``vanilla`` before it).
        train: :class:`~forethought.myopic_training.TrainConfig` settings shared by every regime.
    """

    description: str
    dataset: str = "builtin"
    text_field: str = "text"
    max_documents: int | None = None
    seq_len: int = 64
    min_doc_tokens: int | None = None
    val_fraction: float = 0.1
    max_sequences: int | None = None
    tokenizer: int | str = 2048
    model: str | None = None
    architecture: dict[str, Any] = field(default_factory=dict)
    regimes: tuple[str, ...] = ("vanilla", "myopic", "bigram")
    train: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        description="seconds on a CPU: a 2-layer d=16 model, a few steps (for CI)",
        max_documents=12, seq_len=16, val_fraction=0.05, tokenizer=300,
        architecture={"family": "native", "n_layers": 2, "d_model": 16, "n_heads": 2},
        regimes=("vanilla", "myopic", "bigram", "local-myopic"),
        train={"steps": 6, "batch_size": 8, "lr": 3e-3, "warmup_steps": 1, "eval_every": 6, "checkpoint_every": 3},
    ),
    "cpu": Preset(
        description="a few minutes on two CPU cores: a 2-layer d=128 GPT-2-style model on the builtin corpus",
        seq_len=64, tokenizer=1024,
        architecture={"family": "native", "n_layers": 2, "d_model": 128, "n_heads": 4},
        regimes=("vanilla", "myopic", "bigram"),
        train={"steps": 400, "batch_size": 32, "lr": 2e-3, "warmup_steps": 40, "eval_every": 100,
               "checkpoint_every": 100},
    ),
    "gpt2-paper": Preset(
        description="GPU: GPT-2 124M from scratch on 64-token OpenWebText passages, batch 512, lr 6e-4",
        dataset="Skylion007/openwebtext", max_documents=200_000, seq_len=64, min_doc_tokens=64, val_fraction=0.01,
        tokenizer="gpt2",
        architecture={"family": "gpt2", "n_layers": 12, "d_model": 768, "n_heads": 12, "n_ctx": 1024},
        regimes=("vanilla", "myopic", "bigram"),
        train={"steps": 20_000, "batch_size": 512, "lr": 6e-4, "warmup_steps": 1000, "weight_decay": 0.1,
               "eval_every": 1000, "eval_batches": 20, "checkpoint_every": 500},
    ),
    "pythia-finetune": Preset(
        description="GPU: fine-tune Pythia-160M vanilla vs myopic (same lr) on 64-token Pile passages",
        dataset="NeelNanda/pile-10k", seq_len=64, min_doc_tokens=64, val_fraction=0.05,
        model="EleutherAI/pythia-160m",
        regimes=("vanilla", "myopic", "bigram", "local-myopic"),
        train={"steps": 2000, "batch_size": 64, "lr": 2e-5, "warmup_steps": 100, "weight_decay": 0.0,
               "eval_every": 250, "checkpoint_every": 250},
    ),
}


#: The largest learning rate of any preset: a run far above it that diverges is told so.
MAX_PRESET_LR: float = max(preset.train.get("lr", 1e-3) for preset in PRESETS.values())
