"""The keys of a torchrun ``--rdzv-conf`` that a :class:`~anyrdzv.Rendezvous` reads.

Pure: a conf string or a mapping of strings in, the rendezvous's keyword values out, with
torch's defaults and torch's wording in the messages. No I/O and no event loop.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final, Literal, TypedDict

from .._checks import echo, wrong_type
from .._core._config import parse_rendezvous_config
from ._ranks import RankOrder, check_rank_order, check_topology

if TYPE_CHECKING:
    from collections.abc import Mapping


class ConfValues(TypedDict):
    """The keyword values of a :class:`~anyrdzv.Rendezvous` that a conf sets."""

    join_timeout: float
    last_call_timeout: float
    close_timeout: float
    keep_alive_interval: float
    keep_alive_max_attempt: int
    max_rounds: int | None
    health_check: str | None
    health_check_timeout: float
    rank_order: RankOrder
    topology: str | None


#: torch's defaults for the keys of ``--rdzv-conf`` that a rendezvous reads.
DEFAULTS = ConfValues(
    join_timeout=600.0,
    last_call_timeout=30.0,
    close_timeout=30.0,
    keep_alive_interval=5.0,
    keep_alive_max_attempt=3,
    max_rounds=None,
    health_check=None,
    health_check_timeout=60.0,
    rank_order="natural",
    topology=None,
)

#: The keys whose values are numbers of seconds.
_SECONDS: Final[
    tuple[Literal["join_timeout", "last_call_timeout", "close_timeout", "keep_alive_interval"], ...]
] = ("join_timeout", "last_call_timeout", "close_timeout", "keep_alive_interval")
#: The one key whose value is an integer.
_INTEGER: Final = "keep_alive_max_attempt"


def _number(key: str, text: object) -> float:
    """The value of ``key``, a positive, finite number (an integer for :data:`_INTEGER`).

    :raises TypeError: if ``text`` is not a ``str``
    :raises ValueError: if it is not a number of that kind, or not positive and finite
    """
    if not isinstance(text, str):
        raise wrong_type(f"the value of {key!r}", text, "a str")
    try:
        number: float = int(text) if key == _INTEGER else float(text)
    except ValueError:
        kind = "integer" if key == _INTEGER else "numeric"
        raise ValueError(
            f"The rendezvous configuration option '{key}' does not represent a valid "
            f"{kind} value: {echo(text)}"
        ) from None
    if not math.isfinite(number):  # infinite, or NaN
        raise ValueError(
            f"The rendezvous configuration option '{key}' must be finite, got {echo(text)}"
        )
    if number <= 0:
        raise ValueError(
            f"The rendezvous configuration option '{key}' must be positive, got {echo(text)}"
        )
    return number


def parse_conf(conf: str | Mapping[str, str]) -> ConfValues:
    """Read the rendezvous's keys from a torchrun ``--rdzv-conf`` string, or a mapping of
    strings: ``join_timeout`` (600), ``last_call_timeout`` (30), ``close_timeout`` (30),
    ``keep_alive_interval`` (5) and ``keep_alive_max_attempt`` (3), with torch's
    defaults, and anyrdzv's ``max_rounds`` (unset: no limit), ``health_check``
    (``package.module:function``, not imported here), ``health_check_timeout`` (60),
    ``rank_order`` (``natural``) and ``topology`` (none; an empty value is none too);
    other keys are ignored, as torch does.

    :param conf: ``"join_timeout=60,last_call_timeout=5"``, or ``{"join_timeout": "60"}``
    :raises ValueError: if the string does not parse, or a value is bad; the message
        names the key
    :raises TypeError: if a value of the mapping is not a ``str``
    :return: the keyword values, the defaults for the keys not given
    """
    options = parse_rendezvous_config(conf) if isinstance(conf, str) else dict(conf)
    values = DEFAULTS.copy()
    for key in _SECONDS:
        if options.get(key) is not None:
            values[key] = _number(key, options[key])
    if options.get(_INTEGER) is not None:
        values[_INTEGER] = int(_number(_INTEGER, options[_INTEGER]))
    _anyrdzv_keys(options, values)
    if options.get("rank_order") is not None:
        values["rank_order"] = check_rank_order(
            "the rendezvous configuration option 'rank_order'", options["rank_order"]
        )
    if options.get("topology"):
        values["topology"] = check_topology(
            "the rendezvous configuration option 'topology'", options["topology"]
        )
    return values


def _anyrdzv_keys(options: Mapping[str, object], values: ConfValues) -> None:
    """Read anyrdzv's own keys: ``max_rounds`` (an integer, at least 0),
    ``health_check`` (``package.module:function``, kept as text) and
    ``health_check_timeout`` (seconds)."""
    text = options.get("max_rounds")
    if text is not None:
        if not isinstance(text, str):
            raise wrong_type("the value of 'max_rounds'", text, "a str")
        try:
            rounds = int(text)
        except ValueError:
            rounds = -1
        if rounds < 0:
            raise ValueError(
                "The rendezvous configuration option 'max_rounds' must be an integer of at "
                f"least 0 (the rounds allowed after the first), got {echo(text)}"
            )
        values["max_rounds"] = rounds
    check = options.get("health_check")
    if check is not None:
        if not isinstance(check, str):
            raise wrong_type("the value of 'health_check'", check, "a str")
        if check.count(":") != 1 or not all(check.split(":")):
            raise ValueError(
                "The rendezvous configuration option 'health_check' must be "
                f"package.module:function, got {echo(check)}"
            )
        values["health_check"] = check
    timeout = options.get("health_check_timeout")
    if timeout is not None:
        values["health_check_timeout"] = _number("health_check_timeout", timeout)
