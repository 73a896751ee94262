"""The options of every ``forethought`` subcommand, in one torch-free module.

Building a parser imports no runner (and so no torch): ``forethought <command> --help`` and argument errors answer
at once, and the runner is imported only to run. Settings that a config dataclass defines are derived from it
(:mod:`~forethought.experiments.config_cli`), so each has one name, one type, one help text and one default across
commands; the rest are the runners' own (inputs, outputs, how to run).

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> COMMANDS["train"][1](parser)
    >>> parser.parse_args(["--out", "run", "--mode", "cutgrad"]).mode
    'cutgrad'
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from forethought.config import MYOPIC_MODES, SYNTHETIC_PRESETS, SyntheticConfig, TrainConfig
from forethought.experiments.common import DATA_TYPES, add_scoring_data_arguments
from forethought.experiments.config_cli import add_dataclass_arguments, number_type
from forethought.experiments.presets import DATA_FIELDS, PRESETS, Preset
from forethought.options import DEVICES, METHODS, MIXED_PRECISION, MODES
from forethought.regimes import REGIMES

#: Allowed values of TrainConfig's string fields.
TRAIN_CHOICES = {"regime": REGIMES, "device": DEVICES, "mixed_precision": MIXED_PRECISION}
#: The options of SyntheticConfig fields not named ``--field-name``.
SYNTHETIC_FLAGS = {"frequency": ["--frequency", "-F"], "myopic_mode": ["--mode"]}
#: The synthetic p values of the paper (as in :data:`forethought.synthetic.PAPER_PS`).
_PAPER_PS = "0.001 0.01 0.1 0.3 1"


def _count(name: str, low: int = 1) -> Callable[[str], int]:
    """The type of an integer option that counts something: ``low`` (1) or more."""
    return number_type(name, low, integer=True)


#: The type of every seed option: an integer in [0, 2**32), as TrainConfig and SyntheticConfig check it.
SEED = number_type("seed", seed=True)


def _data(parser: argparse.ArgumentParser, **keywords: object) -> None:
    add_dataclass_arguments(parser.add_argument_group("data"), Preset, only=DATA_FIELDS, types=DATA_TYPES,  # type: ignore[arg-type]
                            **keywords)


def _progress(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--progress``/``--no-progress``: the option (and ``dest``) of TrainConfig's ``progress`` in ``train``."""
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show progress bars")


def train(parser: argparse.ArgumentParser) -> None:
    """``forethought train``."""
    parser.add_argument("--out", required=True, help="output directory (checkpoint, log, model, report)")
    _data(parser)
    model = parser.add_argument_group("model")
    model.add_argument("--model", help="hub name or local directory to fine-tune (default: train from scratch)")
    model.add_argument("--n-layers", type=_count("n_layers"), default=2, help="from scratch: transformer blocks")
    model.add_argument("--d-model", type=_count("d_model"), default=128, help="from scratch: residual width")
    model.add_argument("--n-heads", type=_count("n_heads"), default=4, help="from scratch: attention heads")
    model.add_argument("--vocab-size", type=_count("vocab_size", 258), default=2048,
                       help="from scratch: BPE vocabulary to train (a byte-level BPE needs 258 at least)")
    model.add_argument("--past-model", help="local-myopic: the frozen vanilla model that supplies the past "
                                            "(default when fine-tuning: a frozen copy of --model)")
    add_dataclass_arguments(parser.add_argument_group("training"), TrainConfig, exclude=("out_dir",),
                            defaults={"steps": 500}, choices=TRAIN_CHOICES, types={"seed": SEED})


