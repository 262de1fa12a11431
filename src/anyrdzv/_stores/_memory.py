"""MemoryStore: an in-process :class:`~anyrdzv.LeaseStore`, the async facade over a
:class:`~._keyspace.KeySpace`, for single-process agents and tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from .._checks import check_int, check_str
from ._keyspace import KeySpace
from ._memory_watch import Changes, MemoryWatch
from ._model import (
    CasResult,
    KeyValue,
    Lease,
    check_key,
    check_lease_id,
    check_mod_revision,
    check_put,
    check_ttl,
)
from ._txn import TxnResult, check_txn

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ._txn import Compare, TxnOp


class MemoryStore:
    """An in-process :class:`LeaseStore`: the default for single-process agents and tests.

    Lease TTLs run on anyio's clock. Expiry needs no background task: every operation,
    and every waiting watch, expires the leases that are due, so a watcher sees a
    member leave as soon as its lease runs out. Revisions and watches behave like
    etcd's: a lease revoke deletes all its keys at one revision, and a watch can resume
    from any revision still in the history.

    Use one ``MemoryStore`` within one event loop.

    :param history_limit: how many events to keep for watches to resume from; older
        ones are compacted away

    .. versionchanged:: 0.2
       Keys carry etcd's create and mod revisions and versions; :meth:`get`,
       :meth:`get_prefix_kv`, :meth:`delete`, :meth:`delete_prefix`,
       :meth:`compare_and_swap` and :meth:`txn` answer as etcd does, and watch events
       carry the key's create revision, version and lease. A key and value over 1.5 MiB
       together (:data:`MAX_VALUE_BYTES`) are refused, as etcd refuses them.
    """

    def __init__(self, *, history_limit: int = 100_000) -> None:
        self._changes = Changes()
        self._keys = KeySpace(
            check_int("history_limit", history_limit, least=1), self._changes.notify
        )

    async def _ready(self) -> tuple[KeySpace, float]:
        """A checkpoint; then the state, with every lease that is due expired, and the
        time on anyio's clock."""
        await anyio.lowlevel.checkpoint()
        now = anyio.current_time()
        self._keys.expire(now)
        return self._keys, now

    # -- leases --------------------------------------------------------------------------

    async def grant(self, ttl: int) -> Lease:
        """Grant a lease that lives ``ttl`` seconds unless kept alive.

        :raises ValueError: if ``ttl`` is less than 1
        """
        check_ttl(ttl)
        keys, now = await self._ready()
        return keys.grant(ttl, now)

    async def keep_alive(self, lease: Lease) -> int:
        """Renew ``lease`` to its full TTL and return that TTL.

        :raises LeaseExpired: if the lease is gone
        """
        keys, now = await self._ready()
        return keys.keep_alive(lease.id, now)

    async def time_to_live(self, lease: Lease | int) -> int | None:
        """Return the remaining time to live of ``lease``, in whole seconds (rounded
        down, as etcd does); or ``None`` if the lease is gone (expired, revoked or never
        granted). It does not renew the lease. It is not part of
        :class:`~anyrdzv.LeaseStore`.

        :param lease: the lease, or its id (as :attr:`KeyValue.lease` gives it)
        :raises TypeError: if ``lease`` is neither a :class:`Lease` nor an int

        .. versionadded:: 0.2
        """
        lease_id = check_lease_id(lease)
        keys, now = await self._ready()
        return keys.time_to_live(lease_id, now)

    async def revoke(self, lease: Lease) -> None:
        """Revoke ``lease`` now, deleting its keys."""
        keys, _ = await self._ready()
        keys.revoke(lease.id)

    # -- keys ----------------------------------------------------------------------------

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        """Set ``key`` to ``value``, under ``lease`` if given; return the new revision.

        :raises LeaseExpired: if ``lease`` is gone
        """
        check_put(key, value)
        keys, _ = await self._ready()
        return keys.put(key, value, lease).mod_revision

    async def get_prefix(self, prefix: str) -> tuple[dict[str, bytes], int]:
        """Return every key under ``prefix`` with its value, and the store revision."""
        check_str("prefix", prefix)
        keys, _ = await self._ready()
        return keys.values(prefix), keys.revision

    async def get(self, key: str) -> KeyValue | None:
        """Return ``key`` with its value and revisions, or ``None`` if it is absent.

        .. versionadded:: 0.2
        """
        check_key(key)
        keys, _ = await self._ready()
        return keys.get(key)

    async def get_prefix_kv(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Return every key under ``prefix``, sorted by key, and the revision read at.

        .. versionadded:: 0.2
        """
        check_str("prefix", prefix)
        keys, _ = await self._ready()
        return keys.range(prefix, True), keys.revision

    async def count_prefix(self, prefix: str) -> int:
        """Return how many keys are under ``prefix`` (see :meth:`LeaseStore.count_prefix`)."""
        check_str("prefix", prefix)
        keys, _ = await self._ready()
        return keys.count(prefix)

    async def delete(self, key: str) -> bool:
        """Delete ``key``; return whether it existed (see :meth:`LeaseStore.delete`).

        .. versionadded:: 0.2
        """
        check_key(key)
        keys, _ = await self._ready()
        return keys.delete(key, False) > 0

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``, at one revision; return how many there were.

        .. versionadded:: 0.2
        """
        check_str("prefix", prefix)
        keys, _ = await self._ready()
        return keys.delete(prefix, True)

    async def compare_and_swap(
        self,
        key: str,
        value: bytes,
        *,
        expected_mod_revision: int,
        lease: Lease | None = None,
    ) -> CasResult:
        """Set ``key`` to ``value`` only if its ``mod_revision`` is
        ``expected_mod_revision`` (0: only if the key is absent), atomically, as
        :meth:`LeaseStore.compare_and_swap` says.

        :raises LeaseExpired: if the comparison held but ``lease`` is gone; nothing is
            written
        :raises ValueError: if ``expected_mod_revision`` is negative, or the value too large

        .. versionadded:: 0.2
        """
        check_put(key, value)
        check_mod_revision("expected_mod_revision", expected_mod_revision)
        keys, _ = await self._ready()
        return keys.compare_and_swap(key, value, expected_mod_revision, lease)

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[TxnOp] = (),
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        """Run a transaction, atomically, with etcd's semantics, as :meth:`LeaseStore.txn`
        says: if every comparison in ``compare`` holds, run the operations of
        ``success``, else those of ``failure``, in order, at one new revision.

        :raises LeaseExpired: if a :class:`Put` of the branch that runs is under a gone
            lease; nothing is written
        :raises ValueError: if the txn is too large, or a branch writes a key twice
        :raises TypeError: if an argument is not a sequence of the right kind

        .. versionadded:: 0.2
        """
        compares, on_success, on_failure = check_txn(compare, success, failure)
        keys, _ = await self._ready()
        return keys.txn(compares, on_success, on_failure)

    def watch_prefix(
        self,
        prefix: str,
        *,
        start_revision: int,
        on_open: Callable[[], object] | None = None,
    ) -> MemoryWatch:
        """Yield every change under ``prefix`` from ``start_revision`` on, in order.

        :param on_open: called when the watch is first waited on
        :raises StoreCompacted: if ``start_revision`` is older than the kept history
        """
        check_str("prefix", prefix)
        return MemoryWatch(self._keys, self._changes, prefix, start_revision, on_open)
