"""WriteBatcher: the puts of many nodes of one process, sent together as one txn.

A thousand nodes in one process that join at once would send a thousand puts, each a
request of its own and, on etcd, a raft entry of its own. The nodes of a run share a
:class:`WriteBatcher` instead: one write is in flight at a time; the first goes out at
once (after the callers woken with it have queued), and the puts that come while it
flies go out together in the next txn, up to etcd's 128 operations.

A batch is all or nothing. When it cannot be written as one (a key is not absent as
asked, a lease is gone, the store failed or the sender was cancelled), each of its
callers is told to write alone, with its own error handling: a put of the same value
twice does no harm.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Literal, final

import anyio
import anyio.lowlevel

from .._stores._model import MAX_VALUE_BYTES
from .._stores._txn import MAX_TXN_OPS, TXN_ITEM_BYTES, Compare, Put

if TYPE_CHECKING:
    from .._stores._protocol import LeaseStore

logger = logging.getLogger(__name__)

#: The most bytes of keys and values one batch holds: a put bigger than this goes alone.
MAX_BATCH_BYTES = MAX_VALUE_BYTES // 2

_State = Literal["queued", "sending", "turn", "done", "alone"]


class _Write:
    __slots__ = ("absent", "event", "put", "revision", "size", "state")

    def __init__(self, put: Put, absent: bool) -> None:
        self.put = put
        self.absent = absent
        self.size = len(put.key) * 4 + len(put.value) + 2 * TXN_ITEM_BYTES
        self.state: _State = "queued"
        self.revision = 0
        self.event = anyio.Event()


@final
class WriteBatcher:
    """Send the puts of concurrent callers together, one txn at a time.

    :param store: the store
    """

    def __init__(self, store: LeaseStore) -> None:
        self._store = store
        self._queue: deque[_Write] = deque()
        self._sending = False  # a caller sends a batch, or has the turn to
        #: how many puts went out in txns of more than one put
        self.batched = 0

    async def put(self, put: Put, *, absent: bool = False) -> int | None:
        """Write ``put`` in a txn with others' puts; with ``absent``, only if its key is
        absent.

        :return: the revision of the write; or ``None`` if it was not written with
            others, and the caller must write it alone
        """
        me = _Write(put, absent)
        self._queue.append(me)
        if self._sending:
            try:
                await me.event.wait()
            except BaseException:
                if me.state in ("queued", "turn"):
                    self._queue.remove(me)
                if me.state == "turn":
                    self._pass_turn()  # to the next in the queue, which would wait forever
                raise
            if me.state == "done":
                return me.revision
            if me.state == "alone":
                return None
        else:
            self._sending = True
        try:
            # The callers woken with this one (by one watch event) queue up first.
            await anyio.lowlevel.checkpoint()
            await self._send()
        finally:
            if me.state in ("queued", "turn"):
                self._queue.remove(me)  # cancelled before it was sent
            self._pass_turn()
        return me.revision if me.state == "done" else None

    def _pass_turn(self) -> None:
        if self._queue:
            first = self._queue[0]
            first.state = "turn"
            first.event.set()
        else:
            self._sending = False

    async def _send(self) -> None:
        """Send the first puts of the queue (the caller's first) as one txn."""
        batch: list[_Write] = []
        size = 0
        keys: set[str] = set()
        queue = self._queue
        while queue and len(batch) < MAX_TXN_OPS:
            write = queue[0]
            if batch and (size + write.size > MAX_BATCH_BYTES or write.put.key in keys):
                break
            queue.popleft()
            write.state = "sending"
            batch.append(write)
            size += write.size
            keys.add(write.put.key)
        if len(batch) == 1:
            # The caller's own: its errors are the caller's.
            write = batch[0]
            put = write.put
            if write.absent:
                result = await self._store.txn([Compare.create_revision(put.key, "==", 0)], [put])
                write.state = "done" if result.succeeded else "alone"
                write.revision = result.revision
            else:
                write.revision = await self._store.put(put.key, put.value, lease=put.lease)
                write.state = "done"
            return
        revision = 0
        try:
            result = await self._store.txn(
                [Compare.create_revision(w.put.key, "==", 0) for w in batch if w.absent],
                [w.put for w in batch],
            )
            if result.succeeded:
                revision = result.revision
                self.batched += len(batch)
        except Exception as exc:  # noqa: BLE001 - each caller writes alone, and sees its own error
            logger.debug("a batch of %d puts failed; each is sent alone: %s", len(batch), exc)
        finally:
            for write in batch:
                write.state = "done" if revision else "alone"
                write.revision = revision
                write.event.set()
