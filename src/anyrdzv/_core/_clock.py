"""The running event loop's own clock and sleep, resolved once for a hot loop.

``anyio.current_time()`` and ``anyio.sleep()`` look up the running backend on every
call, about 1 µs each: for a timer that ticks, that lookup was most of the cost of a
tick. A periodic loop calls :func:`current_clock` once, when it starts, and from then on
calls the backend's own functions. They are the very functions anyio calls, so time and
cancellation stay anyio's: ``loop.time`` and ``asyncio.sleep`` on asyncio (and uvloop),
``trio.current_time`` and ``trio.sleep`` on trio.

This module and ``_wakeup.py`` are the only two in anyrdzv that touch asyncio or trio.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


class Clock(NamedTuple):
    """The running loop's clock and sleep, as anyio's functions would reach them.

    :ivar now: the loop's time in seconds, as ``anyio.current_time()``
    :ivar sleep: sleep for that many seconds, as ``anyio.sleep()``
    :ivar checkpoint: yield once, as ``anyio.lowlevel.checkpoint()``
    """

    now: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]
    checkpoint: Callable[[], Awaitable[None]]


def _asyncio_checkpoint() -> Awaitable[None]:
    return asyncio.sleep(0)  # what anyio's checkpoint is on asyncio


def in_trio() -> bool:
    """Tell whether the calling thread is inside ``trio.run``.

    trio is looked up only if it was imported: asyncio programs never import it.
    """
    trio = sys.modules.get("trio")
    return trio is not None and bool(trio.lowlevel.in_trio_run())


def current_clock() -> Clock:
    """Return the running event loop's clock, sleep and checkpoint.

    :raises RuntimeError: if no asyncio or trio loop runs in this thread
    """
    if in_trio():
        import trio

        return Clock(trio.current_time, trio.sleep, trio.lowlevel.checkpoint)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError("no asyncio or trio event loop is running in this thread") from None
    return Clock(loop.time, asyncio.sleep, _asyncio_checkpoint)
