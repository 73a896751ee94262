"""The CLI's options: derived from the config dataclasses, one name per idea, every default shown, and built
without importing torch (``--help`` and argument errors answer at once)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from typing import Literal

import pytest
from forethought.experiments.config_cli import add_dataclass_arguments, dataclass_overrides, field_help

from forethought.cli import COMMANDS, build_parser
from forethought.config import SYNTHETIC_PRESETS, SyntheticConfig, TrainConfig
from forethought.experiments.presets import DATA_FIELDS, PRESETS, Preset

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
#: Options that name one idea with a different ``dest``, because the config field is named differently.
SAME_IDEA = {"myopic_mode": "mode"}


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser([command])
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return commands.choices[command]


def _options(command: str) -> list[argparse.Action]:
    return [action for action in _subparser(command)._actions if action.dest != "help"]


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser(argv).parse_args(argv)


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
    """An option shows its default unless it is required (alone or as one of a required group)."""
    parser = _subparser(command)
    in_required_group = {id(action) for group in parser._mutually_exclusive_groups if group.required
                         for action in group._group_actions}
    for action in parser._actions:
        if action.dest == "help" or action.required or id(action) in in_required_group:
            continue
        assert "default" in parser.formatter_class("forethought")._get_help_string(action), action.option_strings


def test_one_name_per_idea_across_commands():
    flags_of: dict[str, set[tuple[str, ...]]] = {}
    dest_of: dict[str, set[str]] = {}
    for command in COMMANDS:
        for action in _options(command):
            flags_of.setdefault(action.dest, set()).add(tuple(action.option_strings))
            for flag in action.option_strings:
                dest_of.setdefault(flag, set()).add(SAME_IDEA.get(action.dest, action.dest))
    assert {dest: flags for dest, flags in flags_of.items() if len(flags) > 1} == {}
    assert {flag: dests for flag, dests in dest_of.items() if len(dests) > 1} == {}
    assert "--test-fraction" not in dest_of and dest_of["--val-fraction"] == {"val_fraction"}


@pytest.mark.parametrize("cls", [TrainConfig, SyntheticConfig, Preset])
def test_every_config_field_is_documented(cls):
    assert set(field_help(cls)) == {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("command, cls, left_out", [
    ("train", TrainConfig, {"out_dir"}),
    ("myopia-gap", TrainConfig, {"out_dir", "regime"}),
    ("synthetic", SyntheticConfig, set()),
])
def test_config_fields_are_options(command, cls, left_out):
    dests = {action.dest for action in _options(command)}
    assert {f.name for f in dataclasses.fields(cls)} - dests == left_out


@pytest.mark.parametrize("command", ["train", "myopia-gap", "gradient-split", "probe-sweep", "compare"])
def test_data_options_are_the_preset_fields(command):
    dests = {action.dest for action in _options(command)}
    scoring = {"dataset", "text_field", "seq_len", "max_sequences", "val_fraction"}
    assert (scoring if command in ("probe-sweep", "compare") else set(DATA_FIELDS)) <= dests


def test_train_defaults_build_the_config_of_its_help():
    args = _parse("train", "--out", "run")
    assert TrainConfig(**dataclass_overrides(TrainConfig, args)) == TrainConfig(steps=500)
    args = _parse("train", "--out", "run", "--adam-betas", "0.8", "0.9", "--no-progress", "--weight-decay-all",
                  "--regime", "myopic", "--mode", "cutgrad", "--mixed-precision", "no", "--eval-batches", "2")
    config = TrainConfig(**dataclass_overrides(TrainConfig, args))
    assert config == TrainConfig(steps=500, adam_betas=(0.8, 0.9), progress=False, weight_decay_all=True,
                                 regime="myopic", mode="cutgrad", mixed_precision="no", eval_batches=2)


def test_myopia_gap_options_override_the_preset():
    from forethought.experiments.myopia_gap import preset_from_args

    args = _parse("myopia-gap", "--out", "o", "--preset", "smoke", "--seq-len", "8", "--val-fraction", "0.2",
                  "--steps", "3", "--beta", "0.5")
    assert preset_from_args(args) == dataclasses.replace(PRESETS["smoke"], seq_len=8, val_fraction=0.2)
    config = TrainConfig(**{**PRESETS["smoke"].train, **dataclass_overrides(TrainConfig, args)})
    assert (config.steps, config.batch_size, config.beta, config.seed) == (3, 8, 0.5, 0)
    untouched = _parse("myopia-gap", "--out", "o", "--preset", "cpu")
    assert preset_from_args(untouched) == PRESETS["cpu"] and dataclass_overrides(TrainConfig, untouched) == {}


def test_synthetic_options_override_the_preset():
    from forethought.experiments.synthetic import config_from_args

    for name, preset in SYNTHETIC_PRESETS.items():
        assert config_from_args(_parse("synthetic", "--preset", name)) == preset
    config = config_from_args(_parse("synthetic", "--preset", "smoke", "--mode", "cutgrad", "-F", "9", "--steps",
                                     "20", "--d-mlp", "16", "--seed", "3"))
    assert config == dataclasses.replace(SYNTHETIC_PRESETS["smoke"], myopic_mode="cutgrad", frequency=9.0, steps=20,
                                         warmup_steps=2, d_mlp=16, seed=3)
    config = config_from_args(_parse("synthetic", "--preset", "smoke", "--steps", "20", "--warmup-steps", "4"))
    assert config.warmup_steps == 4


def test_synthetic_help_lists_the_paper_ps():
    from forethought.synthetic import PAPER_PS

    text = " ".join(_subparser("synthetic").format_help().split())
    assert "the paper's: " + " ".join(f"{p:g}" for p in PAPER_PS) in text


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
    """

    mode: Literal["fast", "slow"] = "fast"
    betas: tuple[float, float] = (0.9, 0.95)
    limit: int | None = None
    share: float = 0.5
    verbose: bool = False


