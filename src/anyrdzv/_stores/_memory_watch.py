"""The watch of a :class:`~anyrdzv.MemoryStore`: it reads the store's history from a
revision on, and waits for the next change, or for the next lease to expire."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from .._exceptions import StoreCompacted

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._keyspace import KeySpace
    from ._model import StoreEvent


#: The position of a watch from ``start_revision=0`` before it is first waited on.
_FROM_NOW = -1


class Changes:
    """Wakes the watches of one store when its history grows."""

    def __init__(self) -> None:
        self._changed: anyio.Event | None = None

    def notify(self) -> None:
        """Wake every watch that waits."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait(self, deadline: float) -> None:
        """Wait for the next :meth:`notify`, or until ``deadline`` on anyio's clock."""
        if self._changed is None:
            self._changed = anyio.Event()
        changed = self._changed
        with anyio.move_on_after(deadline - anyio.current_time()):
            await changed.wait()


class MemoryWatch:
    """Every change under ``prefix`` from ``start_revision`` on, in order; what
    :meth:`~anyrdzv.MemoryStore.watch_prefix` returns.

    Leases expire while it waits: it wakes at the next deadline and expires what is due,
    so that a watcher sees a member leave as soon as its lease runs out.

    :param keys: the store's state
    :param changes: what wakes it when the history grows
    :param start_revision: the first revision to yield the changes of; 0 for the changes
        after the watch is first waited on, as etcd watches from its revision then
    :param on_open: called when the watch is first waited on
    """

    def __init__(
        self,
        keys: KeySpace,
        changes: Changes,
        prefix: str,
        start_revision: int,
        on_open: Callable[[], object] | None,
    ) -> None:
        self._keys = keys
        self._changes = changes
        self._prefix = prefix
        self._start_revision = start_revision
        self._on_open = on_open
        # None: compacted; unset for start_revision 0, until the watch is first waited on.
        self._position: int | None = (
            keys.history.position(start_revision) if start_revision else _FROM_NOW
        )

    def __aiter__(self) -> MemoryWatch:
        return self

    async def aclose(self) -> None:
        """Stop watching (nothing to release: the history stays in the store)."""
        await anyio.lowlevel.checkpoint()

    async def __anext__(self) -> StoreEvent:
        await anyio.lowlevel.checkpoint()
        if self._position == _FROM_NOW:
            self._keys.expire(anyio.current_time())
            self._position = self._keys.history.position(self._keys.revision + 1)
        if self._on_open is not None:
            on_open, self._on_open = self._on_open, None
            on_open()
        while True:
            deadline = self._keys.expire(anyio.current_time())
            history = self._keys.history
            if self._position is None or not history.holds(self._position):
                raise StoreCompacted(
                    f"revision {self._start_revision} has been compacted; "
                    f"the oldest kept is {history.oldest}",
                    history.oldest,
                )
            event, self._position = history.find(self._position, self._prefix)
            if event is not None:
                return event
            await self._changes.wait(deadline)
