"""Command-line options derived from a config dataclass.

One ``--field-name`` per field, typed, with its help taken from the ``Attributes:`` section of the class docstring
and its default shown.

The dataclass stays the one place a setting is defined; a runner adds its fields with
:func:`add_dataclass_arguments` and gets the values given back with :func:`dataclass_overrides`. Nothing here
imports torch, so ``--help`` and argument errors answer at once.

Example:
    >>> import argparse
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Config:
    ...     '''Settings.
    ...
    ...     Attributes:
    ...         steps: optimizer steps.
    ...         progress: show a progress bar.
    ...     '''
    ...     steps: int = 10
    ...     progress: bool = True
    >>> parser = argparse.ArgumentParser()
    >>> add_dataclass_arguments(parser, Config)
    >>> args = parser.parse_args(["--steps", "3", "--no-progress"])
    >>> dataclass_overrides(Config, args)
    {'steps': 3, 'progress': False}
    >>> parser.parse_args([]).steps
    10
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from forethought.errors import ForethoughtError, InvalidArgumentError, check_number, check_seed

_MISSING = dataclasses.MISSING
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")  # :func:`~forethought.x.y` -> forethought.x.y


def field_help(cls: type) -> dict[str, str]:
    """Each field's description from the ``Attributes:`` section of ``cls``'s Google-style docstring, as plain text.

    Example:
        >>> from forethought.config import TrainConfig
        >>> field_help(TrainConfig)["steps"]
        'optimizer steps'
    """
    lines = (cls.__doc__ or "").expandtabs().splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Attributes:"), None)
    if start is None:
        return {}
    entries: dict[str, list[str]] = {}
    indent = None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        if depth < indent:
            break
        name, sep, text = line.strip().partition(":")
        if depth == indent and sep and name.isidentifier():
            entries[name] = [text.strip()]
        elif entries:
            entries[next(reversed(entries))].append(line.strip())
    return {name: _plain_text(" ".join(words)) for name, words in entries.items()}


def _plain_text(text: str) -> str:
    text = _ROLE.sub(lambda match: match.group(1).rsplit(".", 1)[-1], text).replace("``", "")
    return text.rstrip(".")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _option_type(hint: Any) -> tuple[Any, dict[str, Any]]:
    """The scalar type of a field and the ``add_argument`` keywords it needs (``choices``, ``nargs``)."""
    origin, members = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        present = [member for member in members if member is not type(None)]
        if len(present) == 1:
            return _option_type(present[0])
    if origin is typing.Literal:
        return type(members[0]), {"choices": members}
    if origin is tuple and members and Ellipsis not in members and len(set(members)) == 1:
        return members[0], {"nargs": len(members)}
    if hint in (int, float, str, bool):
        return hint, {}
    raise TypeError(f"{hint!r} has no command-line form; exclude the field or give it a hand-written option")


def _preset_defaults(name: str, default: Any, presets: Mapping[str, Any]) -> str:
    """`` (default: 3)`` when every preset agrees, else `` (default: the preset's: smoke 2, cpu 3)``."""
    values = {preset: config.get(name, default) if isinstance(config, Mapping) else getattr(config, name)
              for preset, config in presets.items()}
    if len({repr(value) for value in values.values()}) == 1:
        return f" (default: {_shown(next(iter(values.values())))})"
    listed = ", ".join(f"{preset} {_shown(value)}" for preset, value in values.items())
    return f" (default: the preset's: {listed})"


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value).replace("%", "%%")


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    only: Sequence[str] | None = None,
    exclude: Collection[str] = (),
    defaults: Mapping[str, Any] | None = None,
    presets: Mapping[str, Any] | None = None,
    choices: Mapping[str, Sequence[Any]] | None = None,
    flags: Mapping[str, Sequence[str]] | None = None,
    help: Mapping[str, str] | None = None,
    types: Mapping[str, Any] | None = None,
) -> None:
    """Add one option per field of the dataclass ``cls`` to ``parser`` (or an argument group).

    Args:
        parser: where the options go.
        cls: the config dataclass; its field types give each option's type (``X | None`` is ``X``, a
            ``Literal`` gives choices, ``tuple[float, float]`` takes two values, a ``bool`` is
            ``--name``/``--no-name``) and its ``Attributes:`` docstring section the help.
        only: the fields to add, in this order (default: every field not in ``exclude``).
        exclude: fields left out (the runner sets them, or they have no command-line form).
        defaults: defaults that replace the class's (e.g. a command's smaller ``steps``).
        presets: named configs (instances of ``cls`` or mappings of field values) that supply the defaults instead:
            every option then defaults to ``None`` ("not given") and its help lists each preset's value.
        choices: allowed values of ``str`` fields (e.g. ``{"regime": REGIMES}``).
        flags: option strings replacing ``--field-name`` (e.g. ``{"frequency": ["--frequency", "-F"]}``).
        help: help texts replacing the docstring's.
        types: option types replacing the field's (e.g. ``{"steps": number_type("steps", 1, integer=True)}``);
            a ``float`` field's type is otherwise :func:`number_type` (any finite number).
    """
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    names = list(only) if only is not None else [name for name in by_name if name not in exclude]
    texts = {name: text.replace("%", "%%") for name, text in {**field_help(cls), **(help or {})}.items()}
    for name in names:
        f = by_name[name]
        default = f.default if f.default is not _MISSING else (
            f.default_factory() if f.default_factory is not _MISSING else None)  # type: ignore[misc]
        default = (defaults or {}).get(name, default)
        kind, keywords = _option_type(hints[name])
        if name in (choices or {}):
            keywords["choices"] = tuple(choices[name])  # type: ignore[index]
        text = texts.get(name, name.replace("_", " "))
        options = list((flags or {}).get(name, [_flag(name)]))
        if kind is bool:
            keywords["action"] = argparse.BooleanOptionalAction
        elif name in (types or {}):
            keywords["type"] = types[name]  # type: ignore[index]
        elif kind is float:  # finite: inf and nan are refused where they are parsed
            keywords["type"] = number_type(name)
        else:
            keywords["type"] = kind
        if presets is not None:  # None: not given, the preset's value holds
            text += _preset_defaults(name, default, presets)
            default = None
        elif kind is not bool:  # (BooleanOptionalAction adds its own)
            text += f" (default: {_shown(default)})"
        parser.add_argument(*options, dest=name, default=default, help=text, **keywords)


