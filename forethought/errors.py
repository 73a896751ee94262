"""Errors raised by forethought.

Every error is a :class:`ForethoughtError` whose message is one line that names the bad value and what
would be accepted instead. The CLI prints that line on stderr and exits with code 2.

Example:
    >>> from forethought.errors import ForethoughtError, OutOfRangeError
    >>> issubclass(OutOfRangeError, ForethoughtError)
    True
"""

from __future__ import annotations

from collections.abc import Iterable


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
    """Raise :class:`InvalidArgumentError` unless ``value`` is a positive (integer) number.

    Example:
        >>> check_positive("batch_size", 8, integer=True)
    """
    kind = "a positive integer" if integer else "a positive number"
    if isinstance(value, bool) or (integer and not isinstance(value, int)):
        raise InvalidArgumentError(f"{name}={value!r} is not allowed; expected {kind}")
    if not value > 0:
        raise InvalidArgumentError(f"{name}={value!r} is not allowed; expected {kind}")


def check_probability(name: str, value: float) -> None:
    """Raise :class:`InvalidArgumentError` unless ``value`` is a probability in ``(0, 1]``.

    Example:
        >>> check_probability("p", 0.5)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise InvalidArgumentError(f"{name}={value!r} is not allowed; expected a probability in (0, 1]")


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
