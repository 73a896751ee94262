"""The type checker the test suite runs forethought under: jaxtyping's import hook with checks of array annotations.

``pytest`` instruments every ``forethought`` function (``--jaxtyping-packages`` in ``pyproject.toml``), as
TransformerLens does, but with this checker instead of a full one: it checks the arguments (and results) whose
annotation names an array type (``Float[Tensor, "layer n d_model"]``, alone or in a union), so shapes and dtypes
are checked, with one size per named axis across a call, and nothing else is. Tests of the error contract pass
malformed arrays on purpose to see forethought's own error: they use the ``unchecked_shapes`` fixture.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import types
import typing

from jaxtyping import AbstractArray

ENABLED = contextvars.ContextVar("shape_checks_enabled", default=True)


def check_shapes(fn):
    """``fn`` checking its array-annotated parameters (jaxtyping passes the result as one more parameter)."""
    signature = inspect.signature(fn)
    checks = {name: allowed for name, parameter in signature.parameters.items()
              if (allowed := _alternatives(parameter.annotation))}

    @functools.wraps(fn)
    def checked(*args, **kwargs):
        if ENABLED.get():
            bound = signature.bind(*args, **kwargs)
            for name, allowed in checks.items():
                value = bound.arguments.get(name, inspect.Parameter.empty)
                if value is not inspect.Parameter.empty and not any(_matches(value, kind) for kind in allowed):
                    raise TypeError(f"{name} does not match {' | '.join(map(str, allowed))}")
        return fn(*args, **kwargs)

    return checked


def _is_array(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, AbstractArray)


def _alternatives(annotation) -> tuple | None:
    """The alternatives of an annotation that names an array type, else None (not checked)."""
    if _is_array(annotation):
        return (annotation,)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        if any(_is_array(member) for member in members):
            return members
    return None


def _matches(value, kind) -> bool:
    if kind is type(None):
        return value is None
    if _is_array(kind):
        return isinstance(value, kind)
    origin = typing.get_origin(kind) or kind
    return not isinstance(origin, type) or isinstance(value, origin)
