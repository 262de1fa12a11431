"""delay() and backoff(): torch's ``_delay`` on ``anyio.sleep``, always a checkpoint, and
capped exponential delays for retry loops."""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Literal

import anyio
import anyio.lowlevel

from .._checks import check_number, check_positive, type_name

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Sleeps shorter than this are skipped, as in torch's ``_delay``.
MIN_SLEEP = 0.01

#: How :func:`backoff` draws each delay below its bound: ``"full"``, ``"equal"`` or ``"none"``.
JitterMode = Literal["full", "equal", "none"]
_JITTER_MODES: tuple[str, ...] = ("full", "equal", "none")


def _check_rng(rng: object) -> random.Random | None:
    if rng is not None and not isinstance(rng, random.Random):
        raise TypeError(f"rng must be a random.Random or None, got {type_name(rng)}")
    return rng


def _pick_seconds(seconds: object, rng: random.Random | None) -> float:
    if isinstance(seconds, tuple):
        if len(seconds) != 2:
            raise TypeError(
                f"seconds must be a number or a (min, max) tuple, got a tuple of {len(seconds)}"
            )
        low = check_number("seconds[0]", seconds[0])
        high = check_number("seconds[1]", seconds[1])
        if math.isinf(low) or math.isinf(high):
            raise ValueError(f"seconds must be finite, got {seconds!r}")
        return (rng or random).uniform(low, high)
    seconds = check_number("seconds", seconds, expected="a number or a (min, max) tuple")
    if math.isinf(seconds):
        raise ValueError(f"seconds must be finite, got {seconds!r}")
    return float(seconds)


async def delay(seconds: float | tuple[float, float], *, rng: random.Random | None = None) -> None:
    """Sleep for ``seconds``, or for a random time within a ``(min, max)`` range.

    This follows torch's ``_delay``: a tuple means ``uniform(min, max)`` (a reversed
    tuple works too), and a time under 10 ms, negative or NaN does not sleep. Unlike
    torch, it never blocks the event loop, and it is always a checkpoint: even when it
    does not sleep, it yields to other tasks and can be cancelled.

    :param seconds: a number of seconds, or a ``(min, max)`` range to draw from
    :param rng: the random generator to draw with (default: the ``random`` module)
    :raises TypeError: if ``seconds`` is not a number or a pair of numbers
    :raises ValueError: if ``seconds`` is infinite
    """
    duration = _pick_seconds(seconds, _check_rng(rng))
    if duration >= MIN_SLEEP:  # False for NaN too
        await anyio.sleep(duration)
    else:
        await anyio.lowlevel.checkpoint()


def backoff(
    initial: float,
    maximum: float,
    *,
    multiplier: float = 2.0,
    jitter: JitterMode = "full",
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Return an endless iterator of capped, exponentially growing delays, in seconds.

    The n-th delay is drawn from ``t = min(maximum, initial * multiplier**n)``:

    - ``"full"``: ``uniform(0, t)``;
    - ``"equal"``: ``t/2 + uniform(0, t/2)``;
    - ``"none"``: ``t``.

    It is meant for retry loops::

        retry = backoff(0.1, 5.0)
        while not await try_once():
            await delay(next(retry))

    :param initial: the first delay bound, a positive number of seconds
    :param maximum: the cap, at least ``initial``
    :param multiplier: the growth factor, at least 1
    :param jitter: ``"full"``, ``"equal"`` or ``"none"``
    :param rng: the random generator to draw with (default: a new OS-seeded one)
    :raises TypeError: if an argument has the wrong type
    :raises ValueError: if an argument is out of range
    :return: an endless iterator of delays
    """
    first = check_positive("initial", initial)
    cap = check_positive("maximum", maximum)
    if cap < first:
        raise ValueError(f"maximum must be at least initial ({initial!r}), got {maximum!r}")
    factor = check_number("multiplier", multiplier)
    if not (math.isfinite(factor) and factor >= 1):
        raise ValueError(f"multiplier must be a finite number of at least 1, got {multiplier!r}")
    if jitter not in _JITTER_MODES:
        raise ValueError(f"jitter must be one of 'full', 'equal' or 'none', got {jitter!r}")
    return _backoff(first, cap, factor, jitter, _check_rng(rng) or random.Random())


def _backoff(
    bound: float, cap: float, factor: float, jitter: str, rng: random.Random
) -> Iterator[float]:
    # Grown step by step, not as initial * factor**n, so that it can never overflow.
    while True:
        if jitter == "full":
            yield rng.uniform(0.0, bound)
        elif jitter == "equal":
            yield bound / 2 + rng.uniform(0.0, bound / 2)
        else:
            yield bound
        bound = min(cap, bound * factor)
