"""The ready-made experiments of ``forethought myopia-gap`` (:class:`Preset`, :data:`PRESETS`) and their :class:`Data`.

Plain Python, importable without torch, so that ``--help`` lists the presets and their settings at once.

Example:
    >>> PRESETS["smoke"].train["steps"]
    6
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from forethought.errors import InvalidArgumentError, check_number


@dataclass(frozen=True)
class Data:
    """Which text a run uses and how it is cut: the data options of ``train``, ``myopia-gap`` and ``gradient-split``.

    Attributes:
        dataset: text source for :func:`~forethought.data.load_texts`: ``builtin``, a file, a directory or a HF
            dataset name.
        text_field: the text column of ``.jsonl`` files and HF datasets.
        max_documents: keep at most this many documents (``None``: all).
        min_doc_tokens: keep only documents this long; sequences never cross documents (``None``: any length).
        seq_len: tokens per sequence.
        max_sequences: keep at most this many sequences (``None``: all).
        val_fraction: share of sequences held out for validation.

    Example:
        >>> Data(seq_len=1)
        Traceback (most recent call last):
        ...
        forethought.errors.InvalidArgumentError: seq_len=1 is not allowed; expected an integer >= 2
    """

    dataset: str = "builtin"
    text_field: str = "text"
    max_documents: int | None = None
    min_doc_tokens: int | None = None
    seq_len: int = 64
    max_sequences: int | None = None
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not str(self.dataset).strip():
            raise InvalidArgumentError(f"dataset={self.dataset!r}: the text source is empty; pass 'builtin', a file, "
                                       "a directory or a HF dataset name")
        if not str(self.text_field).strip():
            raise InvalidArgumentError(f"text_field={self.text_field!r} is empty; pass the name of the text column")
        check_number("seq_len", self.seq_len, low=2, integer=True)
        for name, low in (("max_documents", 1), ("min_doc_tokens", 1), ("max_sequences", 2)):  # a train and a
            if getattr(self, name) is not None:  # validation sequence at least
                check_number(name, getattr(self, name), low=low, integer=True)
        check_number("val_fraction", self.val_fraction, low=0, high=1, low_open=True, high_open=True)


@dataclass(frozen=True, kw_only=True)
class Preset(Data):
    """One ready-made experiment: its :class:`Data` and the rest.

    Attributes:
        description: one line for ``--help``.
        tokenizer: from scratch: an ``int`` trains a byte-level BPE of that size on the corpus; a string loads a
            hub tokenizer. Fine-tuning uses the model's own tokenizer.
        model: a hub name or directory to fine-tune; ``None`` trains ``architecture`` from scratch.
        architecture: from scratch: ``{"family": "native" | "gpt2" | "neox" | "llama", sizes...}``.
        regimes: regimes to train, in order (``local-myopic`` from scratch needs ``vanilla`` before it).
        train: :class:`~forethought.config.TrainConfig` settings shared by every regime.
    """

    description: str
    tokenizer: int | str = 2048
    model: str | None = None
    architecture: dict[str, Any] = field(default_factory=dict)
    regimes: tuple[str, ...] = ("vanilla", "myopic", "bigram")
    train: dict[str, Any] = field(default_factory=dict)

    def data(self) -> Data:
        """The preset's :class:`Data`."""
        return Data(**{name: getattr(self, name) for name in Data.__dataclass_fields__})


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
