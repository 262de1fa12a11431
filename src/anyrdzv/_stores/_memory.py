"""MemoryStore: an in-process :class:`~anyrdzv.LeaseStore`, the async facade over a
:class:`~._keyspace.KeySpace`, for single-process agents and tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from .._checks import check_int
from ._keyspace import KeySpace
from ._memory_watch import Changes, MemoryWatch
from ._model import (
    CasResult,
    KeyValue,
    Lease,
    check_key,
    check_lease_id,
    check_mod_revision,
    check_optional_lease,
    check_prefix,
    check_put,
    check_ttl,
)
from ._txn import TxnResult, check_txn

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

    from typing_extensions import Self

    from ._protocol import WatchStream
    from ._txn import Compare, TxnOp


class MemoryStore:
    """An in-process :class:`LeaseStore`: the default for single-process agents and tests.

    Lease TTLs run on anyio's clock. Expiry needs no background task: every operation,
    and every waiting watch, expires the leases that are due, so a watcher sees a
    member leave as soon as its lease runs out. Revisions and watches behave like
    etcd's: a lease revoke deletes all its keys at one revision, and a watch can resume
    from any revision still in the history.

    Use one ``MemoryStore`` within one event loop. It needs no opening, but it is an
    async context manager as :class:`EtcdStore` is, so that code written for any store
    can say ``async with store:``. It holds nothing to release: entering gives the store
    itself, and may happen any number of times, nested or at once (several agents of one
    process sharing a store, as they share a cluster); leaving, or :meth:`aclose`, keeps
    every key, lease and watch, and the store stays usable.

    A key and value over 1.5 MiB together are refused, as etcd refuses them.

    :param history_limit: how many events to keep for watches to resume from; older
        ones are compacted away
    """

    def __init__(self, *, history_limit: int = 100_000) -> None:
        self._changes = Changes()
        self._keys = KeySpace(
            check_int("history_limit", history_limit, least=1), self._changes.notify
        )

    async def __aenter__(self) -> Self:
        await anyio.lowlevel.checkpoint()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Nothing to release: the keys, leases and watches stay, and so does the store's
        use (see the class)."""
        await anyio.lowlevel.checkpoint()

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

    async def keep_alive(self, lease: Lease | int) -> int:
        """Renew ``lease`` to its full TTL and return that TTL.

        :param lease: the lease, or its id
        :raises LeaseExpired: if the lease is gone
        :raises TypeError: if ``lease`` is neither a :class:`Lease` nor an ``int``
        """
        lease_id = check_lease_id(lease)
        keys, now = await self._ready()
        return keys.keep_alive(lease_id, now)

    async def time_to_live(self, lease: Lease | int) -> int | None:
        """Return the remaining time to live of ``lease``, in whole seconds (rounded
        down, as etcd does); or ``None`` if the lease is gone (expired, revoked or never
        granted). It does not renew the lease.

        :param lease: the lease, or its id (as :attr:`KeyValue.lease` gives it)
        :raises TypeError: if ``lease`` is neither a :class:`Lease` nor an int
        """
        lease_id = check_lease_id(lease)
        keys, now = await self._ready()
        return keys.time_to_live(lease_id, now)

    async def revoke(self, lease: Lease | int) -> None:
        """Revoke ``lease`` now, deleting its keys. Revoking a gone lease is not an error.

        :param lease: the lease, or its id
        :raises TypeError: if ``lease`` is neither a :class:`Lease` nor an ``int``
        """
        lease_id = check_lease_id(lease)
        keys, _ = await self._ready()
        keys.revoke(lease_id)

    # -- keys ----------------------------------------------------------------------------

    async def put(self, key: str, value: bytes, *, lease: Lease | int | None = None) -> int:
        """Set ``key`` to ``value``, under ``lease`` (a :class:`Lease` or its id) if given;
        return the new revision.

        :raises LeaseExpired: if ``lease`` is gone
        """
        check_put(key, value)
        lease_id = check_optional_lease(lease)
        keys, _ = await self._ready()
        return keys.put(key, value, lease_id).mod_revision

    async def get_prefix(self, prefix: str) -> tuple[dict[str, bytes], int]:
        """Return every key under ``prefix`` with its value, and the store revision."""
        check_prefix(prefix)
        keys, _ = await self._ready()
        return keys.values(prefix), keys.revision

    async def get(self, key: str) -> KeyValue | None:
        """Return ``key`` with its value and revisions, or ``None`` if it is absent."""
        check_key(key)
        keys, _ = await self._ready()
        return keys.get(key)

    async def get_prefix_kv(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Return every key under ``prefix``, sorted by key, and the revision read at."""
        check_prefix(prefix)
        keys, _ = await self._ready()
        return keys.range(prefix, True), keys.revision

    async def count_prefix(self, prefix: str) -> int:
        """Return how many keys are under ``prefix`` (see :meth:`LeaseStore.count_prefix`)."""
        check_prefix(prefix)
        keys, _ = await self._ready()
        return keys.count(prefix)

    async def delete(self, key: str) -> bool:
        """Delete ``key``; return whether it existed (see :meth:`LeaseStore.delete`)."""
        check_key(key)
        keys, _ = await self._ready()
        return keys.delete(key, False) > 0

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``, at one revision; return how many there were."""
        check_prefix(prefix)
        keys, _ = await self._ready()
        return keys.delete(prefix, True)

    async def compare_and_swap(
        self,
        key: str,
        value: bytes,
        *,
        expected_mod_revision: int,
        lease: Lease | int | None = None,
    ) -> CasResult:
        """Set ``key`` to ``value`` only if its ``mod_revision`` is
        ``expected_mod_revision`` (0: only if the key is absent), atomically, as
        :meth:`LeaseStore.compare_and_swap` says.

        :param lease: the lease to put the key under (a :class:`Lease` or its id), if any
        :raises LeaseExpired: if the comparison held but ``lease`` is gone; nothing is
            written
        :raises ValueError: if ``expected_mod_revision`` is negative, or the value too large
        """
        check_put(key, value)
        check_mod_revision("expected_mod_revision", expected_mod_revision)
        lease_id = check_optional_lease(lease)
        keys, _ = await self._ready()
        return keys.compare_and_swap(key, value, expected_mod_revision, lease_id)

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
    ) -> WatchStream:
        """Yield every change under ``prefix`` from ``start_revision`` on, in order.

        :param on_open: called when the watch is first waited on
        :raises StoreCompacted: if ``start_revision`` is older than the kept history
        :raises ValueError: if ``start_revision`` is negative, or ``prefix`` holds a lone
            surrogate, at once
        :raises TypeError: if an argument has the wrong type, at once
        """
        check_prefix(prefix)
        check_int("start_revision", start_revision, least=0)
        return MemoryWatch(self._keys, self._changes, prefix, start_revision, on_open)