def myopia_gap(parser: argparse.ArgumentParser) -> None:
    """``forethought myopia-gap`` (and, with ``--models``, the sweep over model sizes)."""
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                        help="; ".join(f"{name}: {preset.description}" for name, preset in PRESETS.items()))
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--regimes", help=f"comma-separated subset of {', '.join(REGIMES)} (default: the preset's)")
    parser.add_argument("--models", nargs="+", action="extend", metavar="NAME=DIR_OR_HUB_NAME",
                        help="a sweep over model sizes: train each model (NAME=DIR_OR_HUB_NAME, or a directory or hub "
                             "name, named after its last part; they must share a tokenizer) in every regime with the "
                             "preset's data and settings into --out/models/NAME, then tabulate the myopia gap by "
                             "parameter count (size_sweep.csv/.json, myopia_gap_by_size.png; default: no sweep)")
    _data(parser, presets=PRESETS)
    add_dataclass_arguments(parser.add_argument_group("training"), TrainConfig, exclude=("regime", "out_dir"),
                            presets={name: preset.train for name, preset in PRESETS.items()}, choices=TRAIN_CHOICES,
                            types={"seed": SEED})


def synthetic(parser: argparse.ArgumentParser) -> None:
    """``forethought synthetic``."""
    parser.add_argument("--preset", choices=sorted(SYNTHETIC_PRESETS), default="cpu",
                        help="smoke: seconds (CI); cpu: the default main job, minutes on a CPU; paper: the paper's "
                             "setting, for a GPU")
    parser.add_argument("--out", default="results/synthetic", help="output directory")
    parser.add_argument("--p", type=number_type("p", 0, 1, low_open=True), nargs="+", metavar="P",
                        help="probability of a past-sum target; several values run a sweep (the paper's: "
                             f"{_PAPER_PS}; default: the preset's, 1)")
    add_dataclass_arguments(parser.add_argument_group("overrides of the preset"), SyntheticConfig, exclude=("p",),
                            presets=SYNTHETIC_PRESETS, choices={"myopic_mode": MYOPIC_MODES},
                            flags=SYNTHETIC_FLAGS, types={"seed": SEED})
    run = parser.add_argument_group("run")
    run.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    run.add_argument("--threads", type=_count("threads"), default=1,
                     help="CPU threads for torch (the presets' models are so small that more threads mostly wait for "
                          "each other, and slow down badly on a busy machine)")
    run.add_argument("--resume", action=argparse.BooleanOptionalAction, default=False,
                     help="continue an interrupted (or reuse a finished) run in --out from its checkpoints")
    run.add_argument("--checkpoint-every", type=_count("checkpoint-every"), default=1000, metavar="N",
                     help="write training checkpoints every N steps")
    _progress(run)


def probe_sweep(parser: argparse.ArgumentParser) -> None:
    """``forethought probe-sweep``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", action="append", metavar="NAME=DIR_OR_HUB_NAME",
                        help="a model to probe, named (repeat for several; e.g. vanilla=runs/vanilla/model)")
    source.add_argument("--run", help="a `forethought train` or `myopia-gap` output directory: probe its models "
                        "(not the bigram ones) on the run's own split")
    parser.add_argument("--out", required=True, help="output directory")
    add_scoring_data_arguments(parser)
    probes = parser.add_argument_group("probes")
    probes.add_argument("--layers", default="all", help="'all' or comma-separated residual depths "
                        "(0 = embeddings, n_layers = last block's output)")
    probes.add_argument("--offsets", default="0,1,2,3", help="comma-separated offsets N: the probe at t predicts "
                        "token t + 1 + N")
    probes.add_argument("--method", default="vocab", help=f"comma-separated methods: {', '.join(METHODS)}")
    probes.add_argument("--top-k", type=_count("top_k"),
                        help="predict the k most frequent future tokens plus 'other' "
                        "(default: the whole vocabulary)")
    probes.add_argument("--no-control", action="store_true", help="skip the control task (and selectivity)")
    probes.add_argument("--max-epochs", type=_count("max_epochs"),
                        help="training epochs at most for vocab and future_lens probes "
                        "(default: the probe configs')")
    probes.add_argument("--save-probes", action="store_true", help="also save the fitted probes under OUT/probes")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=SEED, default=0, help="splits, control task and probe training")
    run.add_argument("--seeds", help="comma-separated probe seeds: repeat the sweep with each (same data) and "
                     "report the spread over seeds (default: --seed only)")
    run.add_argument("--device", help="where to run models and probes (default: where each model loads)")
    run.add_argument("--batch-size", type=_count("batch_size"), default=32, help="sequences per forward pass")
    run.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                     help="write activations to temporary files and train vocab probes from them, so memory "
                     "does not grow with the data (default: only when they would exceed --stream-above-gib)")
    run.add_argument("--stream-above-gib", type=number_type("stream_above_gib", 0), default=4.0,
                     help="streaming threshold: activations larger than this (GiB) stream")
    run.add_argument("--stream-dir", help="where streamed activations go (default: the system temp directory)")
    _progress(run)


def compare(parser: argparse.ArgumentParser) -> None:
    """``forethought compare``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a `forethought myopia-gap` output directory: compares its vanilla, myopic "
                        "and bigram models on the run's own validation split")
    source.add_argument("--model", action="append", metavar="NAME=DIR_OR_HUB_NAME",
                        help="a model to compare, named (repeat; one must be named like --baseline)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--baseline", default="vanilla", help="the model the others are compared with")
    add_scoring_data_arguments(parser)
    parser.add_argument("--layers", default="all", help="'all' or comma-separated residual depths")
    parser.add_argument("--offsets", default="0,1,2,3", help="comma-separated future offsets (0 = next token)")
    parser.add_argument("--method", default="vocab", choices=METHODS, help="probe method")
    parser.add_argument("--top-k", type=_count("top_k"),
                        help="probes predict the k most frequent future tokens plus 'other' "
                        "(scored over all targets: 'other' is never a hit; default: the whole vocabulary)")
    parser.add_argument("--max-epochs", type=_count("max_epochs"),
                        help="training epochs at most for vocab and future_lens probes "
                        "(default: the probe configs')")
    parser.add_argument("--control", action="store_true",
                        help="also train every probe on a control task and report its selectivity (about twice the "
                        "probe training; the regime comparison itself does not need it, probe-sweep has it on)")
    parser.add_argument("--seed", type=SEED, default=0, help="probe training and bootstrap (and the split, with "
                        "--model)")
    parser.add_argument("--device", help="where to run models and probes (default: where each model loads)")
    _progress(parser)


