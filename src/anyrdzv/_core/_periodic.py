"""periodic(): an async iterator of ticks, fixed-delay or drift-free fixed-rate, with
optional jitter, on the running loop's own clock."""

from __future__ import annotations

import datetime
import math
import random
from dataclasses import dataclass
from typing import Literal

from .._checks import check_number, type_name
from ._clock import Clock, current_clock

#: The schedule of :func:`periodic`: ``"fixed-delay"`` or ``"fixed-rate"``.
Schedule = Literal["fixed-delay", "fixed-rate"]
#: When the first tick of :func:`periodic` comes: one interval after the start, or at once.
FirstTick = Literal["after-interval", "now"]


def check_interval(interval: object) -> float:
    """Return ``interval`` in seconds: a positive, finite number or ``timedelta``."""
    if isinstance(interval, datetime.timedelta):
        seconds = interval.total_seconds()
    else:
        seconds = check_number(
            "interval", interval, expected="a number of seconds or a datetime.timedelta"
        )
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"interval must be positive and finite, got {interval!r}")
    return seconds


@dataclass(slots=True)
class Tick:
    """One tick of :func:`periodic`.

    :ivar index: 0 for the first tick, then 1, 2, ...
    :ivar scheduled: when the tick was due, on ``anyio.current_time()``'s clock
    :ivar actual: when it was delivered
    :ivar missed: how many slots were skipped just before this tick (fixed-rate only)
    """

    index: int
    scheduled: float
    actual: float
    missed: int

    @property
    def lateness(self) -> float:
        """How late the tick was delivered, in seconds."""
        return self.actual - self.scheduled


class Periodic:
    """The async iterator that :func:`periodic` returns: the ticks of one loop.

    :param interval: seconds, or a ``timedelta``; positive and finite
    :param schedule: ``"fixed-delay"`` or ``"fixed-rate"``
    :param jitter: a fraction of the interval in ``[0, 1)``
    :param first: ``"after-interval"`` or ``"now"``: when the first tick comes
    :param rng: the random generator for jitter, or ``None`` for a new OS-seeded one
    :raises TypeError: if an argument has the wrong type
    :raises ValueError: if an argument is out of range
    """

    __slots__ = (
        "_clock",
        "_fixed_rate",
        "_index",
        "_interval",
        "_now_first",
        "_origin",
        "_rng",
        "_slot",
        "_spread",
    )

    def __init__(
        self,
        interval: float | datetime.timedelta,
        schedule: Schedule,
        jitter: float,
        first: FirstTick,
        rng: random.Random | None,
    ) -> None:
        self._interval = check_interval(interval)
        if schedule not in ("fixed-delay", "fixed-rate"):
            raise ValueError(f"schedule must be 'fixed-delay' or 'fixed-rate', got {schedule!r}")
        spread = check_number("jitter", jitter)
        if not 0 <= spread < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
        if first not in ("after-interval", "now"):
            raise ValueError(f"first must be 'after-interval' or 'now', got {first!r}")
        if rng is not None and not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random or None, got {type_name(rng)}")
        self._fixed_rate = schedule == "fixed-rate"
        self._spread = spread * self._interval
        self._now_first = first == "now"
        # A generator only when there is jitter to draw: a Random holds ~2.5 KB of state.
        self._rng = (rng or random.Random()) if spread else None
        self._index = 0
        self._origin = 0.0
        self._slot = 0  # fixed-rate: the grid slot of the last tick
        self._clock: Clock | None = None  # the running loop's, from the first tick on

    def __aiter__(self) -> Periodic:
        return self

    async def __anext__(self) -> Tick:
        clock = self._clock
        if clock is None:
            clock = self._clock = current_clock()
        now = clock.now()
        interval = self._interval
        missed = 0
        if self._fixed_rate:
            if self._index == 0:
                self._origin = now
                self._slot = 0 if self._now_first else 1
            else:
                # The next slot on the grid that has not passed; the ones that passed
                # while the body overran are skipped, not delivered in a burst.
                due = max(self._slot + 1, math.ceil((now - self._origin) / interval))
                missed = due - self._slot - 1
                self._slot = due
            base = self._origin + self._slot * interval  # multiplied, so it never drifts
        elif self._index == 0 and self._now_first:
            base = now
        else:
            base = now + interval
        scheduled = base + self._rng.uniform(0.0, self._spread) if self._rng else base
        if scheduled > now:
            await clock.sleep(scheduled - now)
        else:
            await clock.checkpoint()
        tick = Tick(self._index, scheduled, clock.now(), missed)
        self._index += 1
        return tick


def periodic(
    interval: float | datetime.timedelta,
    *,
    schedule: Schedule = "fixed-delay",
    jitter: float = 0.0,
    first: FirstTick = "after-interval",
    rng: random.Random | None = None,
) -> Periodic:
    """Iterate at a regular interval, for loops that own their body.

    ::

        async for tick in periodic(5):
            await send_heartbeat()

    - ``"fixed-delay"`` (torch's schedule): each tick comes one interval after the
      body of the previous one finished.
    - ``"fixed-rate"``: ticks stay on a drift-free grid, ``start + k * interval``. When
      the body overruns, the slots it missed are skipped (``tick.missed`` counts them),
      and no burst of catch-up ticks follows.

    ``jitter`` offsets each tick by up to that fraction of the interval, within its
    slot, without moving the grid, so that many nodes spread their heartbeats.

    :param interval: seconds, or a ``timedelta``; positive and finite
    :param schedule: ``"fixed-delay"`` or ``"fixed-rate"``
    :param jitter: a fraction of the interval in ``[0, 1)``
    :param first: ``"after-interval"`` or ``"now"``: when the first tick comes
    :param rng: the random generator for jitter (default: a new OS-seeded one)
    :raises TypeError: if an argument has the wrong type
    :raises ValueError: if an argument is out of range
    :return: an async iterator of :class:`Tick`
    """
    return Periodic(interval, schedule, jitter, first, rng)
