"""The key layout of groups in a store."""

from __future__ import annotations

from .._checks import check_str, echo

DEFAULT_PREFIX = "/anyrdzv"


def _check_utf8(name: str, value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{name} must be encodable as UTF-8 ({exc.reason} at index {exc.start}), "
            f"got {echo(value)}"
        ) from None
    return value


def check_name(name: str, value: object) -> str:
    """Return ``value`` if it can name a group or a member: a non-empty ``str`` with no
    ``/`` that UTF-8 can encode (no lone surrogates).

    :param name: the parameter's name, for the error message
    :param value: the value to check
    :raises TypeError: if ``value`` is not a ``str``
    :raises ValueError: if ``value`` is empty, contains ``/``, or is not valid UTF-8
    :return: ``value``
    """
    value = check_str(name, value)
    if not value or "/" in value:
        raise ValueError(f"{name} must be non-empty and contain no '/', got {echo(value)}")
    return _check_utf8(name, value)


def check_prefix(prefix: object) -> str:
    """Return ``prefix`` without trailing ``/``, if it is a ``str`` that UTF-8 can encode.

    :raises TypeError: if ``prefix`` is not a ``str``
    :raises ValueError: if ``prefix`` is not valid UTF-8
    """
    return _check_utf8("prefix", check_str("prefix", prefix)).rstrip("/")


def members_prefix(group: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The store prefix under which ``group``'s members live: ``<prefix>/<group>/members/``."""
    return f"{check_prefix(prefix)}/{check_name('group', group)}/members/"