def test_field_help_reads_the_attributes_section():
    assert field_help(_Toy) == {
        "mode": 'how to run, "fast" or "slow"; a long description that goes on over a second line (see myopic)',
        "betas": "two numbers", "limit": "at most this many (None: no limit)", "share": "a 50% share",
        "verbose": "talk"}


def test_dataclass_arguments_follow_the_field_types():
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_dataclass_arguments(parser, _Toy)
    args = parser.parse_args(["--mode", "slow", "--betas", "0.1", "0.2", "--limit", "3", "--verbose"])
    assert dataclass_overrides(_Toy, args) == {"mode": "slow", "betas": (0.1, 0.2), "limit": 3, "share": 0.5,
                                               "verbose": True}
    assert dataclass_overrides(_Toy, parser.parse_args([])) == {"mode": "fast", "betas": (0.9, 0.95), "share": 0.5,
                                                                "verbose": False}
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        parser.parse_args(["--mode", "medium"])
    with pytest.raises(argparse.ArgumentError, match="invalid int"):
        parser.parse_args(["--limit", "many"])


def test_presets_supply_the_defaults():
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, _Toy, presets={"a": _Toy(share=0.1), "b": {"share": 0.2}})
    assert dataclass_overrides(_Toy, parser.parse_args([])) == {}
    assert dataclass_overrides(_Toy, parser.parse_args(["--no-verbose"])) == {"verbose": False}
    text = " ".join(parser.format_help().split())
    assert "(default: the preset's: a 0.1, b 0.2)" in text and "two numbers (default: 0.9 0.95)" in text


def test_a_field_without_a_command_line_form_is_named():
    @dataclasses.dataclass
    class Config:
        table: dict = dataclasses.field(default_factory=dict)

    with pytest.raises(TypeError, match="dict"):
        add_dataclass_arguments(argparse.ArgumentParser(), Config)
    add_dataclass_arguments(argparse.ArgumentParser(), Config, exclude=("table",))
