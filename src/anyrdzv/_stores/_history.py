"""The history of a :class:`~anyrdzv.MemoryStore`: the latest events, in revision order,
for watches to read from any revision still kept; older ones are compacted away, as etcd
compacts its history.

Pure: no I/O, no event loop.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._model import StoreEvent


class History:
    """The last ``limit`` events, each at a position that never changes.

    Positions count every event ever recorded, from 0: a reader keeps one, and reads on
    from it for as long as the history still holds it.

    :param limit: how many events to keep, at least 1
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._events: list[StoreEvent] = []
        self._revisions: list[int] = []
        self._base = 0  # the position of _events[0]
        self._compacted_through = 0  # the newest revision no longer kept

    @property
    def oldest(self) -> int:
        """The revision of the oldest event kept, or 0 if there is none."""
        return self._revisions[0] if self._revisions else 0

    def record(self, events: Iterable[StoreEvent]) -> None:
        """Add ``events``, which come after every event recorded, and compact what is over
        the limit."""
        for event in events:
            self._events.append(event)
            self._revisions.append(event.revision)
        excess = len(self._events) - self._limit
        if excess > 0:
            self._compacted_through = self._revisions[excess - 1]
            del self._events[:excess]
            del self._revisions[:excess]
            self._base += excess

    def position(self, revision: int) -> int | None:
        """The position of the first event at ``revision`` or later (the end, if there is
        none yet), or ``None`` if events of ``revision`` may have been compacted away."""
        if revision <= self._compacted_through:
            return None
        return self._base + bisect.bisect_left(self._revisions, revision)

    def holds(self, position: int) -> bool:
        """Whether the history still holds ``position`` and every event after it."""
        return position >= self._base

    def find(self, position: int, prefix: str) -> tuple[StoreEvent | None, int]:
        """The first event at ``position`` or after whose key starts with ``prefix``, and
        the position after it; or ``None`` and the end, if there is no such event yet.

        :raises IndexError: if the history no longer holds ``position``
        """
        if not self.holds(position):
            raise IndexError(f"position {position} has been compacted away")
        for index in range(position - self._base, len(self._events)):
            event = self._events[index]
            if event.key.startswith(prefix):
                return event, self._base + index + 1
        return None, self._base + len(self._events)
