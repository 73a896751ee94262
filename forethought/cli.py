"""The ``forethought`` command line: one subcommand per experiment runner.

Each subcommand's options come from :mod:`forethought.experiments.arguments` (torch-free, derived from the config
dataclasses where those define a setting) and its work from ``run(args)`` of its runner module, imported only once
the arguments parse: ``forethought <command> --help`` and argument errors answer at once, without importing torch.
Bad input ends the command with exit code 2 and one line on stderr; an error of the system (a full disk, a file
that cannot be read) with exit code 1 and one line.

Example:
    >>> build_parser(["train"]).parse_args(["train", "--out", "run", "--steps", "3"]).steps
    3
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from forethought import __version__
from forethought.errors import ForethoughtError

#: Subcommand -> (runner module, one-line summary for ``forethought --help``).
COMMANDS = {
    "synthetic": ("forethought.experiments.synthetic", "the synthetic pre-caching task: vanilla vs myopic, probes"),
    "train": ("forethought.experiments.train", "train one language model: vanilla, myopic, local-myopic, bigram"),
    "myopia-gap": ("forethought.experiments.myopia_gap", "train every regime on the same text; the myopia gap"),
    "probe-sweep": ("forethought.experiments.probe_sweep", "future-token probes at every layer x offset"),
    "compare": ("forethought.experiments.compare", "compare trained regimes: losses by position and probes"),
    "lens-view": ("forethought.experiments.lens_view", "a Future Lens grid: probe predictions by depth x position"),
    "gradient-split": ("forethought.experiments.gradient_split", "the pre-caching share of the gradient"),
}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show each option's default, unless its help already states it or there is none (``None``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or "default" in text:
            return text
        return super()._get_help_string(action)


def _chosen_command(argv: Sequence[str]) -> str | None:
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser for ``argv``: every subcommand is listed, only the one named in ``argv`` gets its options."""
    parser = _Parser(prog="forethought", description="Do language models plan ahead?",
                     formatter_class=_DefaultsFormatter)
    parser.add_argument("--version", action="version", version=f"forethought {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    chosen = _chosen_command(argv)
    for name, (module_name, summary) in COMMANDS.items():
        if name != chosen:
            commands.add_parser(name, help=summary)
            continue
        from forethought.experiments.arguments import COMMANDS as OPTIONS

        description, add_options = OPTIONS[name]
        sub = commands.add_parser(name, help=summary, description=description, formatter_class=_DefaultsFormatter)
        add_options(sub)
        sub.set_defaults(runner=module_name)
    return parser


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
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    out = getattr(args, "out", None)
    fresh = bool(out and str(out).strip()) and not os.path.lexists(os.path.expanduser(out))
    failed = True
    try:
        result = importlib.import_module(args.runner).run(args)
        failed = False
    except ForethoughtError as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"forethought {args.command}: error: {message}", file=sys.stderr)
        return 2
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        print(f"forethought {args.command}: error: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"forethought {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if failed and fresh:  # an --out this command created and left without a file goes again
            from forethought.reporting import remove_empty_tree

            remove_empty_tree(os.path.expanduser(out))
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
