"""The ``forethought`` command line: one subcommand per experiment runner.

Each runner module in :mod:`forethought.experiments` defines ``HELP``, ``add_arguments(parser)`` and
``run(args)``. Bad input ends the command with exit code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from forethought.errors import ForethoughtError

COMMANDS = {
    "synthetic": "forethought.experiments.synthetic",
    "train": "forethought.experiments.train",
    "myopia-gap": "forethought.experiments.myopia_gap",
    "probe-sweep": "forethought.experiments.probe_sweep",
    "compare": "forethought.experiments.compare",
    "gradient-split": "forethought.experiments.gradient_split",
}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="forethought", description="Do language models plan ahead?")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        sub = commands.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(command_function=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.command_function(args)
    except ForethoughtError as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"forethought {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"forethought {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
