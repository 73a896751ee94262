"""The ``forethought`` command line: one subcommand per command dataclass of :mod:`forethought.experiments.commands`.

simple-parsing turns the chosen command's dataclass into its options (help from the ``Attributes:`` docstrings,
defaults shown, a preset's values as the defaults) and parses the command line into an instance, which ``run(command)``
of its runner takes. Only the chosen command's options are built, and the runner (with torch) is imported only once
they parse: ``forethought <command> --help`` and argument errors answer at once. Bad input ends the command with exit
code 2 and one line on stderr naming the option as typed; an error of the system (a full disk, a file that cannot be
read) with exit code 1 and one line.

Example:
    >>> argv = ["train", "--out", "run", "--steps", "3"]
    >>> build_parser(argv).parse_args(argv).command.training.steps
    3
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import re
import sys
import typing
import warnings
from collections.abc import Sequence
from typing import Any

from forethought import __version__
from forethought.errors import ForethoughtError, as_options, name_options
from forethought.experiments.commands import COMMANDS, summary

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")  # :func:`~forethought.x.y` -> y
_GROUP = re.compile(r"^\w+ \['([\w.]+)'\]$")  # simple-parsing's group title: "Train ['command.data']"


def _plain(text: str) -> str:
    """A docstring's text as help: roles and ``code`` marks removed, no final period."""
    text = _ROLE.sub(lambda match: match.group(1).rsplit(".", 1)[-1], " ".join(text.split())).replace("``", "")
    return text.rstrip(".")


class _Formatter(argparse.HelpFormatter):
    """Plain help texts, each with its default unless the option is required or the text states it."""

    def _get_default_metavar_for_optional(self, action: argparse.Action) -> str:
        return action.dest.rsplit(".", 1)[-1].upper()

    def _get_help_string(self, action: argparse.Action) -> str:
        text = _plain((action.help or "").replace(" (default: %(default)s)", "")).replace("%", "%%")
        if action.required or action.default is argparse.SUPPRESS or "default" in text:
            return text
        default = action.default
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def _command_parser(**keywords: Any) -> argparse.ArgumentParser:
    """A simple-parsing parser with :class:`_Parser`'s errors, plain dashed options and one group per dataclass."""
    from simple_parsing import ArgumentParser, DashVariant

    class CommandParser(ArgumentParser, _Parser):
        def add_argument_group(self, title: str | None = None, description: str | None = None, **more: Any) -> Any:
            match = _GROUP.match(title or "")
            if match:  # the command's own fields: "settings"; a nested dataclass: its field's name
                dest = match.group(1).split(".")
                title, description = ("settings" if len(dest) == 1 else dest[-1].replace("_", " ")), None
            return super().add_argument_group(title, description, **more)

        def format_help(self) -> str:
            self._preprocessing()
            return super().format_help()

        def _preprocessing(self, *args: Any, **keywords: Any) -> None:
            super()._preprocessing(*args, **keywords)
            for action in self._actions:  # an option takes its value (an optional field's too), named by its field
                if action.nargs == "?" and action.const is None and not hasattr(action, "negative_prefix"):
                    action.nargs = None
                if not action.choices and not hasattr(action, "negative_prefix"):
                    action.metavar = None

    return CommandParser(add_option_string_dash_variants=DashVariant.DASH, add_config_path_arg=False,
                         formatter_class=_Formatter, allow_abbrev=False, **keywords)


def _subparser(*, options: bool = False, **keywords: Any) -> argparse.ArgumentParser:
    """A subcommand's parser: only the chosen command's (``options``) builds options, and imports simple-parsing."""
    return _command_parser(**keywords) if options else _Parser(**keywords)


