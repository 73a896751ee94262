"""The CLI's options: one dataclass per command, one name per idea, every default shown, and built without
importing torch (``--help`` and argument errors answer at once)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from typing import Literal

import pytest
from simple_parsing.docstring import get_attribute_docstring

from forethought.cli import _command_parser, _with_defaults, build_parser
from forethought.config import SYNTHETIC_PRESETS, SyntheticConfig, TrainConfig, flag, not_an_option
from forethought.experiments.commands import COMMANDS, option_fields
from forethought.experiments.presets import PRESETS, Data, Preset

#: What each command needs besides the option under test, so that the error is about that option.
REQUIRED = {
    "synthetic": [],
    "train": ["--out", "o"],
    "myopia-gap": ["--out", "o"],
    "probe-sweep": ["--out", "o", "--run", "r"],
    "compare": ["--out", "o", "--run", "r"],
    "lens-view": ["--model", "m", "--probes", "p", "--prompt", "t", "--out", "o"],
    "gradient-split": ["--out", "o", "--model", "m"],
}
HEAVY = ("torch", "transformer_lens", "transformers", "sklearn", "matplotlib")


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser([command])
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    sub = commands.choices[command]
    sub._preprocessing()  # simple-parsing adds the options when it first needs them
    return sub


def _options(command: str) -> list[argparse.Action]:
    return [action for action in _subparser(command)._actions if action.dest != "help"]


def _field(action: argparse.Action) -> str:
    return action.dest.rsplit(".", 1)[-1]


def _parse(*argv: str):
    return build_parser(argv).parse_args(argv).command


def _in_subprocess(argv: list[str]) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run :func:`forethought.cli.main` in a fresh interpreter; the heavy modules it imported are returned."""
    code = ("import json, sys\nfrom forethought.cli import main\ntry:\n    main(json.loads(sys.argv[1]))\nfinally:\n"
            f"    print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    process = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], capture_output=True, text=True,
                             check=False, timeout=120)
    return process, json.loads(process.stdout.strip().splitlines()[-1])


def test_every_command_is_tested():
    assert set(REQUIRED) == set(COMMANDS)


@pytest.mark.parametrize("command", list(REQUIRED))
def test_an_argument_error_imports_no_torch(command):
    process, heavy = _in_subprocess([command, *REQUIRED[command], "--bad-flag"])
    assert process.returncode == 2, process.stderr
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and "--bad-flag" in lines[0] and "Traceback" not in process.stderr
    assert heavy == []


@pytest.mark.parametrize("command", list(REQUIRED))
def test_help_imports_no_torch(command):
    process, heavy = _in_subprocess([command, "--help"])
    assert process.returncode == 0 and f"usage: forethought {command}" in process.stdout
    assert heavy == []


@pytest.mark.parametrize("command", list(REQUIRED))
def test_every_option_shows_its_default(command):
    """An option shows its default unless it is required."""
    parser = _subparser(command)
    for action in parser._actions:
        if action.dest == "help" or action.required:
            continue
        assert "default" in parser.formatter_class("forethought")._get_help_string(action), action.option_strings


def test_one_name_per_idea_across_commands():
    flags_of: dict[str, set[tuple[str, ...]]] = {}
    dest_of: dict[str, set[str]] = {}
    for command in COMMANDS:
        for action in _options(command):
            flags_of.setdefault(_field(action), set()).add(tuple(action.option_strings))
            for flag_ in action.option_strings:
                dest_of.setdefault(flag_, set()).add(_field(action))
    assert {dest: flags for dest, flags in flags_of.items() if len(flags) > 1} == {}
    assert {flag_: dests for flag_, dests in dest_of.items() if len(dests) > 1} == {}
    assert "--test-fraction" not in dest_of and dest_of["--val-fraction"] == {"val_fraction"}
    assert dest_of["--mode"] == {"mode"}  # the synthetic study and the trainer: one setting, one name


@pytest.mark.parametrize("cls", [TrainConfig, SyntheticConfig, Preset, Data, *COMMANDS.values()])
def test_every_config_field_is_documented(cls):
    for f in dataclasses.fields(cls):
        assert get_attribute_docstring(cls, f.name).desc_from_cls_docstring, (cls.__name__, f.name)


@pytest.mark.parametrize("command, cls, left_out", [
    ("train", TrainConfig, {"out_dir"}),
    ("myopia-gap", TrainConfig, {"out_dir", "regime"}),
    ("synthetic", SyntheticConfig, set()),
])
def test_config_fields_are_options(command, cls, left_out):
    dests = {_field(action) for action in _options(command)}
    assert {f.name for f in dataclasses.fields(cls)} - dests == left_out
    assert set(option_fields(COMMANDS[command])) == dests - {"help"}


@pytest.mark.parametrize("command", ["train", "myopia-gap", "gradient-split", "probe-sweep", "compare"])
def test_data_options_are_the_preset_fields(command):
    dests = {_field(action) for action in _options(command)}
    scoring = {"dataset", "text_field", "seq_len", "max_sequences", "val_fraction"}
    assert (scoring if command in ("probe-sweep", "compare") else {f.name for f in dataclasses.fields(Data)}) <= dests


