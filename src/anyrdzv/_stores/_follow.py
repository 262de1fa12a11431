"""follow(): the one resilient watch of a prefix, on any :class:`~anyrdzv.LeaseStore`.

Every reader that keeps a picture of some keys (the members of a group, a rendezvous
run, the keys a torch ``Store`` waits for) reads them, then watches from the revision
after the read. When the watch fails on a passing fault, it backs off, logs a WARNING
with the cause, and watches again from the revision after the last event it saw, so
that no event is lost or repeated; when the store has compacted that history, it reads
afresh (the caller's ``resync``). It gives up only after ``retry_for`` seconds in which
no watch was confirmed.

A caller whose own work on an event fails on a passing fault (a read the event calls
for, say) throws that :class:`~anyrdzv.StoreConnectionError` back in (``athrow``):
the fault counts as the watch's, and the event comes again after the backoff.
"""

from __future__ import annotations

import logging
import math
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from .._checks import check_number, echo
from .._core._delay import backoff, delay
from .._exceptions import StoreCompacted, StoreConnectionError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator

    from ._model import StoreEvent
    from ._protocol import LeaseStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resynced:
    """What :func:`follow` yields once ``resync`` has read the keys afresh: the events
    before ``revision`` are not coming, and the caller's picture is the read's.

    :ivar revision: the store revision the keys were read at
    """

    revision: int


def check_retry_for(retry_for: object) -> float:
    """Return ``retry_for`` as a float: a number of seconds at least 0, or infinity.

    :raises TypeError: if it is not a number
    :raises ValueError: if it is negative or NaN
    """
    seconds = check_number("retry_for", retry_for, expected="a number of seconds")
    if not seconds >= 0:
        raise ValueError(f"retry_for must be at least 0, got {echo(retry_for)}")
    return seconds


async def follow(
    store: LeaseStore,
    prefix: str,
    *,
    start_revision: int,
    what: str,
    resync: Callable[[], Awaitable[int]] | None = None,
    retry_for: float = math.inf,
    log: logging.Logger = logger,
    on_open: Callable[[], object] | None = None,
) -> AsyncGenerator[StoreEvent | Resynced, None]:
    """Yield every change under ``prefix`` from ``start_revision`` on, across passing
    faults.

    On a :class:`~anyrdzv.StoreConnectionError` (the stream broke, or ended) it waits a
    backoff, logs a WARNING with the cause and watches again from the revision after the
    last event. On :class:`~anyrdzv.StoreCompacted` it awaits ``resync()``, which reads
    the keys afresh and returns the revision it read at, yields :class:`Resynced`, and
    watches from there. Close it with ``contextlib.aclosing``.

    An item counts as seen once the caller asks for the next one. A
    :class:`~anyrdzv.StoreConnectionError` that the caller throws in at an item
    (``athrow``), because its own work on it failed, is handled as the watch's own: after
    the backoff, that item comes again (for :class:`Resynced`, after a new ``resync()``).

    :param store: the store
    :param prefix: the keys to follow
    :param start_revision: the first revision to see: the revision after a read
    :param what: what the watch follows, for log messages: ``"group 'g'"``
    :param resync: reads the keys afresh after a compaction, and returns the revision
        read at; without it, a compaction is raised
    :param retry_for: how long the store may fail, with no watch confirmed, before the
        last error is raised
    :param log: the logger of the module whose watch it is
    :param on_open: called each time the store confirms a watch
    :raises StoreConnectionError: once the store has failed for ``retry_for`` seconds
    :raises StoreCompacted: if the history was compacted and there is no ``resync``
    """
    next_revision = start_revision
    failing_since: float | None = None
    pauses: Iterator[float] | None = None
    stale = False  # the history was compacted: read afresh before watching again

    def opened() -> None:
        nonlocal failing_since, pauses
        if failing_since is not None:
            log.warning(
                "watch on %s resumed at revision %d after %.1f s",
                what,
                next_revision,
                anyio.current_time() - failing_since,
            )
        failing_since, pauses = None, None
        if on_open is not None:
            on_open()

    while True:
        try:
            if stale:
                assert resync is not None
                revision = await resync()
                yield Resynced(revision)
                stale, next_revision = False, revision + 1
            stream = store.watch_prefix(prefix, start_revision=next_revision, on_open=opened)
            async with aclosing(stream) as events:
                async for event in events:
                    yield event
                    next_revision = event.revision + 1
            raise StoreConnectionError("the watch stream ended")
        except StoreCompacted as exc:
            if resync is None:
                raise
            log.warning("watch on %s: %s; reading afresh", what, exc)
            stale = True
            continue
        except StoreConnectionError as exc:
            now = anyio.current_time()
            failing_since = now if failing_since is None else failing_since
            if now - failing_since > retry_for:
                raise
            pauses = pauses or backoff(0.05, 2.0)
            pause = next(pauses)
            left = retry_for - (now - failing_since)
            log.warning(
                "watch on %s failed (%s); retrying in %.2f s%s",
                what,
                exc,
                pause,
                f", for {max(left, 0):.1f} s more" if math.isfinite(left) else "",
            )
        await delay(pause)