def _chosen_command(argv: Sequence[str]) -> str | None:
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser for ``argv``: every subcommand is listed, only the one named in ``argv`` gets its options.

    Its defaults may depend on ``argv`` (``--preset``, and ``--steps`` for the warm-up): parse the same ``argv``.
    A parsed command line holds the command dataclass in ``command``.
    """
    parser = _Parser(prog="forethought", description="Do language models plan ahead?")
    parser.add_argument("--version", action="version", version=f"forethought {__version__}")
    commands = parser.add_subparsers(dest="name", metavar="COMMAND", parser_class=_subparser)  # type: ignore[arg-type]
    chosen = _chosen_command(argv)
    for name, command in COMMANDS.items():
        if name != chosen:
            commands.add_parser(name, help=summary(command))
            continue
        sub = commands.add_parser(name, help=summary(command), description=(command.__doc__ or "").split(
            "Attributes:")[0].strip(), options=True)
        sub.add_arguments(_with_defaults(command, command.defaults(argv)), dest="command")  # type: ignore[attr-defined]
    return parser


def _with_defaults(command: type, values: dict[str, Any] | None) -> type:
    """``command`` with other defaults for some of its nested settings (a preset's).

    A subclass whose fields have those defaults: simple-parsing reads the defaults from the fields.
    """
    if not values:
        return command
    hints = typing.get_type_hints(command)
    changed = [(name, hints[name], dataclasses.field(default_factory=lambda value=value: value))
               for name, value in values.items()]
    subclass = dataclasses.make_dataclass(command.__name__, changed, bases=(command,), kw_only=True)
    subclass.__doc__, subclass.__module__ = command.__doc__, command.__module__
    return subclass


def option_names(parser: argparse.ArgumentParser, name: str) -> dict[str, str]:
    """Each setting of command ``name`` -> the option a user types for it (``warmup_steps`` -> ``--warmup-steps``).

    Example:
        >>> option_names(build_parser(["synthetic"]), "synthetic")["frequency"]
        '--frequency'
    """
    sub = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction)).choices[name]
    sub._preprocessing()  # type: ignore[attr-defined]  # simple-parsing adds the options when it first needs them
    options = {action.dest.rsplit(".", 1)[-1]: next(o for o in action.option_strings if o.startswith("--"))
               for action in sub._actions if action.option_strings and action.dest != "help"}
    return {**options, **COMMANDS[name].aliases}


def _quiet_libraries() -> None:
    """Keep stderr for forethought's own messages: no third-party progress bars or warnings (unless -W is set)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if not sys.warnoptions:
        warnings.simplefilter("ignore")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand on ``argv`` (default: ``sys.argv[1:]``) and return its exit status.

    A :class:`~forethought.errors.ForethoughtError` ends with exit 2 and one stderr line, an ``OSError`` with 1
    and an interrupt with 130; with no subcommand the help is printed and 0 returned. A failed command removes the
    ``--out`` directory it created when nothing was written into it.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    _quiet_libraries()
    parser = build_parser(argv)
    name = _chosen_command(argv)
    try:
        args = parser.parse_args(argv)
    except ForethoughtError as error:  # a value the command's dataclass refuses
        message = name_options(str(error), option_names(parser, name)) if name in COMMANDS else str(error)
        print(f"forethought {name}: error: {message.splitlines()[0]}", file=sys.stderr)
        return 2
    if args.name is None:
        parser.print_help()
        return 0
    command = args.command
    out = command.out
    fresh = bool(out and str(out).strip()) and not os.path.lexists(os.path.expanduser(out))
    failed = True
    try:
        with as_options(option_names(parser, args.name)):
            result = importlib.import_module(command.runner).run(command)
        failed = False
    except ForethoughtError as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"forethought {args.name}: error: {message}", file=sys.stderr)
        return 2
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        print(f"forethought {args.name}: error: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"forethought {args.name}: interrupted", file=sys.stderr)
        return 130
    finally:
        if failed and fresh:  # an --out this command created and left without a file goes again
            from forethought.reporting import remove_empty_tree

            remove_empty_tree(os.path.expanduser(out))
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