def test_train_defaults_build_the_config_of_its_help():
    assert _parse("train", "--out", "run").train_config() == TrainConfig(steps=500)
    command = _parse("train", "--out", "run", "--adam-betas", "0.8", "0.9", "--no-progress", "--weight-decay-all",
                     "--regime", "myopic", "--mode", "cutgrad", "--mixed-precision", "no", "--eval-batches", "2")
    assert command.train_config() == TrainConfig(steps=500, adam_betas=(0.8, 0.9), progress=False,
                                                 weight_decay_all=True, regime="myopic", mode="cutgrad",
                                                 mixed_precision="no", eval_batches=2)
    assert _parse("train", "--out", "run", "--steps", "30").train_config().warmup_steps == 3  # follows --steps


def test_myopia_gap_options_override_the_preset():
    from forethought.experiments.myopia_gap import chosen_preset

    command = _parse("myopia-gap", "--out", "o", "--preset", "smoke", "--seq-len", "8", "--val-fraction", "0.2",
                     "--steps", "3", "--beta", "0.5")
    assert chosen_preset(command) == dataclasses.replace(PRESETS["smoke"], seq_len=8, val_fraction=0.2)
    config = command.train_config()
    assert (config.steps, config.batch_size, config.beta, config.seed) == (3, 8, 0.5, 0)
    untouched = _parse("myopia-gap", "--out", "o", "--preset", "cpu")
    assert chosen_preset(untouched) == PRESETS["cpu"]
    assert untouched.train_config() == TrainConfig(**PRESETS["cpu"].train)


def test_synthetic_options_override_the_preset():
    for name, preset in SYNTHETIC_PRESETS.items():
        assert _parse("synthetic", "--preset", name).configs() == [preset]
    config, = _parse("synthetic", "--preset", "smoke", "--mode", "cutgrad", "-F", "9", "--steps", "20", "--d-mlp",
                     "16", "--seed", "3").configs()
    assert config == dataclasses.replace(SYNTHETIC_PRESETS["smoke"], mode="cutgrad", frequency=9.0, steps=20,
                                         warmup_steps=2, d_mlp=16, seed=3)
    config, = _parse("synthetic", "--preset", "smoke", "--steps", "20", "--warmup-steps", "4").configs()
    assert config.warmup_steps == 4


def test_synthetic_help_lists_the_paper_ps():
    from forethought.synthetic import PAPER_PS

    text = " ".join(_subparser("synthetic").format_help().split())
    assert "the paper's: " + " ".join(f"{p:g}" for p in PAPER_PS) in text


def test_help_shows_the_chosen_presets_values():
    text = " ".join(build_parser(["synthetic"])._subparsers._group_actions[0].choices["synthetic"].format_help()
                    .split())
    assert "(default: 4000)" in text
    sub = build_parser(["synthetic", "--preset", "smoke"])._subparsers._group_actions[0].choices["synthetic"]
    assert "(default: 30)" in " ".join(sub.format_help().split())


@dataclasses.dataclass
class _Toy:
    """A toy config.

    Attributes:
        mode: how to run, ``"fast"`` or ``"slow"``; a long description that
            goes on over a second line (see :func:`~forethought.myopic_training.myopic`).
        betas: two numbers.
        limit: at most this many (``None``: no limit).
        share: a 50% share.
        verbose: talk.
        table: set by the command.
    """

    mode: Literal["fast", "slow"] = "fast"
    betas: tuple[float, float] = (0.9, 0.95)
    limit: int | None = None
    share: float = 0.5
    verbose: bool = flag(False)
    table: dict = not_an_option(None)


def _toy_parser(cls: type = _Toy) -> argparse.ArgumentParser:
    parser = _command_parser(prog="toy")
    parser.add_arguments(cls, dest="toy")
    return parser


def test_help_reads_the_attributes_section():
    text = " ".join(_toy_parser().format_help().split())
    assert ('how to run, "fast" or "slow"; a long description that goes on over a second line (see myopic) '
            "(default: fast)") in text
    assert "two numbers (default: 0.9 0.95)" in text and "a 50% share (default: 0.5)" in text
    assert "at most this many (None: no limit) (default: None)" in text and "--table" not in text


def test_options_follow_the_field_types(capsys):
    parser = _toy_parser()
    toy = parser.parse_args(["--mode", "slow", "--betas", "0.1", "0.2", "--limit", "3", "--verbose"]).toy
    assert toy == _Toy(mode="slow", betas=(0.1, 0.2), limit=3, share=0.5, verbose=True)
    assert parser.parse_args([]).toy == _Toy()
    assert parser.parse_args(["--no-verbose"]).toy == _Toy(verbose=False)
    for argv, message in ((["--mode", "medium"], "invalid choice"), (["--limit", "many"], "invalid")):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        err = capsys.readouterr().err.strip()
        assert exit_.value.code == 2 and len(err.splitlines()) == 1 and message in err


def test_presets_supply_the_defaults():
    @dataclasses.dataclass
    class Outer:
        """Outer.

        Attributes:
            toy: the toy.
        """

        toy: _Toy = dataclasses.field(default_factory=_Toy)

    parser = _command_parser(prog="outer")
    parser.add_arguments(_with_defaults(Outer, {"toy": _Toy(share=0.1)}), dest="outer")
    assert parser.parse_args([]).outer.toy == _Toy(share=0.1)
    assert parser.parse_args(["--share", "0.3"]).outer.toy == _Toy(share=0.3)
    assert "a 50% share (default: 0.1)" in " ".join(parser.format_help().split())