def dataclass_overrides(cls: type, args: argparse.Namespace, *, only: Collection[str] | None = None,
                        exclude: Collection[str] = ()) -> dict[str, Any]:
    """The values of ``cls``'s fields that ``args`` holds and that were given (not ``None``).

    Only the fields in ``only`` (default: all) and not in ``exclude`` are read; lists (``nargs``) become tuples.

    Example:
        >>> from forethought.config import TrainConfig
        >>> dataclass_overrides(TrainConfig, argparse.Namespace(steps=3, lr=None, out="run"))
        {'steps': 3}
    """
    values = {}
    for f in dataclasses.fields(cls):
        if (only is not None and f.name not in only) or f.name in exclude:
            continue
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return values


def number_type(name: str, low: float | None = None, high: float | None = None, *, low_open: bool = False,
                high_open: bool = False, integer: bool = False, seed: bool = False) -> Any:
    """An argparse ``type`` that reads a finite number (an integer) in a range; argparse names the option it refuses.

    The range is checked by :func:`forethought.errors.check_number` (or :func:`~forethought.errors.check_seed`),
    the checks the config dataclasses use, so the message is theirs (``name=VALUE is not allowed; expected ...``)
    after argparse's ``argument --option:``.

    Example:
        >>> number_type("beta", 0, 1)("0.5")
        0.5
        >>> number_type("steps", 1, integer=True)("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: steps=0 is not allowed; expected an integer >= 1
    """
    def parse(text: str) -> float:
        try:
            value = int(text) if integer or seed else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected "
                                             f"{'an integer' if integer or seed else 'a number'}") from None
        try:
            if seed:
                check_seed(name, value)  # type: ignore[arg-type]
            else:
                check_number(name, value, low=low, high=high, low_open=low_open, high_open=high_open, integer=integer)
        except InvalidArgumentError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return value

    parse.__name__ = "seed" if seed else "integer" if integer else "number"
    return parse


def option_names(cls: type, flags: Mapping[str, Sequence[str]] | None = None) -> dict[str, str]:
    """Each field of the dataclass ``cls`` -> the option a user types for it (``warmup_steps`` -> ``--warmup-steps``).

    Example:
        >>> from forethought.config import SyntheticConfig
        >>> option_names(SyntheticConfig, {"myopic_mode": ["--mode"]})["myopic_mode"]
        '--mode'
    """
    return {f.name: list((flags or {}).get(f.name, [_flag(f.name)]))[0] for f in dataclasses.fields(cls)}


def name_options(message: str, options: Mapping[str, str]) -> str:
    """Prefix a message about settings (``"warmup_steps=5 ..."``) with the options a user types for them.

    Example:
        >>> name_options("d_model=30 is not divisible by n_heads=4", {"d_model": "--d-model", "n_heads": "--n-heads"})
        '--d-model, --n-heads: d_model=30 is not divisible by n_heads=4'
    """
    if not options:
        return message
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, sorted(options, key=len, reverse=True)))
                         + r")(?==)")
    named = list(dict.fromkeys(options[match.group(1)] for match in pattern.finditer(message)))
    return f"{', '.join(named)}: {message}" if named else message


@contextmanager
def as_options(options: Mapping[str, str]) -> Iterator[None]:
    """Re-raise a :class:`~forethought.errors.ForethoughtError` raised inside with the options it is about named.

    A runner builds its config dataclasses inside this block, so that ``--warmup-steps 50`` is refused as
    ``--warmup-steps: warmup_steps=50 is not allowed; ...``: the option the user typed, then the setting.
    """
    try:
        yield
    except ForethoughtError as error:
        named = name_options(str(error), options)
        if named == str(error):
            raise
        raise type(error)(named) from error
