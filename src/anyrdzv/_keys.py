"""The key layout of groups in a store."""

from __future__ import annotations

from ._util import check_str

DEFAULT_PREFIX = "/anyrdzv"


def check_name(name: str, value: object) -> str:
    value = check_str(name, value)
    if not value or "/" in value:
        raise ValueError(f"{name} must be non-empty and contain no '/', got {value!r}")
    return value


def check_prefix(prefix: object) -> str:
    return check_str("prefix", prefix).rstrip("/")


def members_prefix(group: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The store prefix under which ``group``'s members live: ``<prefix>/<group>/members/``."""
    return f"{check_prefix(prefix)}/{check_name('group', group)}/members/"
