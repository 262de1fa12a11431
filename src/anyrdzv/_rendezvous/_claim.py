"""Claim: a node's claim of its name in a run, the one put of its heartbeat.

A node's heartbeat key (``<prefix>/<run_id>/members/<node>``) is put only if it is
absent, so that a second live node with the same name is refused, with a
:class:`~anyrdzv.RendezvousError`, and the first one's key and lease are left alone. The
put goes through the run's :class:`~._write_batch.WriteBatcher` with the other nodes' of
this process, and alone when the batch cannot take it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

from .._exceptions import RendezvousError, StoreConnectionError
from .._stores._txn import Compare, Get, GetResult, Put

if TYPE_CHECKING:
    from .._stores._model import Lease
    from .._stores._protocol import LeaseStore
    from ._write_batch import WriteBatcher

#: How many times a node tries to claim its name when the store fails mid-request.
CLAIM_TRIES = 3


@final
class Claim:
    """The put of a node's heartbeat key, as a put-if-absent: call it with the node's
    lease, as :class:`~anyrdzv._membership._heartbeat.MemberLease` does.

    :param store: the store
    :param key: the node's heartbeat key
    :param value: what the key holds
    :param run_id: the run, for the error message
    :param node: the node, for the error message
    """

    def __init__(self, store: LeaseStore, key: str, value: bytes, run_id: str, node: str) -> None:
        self._store = store
        self._key = key
        self._value = value
        self._run_id = run_id
        self._node = node
        #: the revision at which the key was put, once it is
        self.revision = 0
        #: the batcher the put goes through, if any
        self.batcher: WriteBatcher | None = None

    def _taken(self, holder: int | None) -> RendezvousError:
        lease = "no lease" if holder is None else f"lease {holder}"
        return RendezvousError(
            f"node {self._node!r} of run {self._run_id!r} is taken: a live node holds "
            f"its key {self._key!r} ({lease}); node names must be unique per run"
        )

    async def __call__(self, lease: Lease) -> int:
        """Put the key under ``lease`` if it is absent.

        :raises RendezvousError: if a live node holds the key
        :raises StoreConnectionError: if the store failed every try
        :return: the revision of the put
        """
        self.revision = await self._put(lease)
        return self.revision

    async def _put(self, lease: Lease) -> int:
        key, value = self._key, self._value
        if self.batcher is not None:
            revision = await self.batcher.put(Put(key, value, lease=lease), absent=True)
            if revision is not None:
                return revision
        for attempt in range(1, CLAIM_TRIES + 1):
            try:
                result = await self._store.txn(
                    [Compare.create_revision(key, "==", 0)],
                    [Put(key, value, lease=lease)],
                    [Get(key)],
                )
            except StoreConnectionError:
                # The txn is not retried by the store: see whether it went through.
                if attempt == CLAIM_TRIES:
                    raise
                kv = await self._store.get(key)
                if kv is None:
                    continue
                if kv.lease != lease.id:
                    raise self._taken(kv.lease) from None
                return kv.mod_revision
            if result.succeeded:
                return result.revision
            found = result.results[0]
            kv = found.kvs[0] if isinstance(found, GetResult) and found.kvs else None
            if kv is not None and kv.lease == lease.id:
                # A batch with this put went through, though its sender was cancelled.
                return kv.mod_revision
            raise self._taken(None if kv is None else kv.lease)
        raise AssertionError("unreachable")  # pragma: no cover