def lens_view(parser: argparse.ArgumentParser) -> None:
    """``forethought lens-view``."""
    parser.add_argument("--model", required=True, metavar="DIR_OR_NAME", help="the model the probes were fitted on")
    parser.add_argument("--probes", required=True, metavar="DIR", help="a probe directory, or a probe-sweep "
                        "--save-probes directory holding one set of (non-control) probes")
    parser.add_argument("--prompt", required=True, metavar="TEXT", help="the text to view")
    parser.add_argument("--offset", type=_count("offset", 0), default=0, metavar="N",
                        help="show the predictions of token "
                        "t + 1 + N")
    parser.add_argument("--layers", help="comma-separated residual depths to show (default: all of the probes')")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--device", help="where to run the model (default: where it loads)")


def gradient_split(parser: argparse.ArgumentParser) -> None:
    """``forethought gradient-split``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a language model: hub name or local directory (e.g. a run's model/)")
    source.add_argument("--synthetic-checkpoint", metavar="PATH",
                        help="a forethought synthetic checkpoint (OUT/checkpoints/vanilla.pt or myopic.pt)")
    source.add_argument("--synthetic-preset", choices=sorted(SYNTHETIC_PRESETS),
                        help="train a vanilla model on D_p with this preset and record the split over training")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="myopic modes to split by")
    parser.add_argument("--batches", type=_count("batches"), default=8,
                        help="batches the expected gradient is accumulated over")
    parser.add_argument("--batch-size", type=_count("batch_size"), default=32, help="sequences per batch")
    over = parser.add_argument_group("over training (--synthetic-preset)")
    over.add_argument("--steps", type=_count("steps"), help="training steps (default: the preset's)")
    over.add_argument("--every", type=_count("every"), default=100, help="steps between splits")
    parser.add_argument("--seed", type=SEED, default=0, help="data split (--model) or data and model seed (synthetic)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=_count("threads"), default=1, help="CPU threads for torch")
    _progress(parser)
    _data(parser)


#: Subcommand -> (its ``--help`` description, the function that adds its options).
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "synthetic": ("The synthetic pre-caching experiment: train a vanilla and a myopic transformer on D_p and probe "
                  "their residual streams for sin(F x) of past inputs.", synthetic),
    "train": ("Train a language model (from scratch or fine-tuning) as vanilla, myopic, local-myopic or transformer "
              "bigram.", train),
    "myopia-gap": ("Train vanilla, myopic and transformer-bigram models on the same text and measure the myopia gap "
                   "(validation loss by position for each regime).", myopia_gap),
    "probe-sweep": ("Train future-token probes at every layer x offset of one or more models and compare them with "
                    "unigram, bigram-at-distance-N and control-task baselines.", probe_sweep),
    "compare": ("Compare a vanilla and a myopic model (and a transformer bigram) side by side: losses by position, "
                "the myopia gap, and probe accuracy by layer x offset with its difference.", compare),
    "lens-view": ("Show what future-token probes predict at every depth and position of one prompt: an HTML grid "
                  "(hover for the top 5), a PNG, and a CSV.", lens_view),
    "gradient-split": ("Split a model's gradient into its myopic and pre-caching parts: the pre-caching share per "
                       "parameter group, for a language model, a synthetic-task model, or over synthetic training.",
                       gradient_split),
}
