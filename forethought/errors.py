"""Errors raised by forethought.

Every error is a :class:`ForethoughtError` whose message is one line that names the bad value and what
would be accepted instead. The CLI prints that line on stderr and exits with code 2.

Example:
    >>> from forethought.errors import ForethoughtError, OutOfRangeError
    >>> issubclass(OutOfRangeError, ForethoughtError)
    True
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager


class ForethoughtError(Exception):
    """Base class of every error forethought raises on purpose."""


class InvalidArgumentError(ForethoughtError, ValueError):
    """An argument has a value forethought cannot use (a zero batch size, an unknown preset, ...)."""


class ModelNotAvailableError(ForethoughtError):
    """A model name or directory could not be loaded (offline without a local copy, bad directory)."""


class UnknownHookError(InvalidArgumentError):
    """A hook name the model does not have."""


class OutOfRangeError(InvalidArgumentError, IndexError):
    """A layer, head, position or offset outside what the model or data allow."""


class DataError(ForethoughtError):
    """A corpus or token set that is empty, too short or otherwise unusable."""


class ContextLengthError(InvalidArgumentError):
    """A sequence longer than the model's context window."""


class VocabularyMismatchError(ForethoughtError):
    """Tokens, a tokenizer or a probe whose vocabulary does not fit the model."""


class UnsupportedArchitectureError(ForethoughtError):
    """An operation cannot guarantee its result on this model's architecture."""


class CheckpointError(ForethoughtError):
    """A checkpoint or saved probe that is missing, corrupt, truncated or unsafe to load."""


class NumericalError(ForethoughtError):
    """A NaN or infinite value where a finite one is required (a loss, activations)."""


class DistributedError(ForethoughtError):
    """The processes of a multi-process run were called differently, or another process failed."""


def check_positive(name: str, value: float, *, integer: bool = False) -> None:
    """Raise :class:`InvalidArgumentError` unless ``value`` is a finite positive (integer) number.

    Example:
        >>> check_positive("batch_size", 8, integer=True)
    """
    kind = "a positive integer" if integer else "a finite positive number"
    if not _is_number(value, integer) or not value > 0 or not math.isfinite(value):
        raise InvalidArgumentError(f"{name}={value!r} is not allowed; expected {kind}")


def check_number(name: str, value: float, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False) -> None:
    """Raise :class:`InvalidArgumentError` unless ``value`` is a finite number (an integer) in the given range.

    ``low``/``high`` bound the range (``None``: unbounded), closed unless ``low_open``/``high_open``. The one check
    of every numeric setting: the config dataclasses and the command line's option types use it alike.

    Example:
        >>> check_number("beta", 0.5, low=0, high=1)
        >>> check_number("lr", float("inf"), low=0, low_open=True)
        Traceback (most recent call last):
        ...
        forethought.errors.InvalidArgumentError: lr=inf is not allowed; expected a finite number > 0
    """
    if _is_number(value, integer) and math.isfinite(value) and (
            low is None or (value > low if low_open else value >= low)) and (
            high is None or (value < high if high_open else value <= high)):
        return
    expected = range_text(low, high, low_open, high_open, integer)
    raise InvalidArgumentError(f"{name}={value!r} is not allowed; expected {expected}")


def range_text(low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False,
               integer: bool = False) -> str:
    """``"a finite number in (0, 1]"``, ``"an integer >= 0"``, ...: what :func:`check_number` accepts, in words.

    Example:
        >>> range_text(0, 1, low_open=True)
        'a finite number in (0, 1]'
    """
    kind = "an integer" if integer else "a finite number"
    if low is not None and high is not None:
        return f"{kind} in {'(' if low_open else '['}{_shown(low)}, {_shown(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{kind} {'>' if low_open else '>='} {_shown(low)}"
    if high is not None:
        return f"{kind} {'<' if high_open else '<='} {_shown(high)}"
    return kind


#: Seeds are integers in ``[0, SEED_LIMIT)`` (what numpy and torch both accept).
SEED_LIMIT = 2**32


def check_seed(name: str, value: int) -> None:
    """Raise :class:`InvalidArgumentError` unless ``value`` is a seed: an integer in ``[0, 2**32)``.

    Example:
        >>> check_seed("seed", -1)
        Traceback (most recent call last):
        ...
        forethought.errors.InvalidArgumentError: seed=-1 is not allowed; expected an integer in [0, 2**32)
    """
    if not _is_number(value, True) or not 0 <= value < SEED_LIMIT:
        raise InvalidArgumentError(f"{name}={value!r} is not allowed; expected an integer in [0, 2**32)")


def check_probability(name: str, value: float) -> None:
    """Raise :class:`InvalidArgumentError` unless ``value`` is a probability in ``(0, 1]``.

    Example:
        >>> check_probability("p", 0.5)
    """
    if not _is_number(value, False) or not 0.0 < value <= 1.0:
        raise InvalidArgumentError(f"{name}={value!r} is not allowed; expected a probability in (0, 1]")


def _is_number(value: object, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if integer else isinstance(value, numbers.Real)


def _shown(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() and abs(bound) < 1e15 else repr(bound)


def choices_text(options: Iterable[object], limit: int = 12) -> str:
    """Format allowed values for an error message, eliding the middle of long lists.

    Example:
        >>> choices_text(["a", "b"])
        "'a', 'b'"
    """
    options = list(options)
    shown = [repr(o) for o in options]
    if len(shown) > limit:
        shown = shown[: limit // 2] + [f"... ({len(options) - limit} more)"] + shown[-limit // 2 :]
    return ", ".join(shown)


def check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    """Raise :class:`InvalidArgumentError` unless ``value`` is one of ``choices``: the one "is unknown" check.

    Example:
        >>> check_choice("mode", "soft", ("strict", "cutgrad"))
        Traceback (most recent call last):
        ...
        forethought.errors.InvalidArgumentError: mode='soft' is unknown; choose one of 'strict', 'cutgrad'
    """
    choices = list(choices)
    if value not in choices:
        raise InvalidArgumentError(f"{name}={value!r} is unknown; choose one of {choices_text(choices)}")


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
    """Re-raise a :class:`ForethoughtError` raised inside with the options it is about named (:func:`name_options`).

    The command line runs every command inside this block, so that ``--warmup-steps 50`` is refused as
    ``--warmup-steps: warmup_steps=50 is not allowed; ...``: the option the user typed, then the setting.
    """
    try:
        yield
    except ForethoughtError as error:
        named = name_options(str(error), options)
        if named == str(error):
            raise
        raise type(error)(named) from error
