"""Every ``forethought`` command as one dataclass: its fields are the options, its ``Attributes:`` their help.

Torch-free, so that ``forethought <command> --help`` and argument errors answer at once. :mod:`forethought.cli`
parses the command line into one of these (with simple-parsing) and hands it to ``run(command)`` of the runner named
by its ``runner``; :data:`COMMANDS` is the one list of commands. The options every command shares are defined once, in
:class:`Command` and :class:`Run`; the settings of training and of the synthetic study are the config dataclasses
themselves (:class:`~forethought.config.TrainConfig`, :class:`~forethought.config.SyntheticConfig`), nested, with the
presets as their defaults. A new command is a dataclass here and a runner module.

Example:
    >>> command = Train(out="run", training=TrainConfig(steps=3))
    >>> command.train_config().steps, command.train_config().device
    (3, 'auto')
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

from forethought.config import SYNTHETIC_PRESETS, SyntheticConfig, TrainConfig, flag, not_an_option
from forethought.errors import InvalidArgumentError, check_number, check_positive, check_seed
from forethought.experiments.presets import PRESETS, Data
from forethought.options import MODES


@dataclass(kw_only=True)
class Command:
    """Options of every command.

    Attributes:
        out: output directory.
        device: where to run: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    """

    #: The module whose ``run(command)`` runs it.
    runner: ClassVar[str]
    #: Settings that refusals name differently from the fields -> the options a user types for them.
    aliases: ClassVar[dict[str, str]] = {}

    out: str
    device: str = "auto"

    @classmethod
    def defaults(cls, argv: Sequence[str]) -> dict[str, Any] | None:
        """The defaults the options override (a preset's, for ``argv``); ``None``: the fields' own."""
        return None


@dataclass(kw_only=True)
class Run(Command):
    """Options of every command that computes.

    Attributes:
        seed: seed of everything random in the run (data split, initialisation, probes, bootstrap).
        progress: show progress bars.
    """

    seed: int = 0
    progress: bool = flag(True)

    def __post_init__(self) -> None:
        check_seed("seed", self.seed)


def _one_of(command: Any, *names: str) -> None:
    """Refuse unless exactly one of the options ``names`` is given."""
    given = [name for name in names if getattr(command, name) is not None]
    if len(given) != 1:
        options = ", ".join("--" + name.replace("_", "-") for name in names)
        raise InvalidArgumentError(f"pass exactly one of {options}" + (f" (given: {len(given)})" if given else ""))


def _peek(argv: Sequence[str], option: str, default: str | None = None) -> str | None:
    """The value of ``option`` in ``argv`` (its last), before the command line is parsed."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument(option, default=default)
    return next(iter(vars(parser.parse_known_args(list(argv))[0]).values()))


def _list_help(presets: dict[str, Any]) -> str:
    return "; ".join(f"{name}: {preset.description}" for name, preset in presets.items())


@dataclass(kw_only=True)
class Threads:
    """A command that sets torch's CPU threads.

    Attributes:
        threads: CPU threads for torch (the small models of the presets mostly wait for each other with more, and
            slow down badly on a busy machine).
    """

    threads: int = 1


@dataclass(kw_only=True)
class Train(Run):
    """Train a language model (from scratch or fine-tuning) as vanilla, myopic, local-myopic or transformer bigram.

    Attributes:
        model: hub name or local directory to fine-tune (``None``: train from scratch).
        past_model: local-myopic: the frozen vanilla model that supplies the past (when fine-tuning: a frozen copy
            of ``--model``).
        n_layers: from scratch: transformer blocks.
        d_model: from scratch: residual width.
        n_heads: from scratch: attention heads.
        vocab_size: from scratch: BPE vocabulary to train (a byte-level BPE needs 258 at least).
        data: the text.
        training: the training run.
    """

    runner: ClassVar[str] = "forethought.experiments.train"
    aliases: ClassVar[dict[str, str]] = {"n_ctx": "--seq-len"}

    model: str | None = None
    past_model: str | None = None
    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4
    vocab_size: int = 2048
    data: Data = field(default_factory=Data)
    training: TrainConfig = field(default_factory=lambda: TrainConfig(steps=500))

    @classmethod
    def defaults(cls, argv: Sequence[str]) -> dict[str, Any] | None:
        """A shorter training than :class:`~forethought.config.TrainConfig`'s; the warm-up follows ``--steps``."""
        steps = _peek(argv, "--steps")
        return {"training": TrainConfig(steps=int(steps) if steps is not None and steps.isdigit() and int(steps) > 1
                                        else 500)}

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("n_layers", "d_model", "n_heads"):
            check_positive(name, getattr(self, name), integer=True)
        check_number("vocab_size", self.vocab_size, low=258, integer=True)
        self.train_config()  # the shared options are valid training settings (--device cuda:1 is not)

    def train_config(self) -> TrainConfig:
        """The training settings with the shared options (``--seed``, ``--device``, ``--progress``) in them."""
        return replace(self.training, seed=self.seed, device=self.device, progress=self.progress)


@dataclass
class GapTraining(TrainConfig):
    """:class:`~forethought.config.TrainConfig` without ``regime``: myopia-gap trains every regime of ``--regimes``."""

    regime: str = not_an_option("vanilla")


@dataclass(kw_only=True)
class MyopiaGap(Run):
    """Train vanilla, myopic and transformer-bigram models on the same text and measure the myopia gap.

    The myopia gap is the validation loss by position of each regime against vanilla's. With ``--models`` the command
    is a sweep over model sizes.

    Attributes:
        preset: the ready-made experiment whose settings the other options override.
        regimes: comma-separated regimes to train (``None``: the preset's).
        models: a sweep over model sizes: train each model (``NAME=DIR_OR_HUB_NAME``, or a directory or hub name,
            named after its last part; they must share a tokenizer) in every regime with the preset's data and
            settings into ``OUT/models/NAME``, then tabulate the myopia gap by parameter count (``None``: no sweep).
        data: the text.
        training: the training of every regime.
    """

    preset: str = field(default="cpu", metadata={"custom_args": {"choices": tuple(PRESETS), "help": _list_help(
        PRESETS) + " (the other options override its settings; --preset NAME --help shows them)"}})
    regimes: str | None = None
    models: list[str] | None = field(default=None, metadata={"custom_args": {
        "nargs": "+", "action": "extend", "metavar": "NAME=DIR_OR_HUB_NAME"}})
    data: Data = field(default_factory=lambda: PRESETS["cpu"].data())
    training: GapTraining = field(default_factory=lambda: GapTraining(**PRESETS["cpu"].train))

    @property
    def runner(self) -> str:  # type: ignore[override]
        """The sweep over model sizes with ``--models``, else one run."""
        return f"forethought.experiments.{'size_sweep' if self.models else 'myopia_gap'}"

    @classmethod
    def defaults(cls, argv: Sequence[str]) -> dict[str, Any] | None:
        """The chosen preset's data and training settings."""
        preset = PRESETS.get(_peek(argv, "--preset", "cpu"), PRESETS["cpu"])  # type: ignore[arg-type]
        return {"data": preset.data(), "training": GapTraining(**preset.train)}

    def train_config(self) -> TrainConfig:
        """The training settings of every regime, with the shared options in them."""
        values = {f.name: getattr(self.training, f.name) for f in fields(TrainConfig)}
        return TrainConfig(**{**values, "seed": self.seed, "device": self.device, "progress": self.progress})


@dataclass(kw_only=True)
class Synthetic(Run, Threads):
    """The synthetic pre-caching experiment: train a vanilla and a myopic transformer on D_p, probe them for sin(F x).

    Attributes:
        preset: ``smoke``: seconds (CI); ``cpu``: the default main job, minutes on a CPU; ``paper``: the paper's
            setting, for a GPU. The other options override its settings (``--preset NAME --help`` shows them).
        p: probability of a past-sum target; several values run a sweep (the paper's: 0.001 0.01 0.1 0.3 1;
            ``None``: the preset's, 1).
        config: the task, the model and its training; a ``--steps`` below the preset's shortens its warm-up too.
        resume: continue an interrupted (or reuse a finished) run in ``--out`` from its checkpoints.
        checkpoint_every: write training checkpoints every this many steps.
    """

    runner: ClassVar[str] = "forethought.experiments.synthetic"

    out: str = "results/synthetic"
    preset: str = field(default="cpu", metadata={"custom_args": {"choices": tuple(SYNTHETIC_PRESETS)}})
    p: list[float] | None = field(default=None, metadata={"custom_args": {"nargs": "+", "metavar": "P"}})
    config: SyntheticConfig = field(default_factory=SyntheticConfig)
    resume: bool = flag(False)
    checkpoint_every: int = 1000

    @classmethod
    def defaults(cls, argv: Sequence[str]) -> dict[str, Any] | None:
        """The chosen preset, with its warm-up shortened to a tenth of ``--steps`` when that is shorter."""
        name = _peek(argv, "--preset", "cpu")
        config = SYNTHETIC_PRESETS.get(name, SYNTHETIC_PRESETS["cpu"])  # type: ignore[arg-type]
        steps = _peek(argv, "--steps")
        if steps is not None and steps.isdigit() and int(steps) > 0:
            config = config.with_steps(int(steps))
        return {"config": config}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("threads", self.threads, integer=True)
        check_positive("checkpoint_every", self.checkpoint_every, integer=True)
        self.configs()  # every p is a valid setting

    def configs(self) -> list[SyntheticConfig]:
        """One config per ``--p`` (the preset's ``p`` without it), with the command's seed."""
        return [replace(self.config, p=p, seed=self.seed) for p in (self.p or [self.config.p])]


@dataclass(frozen=True)
class ScoringData:
    """The text to score ``--model`` models on; a ``--run`` is scored on its own data and split, and refuses these.

    Attributes:
        dataset: text source (default with ``--model``: builtin).
        text_field: the text column of ``.jsonl`` files and HF datasets (default with ``--model``: text).
        seq_len: tokens per sequence (default with ``--model``: 64).
        max_sequences: keep at most this many sequences (default with ``--model``: 2000).
        val_fraction: share of sequences held out for scoring (default with ``--model``: 0.2).
    """

    dataset: str | None = None
    text_field: str | None = None
    seq_len: int | None = None
    max_sequences: int | None = None
    val_fraction: float | None = None

    #: The values of the options not given, with ``--model``.
    DEFAULTS: ClassVar[dict[str, Any]] = {"dataset": "builtin", "text_field": "text", "seq_len": 64,
                                          "max_sequences": 2000, "val_fraction": 0.2}

    def __post_init__(self) -> None:
        self.data()

    def given(self) -> dict[str, Any]:
        """The options given on the command line."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def data(self) -> Data:
        """The :class:`~forethought.experiments.presets.Data` these options ask for (defaults filled in)."""
        return Data(**{**self.DEFAULTS, **self.given()})

    def check_beside_run(self, run: str | None, verb: str) -> None:
        """Refuse data options beside ``--run`` (a run is ``verb``-d on its own data and split)."""
        given = ["--" + name.replace("_", "-") for name in self.given()]
        if run and given:
            raise InvalidArgumentError(f"{', '.join(given)} cannot be combined with --run: a run is {verb}d on its own "
                                       f"data and split; pass --model NAME=DIR to {verb} other text")


class _Switch(argparse.BooleanOptionalAction):
    """``--name`` / ``--no-name`` for a ``bool | None`` field (``None``: neither given)."""

    def __init__(self, option_strings: Sequence[str], dest: str, default: Any = None, help: str | None = None,
                 **unused: Any) -> None:
        super().__init__(option_strings, dest, default=default, help=help)


_MODELS = {"custom_args": {"action": "append", "nargs": None, "metavar": "NAME=DIR_OR_HUB_NAME"}}
_SCORING_ALIASES = {"layer": "--layers", "offset": "--offsets", "test_fraction": "--val-fraction"}


@dataclass(kw_only=True)
class ProbeSweep(Run):
    """Future-token probes at every layer x offset of one or more models, beside unigram, bigram and control baselines.

    Attributes:
        model: a model to probe, ``NAME=DIR_OR_HUB_NAME`` (repeat for several; e.g. ``vanilla=runs/vanilla/model``).
        run: a ``forethought train`` or ``myopia-gap`` output directory: probe its models (not the bigram ones) on
            the run's own split.
        data: the text (with ``--model`` only).
        layers: ``all`` or comma-separated residual depths (0 = embeddings, n_layers = the last block's output).
        offsets: comma-separated offsets N: the probe at t predicts token t + 1 + N.
        method: comma-separated probe methods (``vocab``, ``logistic``, ``future_lens``, ``ridge``, ``learned_prompt``,
            or another registered one).
        top_k: predict the k most frequent future tokens plus "other" (``None``: the whole vocabulary).
        control: train every probe on a control task too, and report selectivity.
        max_epochs: training epochs at most for vocab, future_lens and learned_prompt probes (``None``: the probe
            configs').
        save_probes: also save the fitted probes under ``OUT/probes``.
        seeds: comma-separated probe seeds: repeat the sweep with each (same data) and report the spread over seeds
            (``None``: ``--seed`` only).
        batch_size: sequences per forward pass.
        stream: write activations to temporary files and train vocab probes from them, so memory does not grow with
            the data (``None``: only when they would exceed ``--stream-above-gib``).
        stream_above_gib: streaming threshold: activations larger than this (GiB) stream.
        stream_dir: where streamed activations go (``None``: the system temp directory).
    """

    runner: ClassVar[str] = "forethought.experiments.probe_sweep"
    aliases: ClassVar[dict[str, str]] = _SCORING_ALIASES

    model: list[str] | None = field(default=None, metadata=_MODELS)
    run: str | None = None
    data: ScoringData = field(default_factory=ScoringData)
    layers: str = "all"
    offsets: str = "0,1,2,3"
    method: str = "vocab"
    top_k: int | None = None
    control: bool = flag(True)
    max_epochs: int | None = None
    save_probes: bool = flag(False)
    seeds: str | None = None
    batch_size: int = 32
    stream: bool | None = field(default=None, metadata={"custom_args": {"action": _Switch}})
    stream_above_gib: float = 4.0
    stream_dir: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _one_of(self, "model", "run")
        self.data.check_beside_run(self.run, "probe")


@dataclass(kw_only=True)
class Compare(Run):
    """Compare a vanilla and a myopic model (and a transformer bigram): losses by position, the myopia gap, probes.

    Attributes:
        run: a ``forethought myopia-gap`` output directory: compare its vanilla, myopic and bigram models on the
            run's own validation split.
        model: a model to compare, ``NAME=DIR_OR_HUB_NAME`` (repeat; one must be named like ``--baseline``).
        baseline: the model the others are compared with.
        data: the text (with ``--model`` only).
        layers: ``all`` or comma-separated residual depths.
        offsets: comma-separated future offsets (0 = the next token).
        method: the probe method.
        top_k: probes predict the k most frequent future tokens plus "other" (scored over all targets: "other" is
            never a hit; ``None``: the whole vocabulary).
        max_epochs: training epochs at most for vocab, future_lens and learned_prompt probes (``None``: the probe
            configs').
        control: also train every probe on a control task and report its selectivity (about twice the probe
            training; the regime comparison does not need it, probe-sweep has it on).
    """

    runner: ClassVar[str] = "forethought.experiments.compare"
    aliases: ClassVar[dict[str, str]] = _SCORING_ALIASES

    run: str | None = None
    model: list[str] | None = field(default=None, metadata=_MODELS)
    baseline: str = "vanilla"
    data: ScoringData = field(default_factory=ScoringData)
    layers: str = "all"
    offsets: str = "0,1,2,3"
    method: str = "vocab"
    top_k: int | None = None
    max_epochs: int | None = None
    control: bool = flag(False)

    def __post_init__(self) -> None:
        super().__post_init__()
        _one_of(self, "model", "run")
        self.data.check_beside_run(self.run, "score")


@dataclass(kw_only=True)
class LensView(Command):
    """Show what future-token probes predict at every depth and position of one prompt: HTML grid, PNG and CSV.

    Attributes:
        model: the model the probes were fitted on (a directory or hub name).
        probes: a probe directory, or a probe-sweep ``--save-probes`` directory holding one set of (non-control)
            probes.
        prompt: the text to view.
        offset: show the predictions of token t + 1 + N.
        layers: comma-separated residual depths to show (``None``: all of the probes').
    """

    runner: ClassVar[str] = "forethought.experiments.lens_view"
    aliases: ClassVar[dict[str, str]] = {"layer": "--layers"}

    model: str
    probes: str
    prompt: str
    offset: int = 0
    layers: str | None = None

    def __post_init__(self) -> None:
        check_number("offset", self.offset, low=0, integer=True)
        if not self.prompt:
            raise InvalidArgumentError("--prompt is empty; pass the text to view")


@dataclass(kw_only=True)
class GradientSplitCommand(Run, Threads):
    """Split a model's gradient into its myopic and pre-caching parts: the pre-caching share per parameter group.

    For a language model, a synthetic-task model, or over synthetic training.

    Attributes:
        model: a language model: hub name or local directory (e.g. a run's ``model/``).
        synthetic_checkpoint: a forethought synthetic checkpoint (``OUT/checkpoints/vanilla.pt`` or ``myopic.pt``).
        synthetic_preset: train a vanilla model on D_p with this preset and record the split over training.
        modes: myopic modes to split by.
        batches: batches the expected gradient is accumulated over.
        batch_size: sequences per batch.
        steps: over training (``--synthetic-preset``): training steps (``None``: the preset's).
        every: over training: steps between splits.
        data: the text (with ``--model``).
    """

    runner: ClassVar[str] = "forethought.experiments.gradient_split"

    model: str | None = None
    synthetic_checkpoint: str | None = None
    synthetic_preset: str | None = field(default=None, metadata={"custom_args": {
        "choices": tuple(SYNTHETIC_PRESETS)}})
    modes: list[str] = field(default_factory=lambda: list(MODES), metadata={"custom_args": {"choices": MODES}})
    batches: int = 8
    batch_size: int = 32
    steps: int | None = None
    every: int = 100
    data: Data = field(default_factory=Data)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("batches", "batch_size", "every", "threads"):
            check_positive(name, getattr(self, name), integer=True)
        if self.steps is not None:
            check_positive("steps", self.steps, integer=True)
        _one_of(self, "model", "synthetic_checkpoint", "synthetic_preset")


#: Every command: its name on the command line -> its dataclass (its docstring's first line is its summary).
COMMANDS: dict[str, type[Command]] = {
    "synthetic": Synthetic,
    "train": Train,
    "myopia-gap": MyopiaGap,
    "probe-sweep": ProbeSweep,
    "compare": Compare,
    "lens-view": LensView,
    "gradient-split": GradientSplitCommand,
}


def summary(command: type[Command]) -> str:
    """The first line of a command's docstring: its line in ``forethought --help``."""
    return (command.__doc__ or "").strip().splitlines()[0].rstrip(".")


def option_fields(command: type[Any]) -> list[str]:
    """Every option field of a command dataclass, nested dataclasses' fields included.

    Example:
        >>> "warmup_steps" in option_fields(Train) and "out_dir" not in option_fields(Train)
        True
    """
    names = []
    for f in fields(command):
        kind = f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        if dataclasses.is_dataclass(kind):
            names += option_fields(type(kind))
        elif f.metadata.get("cmd", True):
            names.append(f.name)
    return names
