"""Argument checks and message cutting: one family, used by every layer.

Every check names the parameter, says what it takes, and echoes the bad value cut to a
bounded length (attrs' validators do the same), so that a 100 KB bad input never
becomes a 100 KB message. ``bool`` is never taken for a number.
"""

from __future__ import annotations

import math
from typing import TypeGuard

#: How much of a value an error message echoes.
MAX_ECHO = 200


def cut(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` for a message: whole if it has at most ``limit`` characters, else its
    first ``limit``, marked as cut, with its length."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def echo(value: object, limit: int = MAX_ECHO) -> str:
    """``repr(value)`` for an error or log message, cut to ``limit`` characters.

    An int too long to print quickly (``str()`` of one is quadratic, and refused past
    4,300 digits) is shown by its size.
    """
    if isinstance(value, int) and value.bit_length() > 64:
        return f"<an int of {value.bit_length()} bits>"
    return cut(repr(value), limit)


def type_name(value: object) -> str:
    """The name of ``value``'s type, for error messages."""
    return type(value).__qualname__


def is_int(value: object) -> TypeGuard[int]:
    """Whether ``value`` is an ``int`` and not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """Whether ``value`` is an ``int`` or a ``float``, and not a ``bool``."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def wrong_type(name: str, value: object, expected: str) -> TypeError:
    """The ``TypeError`` for parameter ``name``, which takes ``expected``, given ``value``."""
    return TypeError(f"{name} must be {expected}, got {type_name(value)} {echo(value)}")


def check_str(name: str, value: object) -> str:
    """Return ``value`` if it is a ``str``.

    :raises TypeError: if it is not
    """
    if not isinstance(value, str):
        raise wrong_type(name, value, "a str")
    return value


def check_bytes(name: str, value: object) -> bytes:
    """Return ``value`` if it is ``bytes``.

    :raises TypeError: if it is not
    """
    if not isinstance(value, bytes):
        raise wrong_type(name, value, "bytes")
    return value


def check_int(name: str, value: object, *, least: int | None = None) -> int:
    """Return ``value`` if it is an ``int`` (not a ``bool``) of at least ``least``.

    :raises TypeError: if it is not an ``int``
    :raises ValueError: if it is less than ``least``
    """
    if not is_int(value):
        raise wrong_type(name, value, "an int")
    if least is not None and value < least:
        raise ValueError(f"{name} must be at least {least}, got {echo(value)}")
    return value


def check_number(name: str, value: object, *, expected: str = "a number") -> float:
    """Return ``value`` as a ``float`` if it is an ``int`` or a ``float`` (not a ``bool``).

    :param expected: what the ``TypeError`` says the parameter takes
    :raises TypeError: if it is not a number
    """
    if not is_number(value):
        raise wrong_type(name, value, expected)
    return float(value)


def check_positive(name: str, value: object, *, expected: str = "a number") -> float:
    """Return ``value`` as a ``float`` if it is a finite number greater than zero.

    :raises TypeError: if it is not a number
    :raises ValueError: if it is zero, negative, infinite or NaN
    """
    number = check_number(name, value, expected=expected)
    if math.isinf(number) and number > 0:
        raise ValueError(f"{name} must be finite, got {echo(value)}")
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be positive and finite, got {echo(value)}")
    return number


def check_seconds(name: str, value: object) -> float:
    """Return ``value`` as a ``float`` if it is a finite, positive number of seconds.

    :raises TypeError: if it is not a number
    :raises ValueError: if it is zero, negative, infinite or NaN
    """
    return check_positive(name, value, expected="a number of seconds")
