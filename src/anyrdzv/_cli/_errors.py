"""What a command's failure is: bad input a :class:`UsageError` (one line, exit status 2);
a store failure, bad data or a network fault a message of one bounded line; Ctrl-C an
interrupt; anything else a bug, raised with its traceback."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from .._checks import cut
from .._exceptions import StoreError

if TYPE_CHECKING:
    from collections.abc import Iterator

# How much of a message, or of a value quoted in one, reaches the terminal.
_MAX_MESSAGE = 1000


class UsageError(Exception):
    """Bad input from the command line: printed without a traceback, exit status 2."""


@contextmanager
def usage_errors(*types: type[Exception]) -> Iterator[None]:
    """Turn the exceptions of ``types`` (``ValueError`` unless told) raised inside into a
    :class:`UsageError` with their message: bad input, not a bug."""
    caught = types or (ValueError,)
    try:
        yield
    except caught as exc:
        raise UsageError(str(exc)) from None


def one_line(message: str, limit: int = _MAX_MESSAGE) -> str:
    """Return ``message`` on one line, control characters escaped, at most ``limit`` long."""
    message = cut(message, limit)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def describe_failure(exc: BaseException) -> str | None:
    """Say what went wrong, if ``exc`` (or every exception in its group) is a store
    error, bad data (``ValueError``, ``TypeError``) or a network fault (``OSError``);
    else return ``None``: a bug, whose traceback is shown.
    """
    inner: tuple[BaseException, ...] = getattr(exc, "exceptions", ())
    if inner:
        found = [describe_failure(e) for e in inner]
        return None if None in found else "; ".join(m for m in found if m)
    if isinstance(exc, StoreError):
        return str(exc) or type(exc).__name__
    if isinstance(exc, ValueError | TypeError | OSError):
        # Not a StoreError: the store let it through; its type helps the bug report.
        return f"{type(exc).__name__}: {exc}"
    return None


def is_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is Ctrl-C: a ``KeyboardInterrupt``, or a group of nothing else."""
    inner: tuple[BaseException, ...] = getattr(exc, "exceptions", ())
    if isinstance(exc, KeyboardInterrupt):
        return True
    return bool(inner) and all(is_interrupt(e) for e in inner)
