"""A thread-safe, non-blocking "call this soon on the event loop".

anyio offers ``from_thread.run_sync``, which blocks the calling thread until the loop
has run the function. ``PeriodicTimer.cancel()`` must never block: it is called from
other threads and from garbage-collection finalizers, possibly after the loop has
closed. So this one capability reaches for the running backend's own primitive. This
module and ``_clock.py`` are the only two in anyrdzv that touch asyncio or trio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ._clock import in_trio

CallSoon = Callable[[Callable[[], object]], None]


def current_call_soon() -> CallSoon:
    """Return a function that schedules a callback on the current event loop.

    The returned function may be called from any thread, never blocks, and silently
    does nothing once the loop has finished. Call this from inside a running loop.

    :raises RuntimeError: if no asyncio or trio loop runs in this thread
    """
    if in_trio():
        import trio

        token = trio.lowlevel.current_trio_token()

        def call_soon_trio(callback: Callable[[], object]) -> None:
            try:
                token.run_sync_soon(callback)
            except trio.RunFinishedError:
                pass

        return call_soon_trio

    loop = asyncio.get_running_loop()

    def call_soon_asyncio(callback: Callable[[], object]) -> None:
        try:
            loop.call_soon_threadsafe(callback)
        except RuntimeError:  # the loop is closed
            pass

    return call_soon_asyncio
