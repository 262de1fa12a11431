"""The :class:`LeaseStore` protocol: what every store implements, and what the layers
above may call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, cast

from .._checks import echo, type_name

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from ._model import CasResult, KeyValue, Lease, StoreEvent
    from ._txn import Compare, TxnOp, TxnResult


class WatchStream(Protocol):
    """What :meth:`LeaseStore.watch_prefix` returns: an async iterator of events that
    can be closed early (``contextlib.aclosing`` works with it)."""

    def __aiter__(self) -> AsyncIterator[StoreEvent]: ...

    def __anext__(self) -> Awaitable[StoreEvent]: ...

    def aclose(self) -> Awaitable[object]:
        """Stop watching and release the stream."""
        ...


class LeaseStore(Protocol):
    r"""An async key-value store with leases, watches, revisions and transactions, with
    etcd's semantics.

    :class:`MemoryStore` and :class:`EtcdStore` implement it, and pass one contract
    test suite. Keys and prefixes are ``str``\\ s that UTF-8 can encode; both stores
    refuse one with a lone surrogate with a ``ValueError``, before any I/O. Both are
    async context managers too, but the protocol does not ask for it, so that a store
    with these methods alone is one. Heartbeats and the members functions need only :meth:`grant`,
    :meth:`keep_alive`, :meth:`revoke`, :meth:`put`, :meth:`get_prefix` and
    :meth:`watch_prefix`, and a store passed to them needs only those.

    Every parameter that takes a lease takes a :class:`Lease` or its id, an ``int``, as
    :attr:`KeyValue.lease` gives it.
    """

    async def grant(self, ttl: int) -> Lease:
        """Grant a lease that lives ``ttl`` seconds unless kept alive."""
        ...

    async def keep_alive(self, lease: Lease | int) -> int:
        """Renew ``lease`` (a :class:`Lease` or its id) and return its remaining time to
        live, in seconds.

        :raises LeaseExpired: if the lease is gone
        """
        ...

    async def revoke(self, lease: Lease | int) -> None:
        """Revoke ``lease`` (a :class:`Lease` or its id) now, deleting its keys. Revoking
        a gone lease is not an error."""
        ...

    async def time_to_live(self, lease: Lease | int) -> int | None:
        """Return the remaining time to live of ``lease`` (a :class:`Lease` or its id),
        in whole seconds, rounded down; or ``None`` if the lease is gone (expired,
        revoked or never granted). It does not renew the lease."""
        ...

    async def put(self, key: str, value: bytes, *, lease: Lease | int | None = None) -> int:
        """Set ``key`` to ``value``, under ``lease`` (a :class:`Lease` or its id) if given;
        return the new revision.

        :raises LeaseExpired: if ``lease`` is gone
        """
        ...

    async def get_prefix(self, prefix: str) -> tuple[dict[str, bytes], int]:
        """Return every key under ``prefix`` with its value, and the store revision."""
        ...

    def watch_prefix(
        self,
        prefix: str,
        *,
        start_revision: int,
        on_open: Callable[[], object] | None = None,
    ) -> WatchStream:
        """Yield every change under ``prefix`` from ``start_revision`` on, in order.

        ``start_revision=0`` means from now on: the changes after the store confirms the
        watch, as etcd means it. ``on_open``, if given, is called each time the store
        confirms the watch (for etcd, again whenever the stream is made anew): a caller
        can tell a watch that works but is quiet from one that keeps failing.

        :raises StoreCompacted: if ``start_revision`` is older than the kept history
        :raises StoreConnectionError: if the stream breaks; resume from the next revision
        """
        ...

    async def get(self, key: str) -> KeyValue | None:
        """Return ``key`` with its value and revisions, or ``None`` if it is absent."""
        ...

    async def get_prefix_kv(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Return every key under ``prefix``, sorted by key, and the revision read at."""
        ...

    async def count_prefix(self, prefix: str) -> int:
        """Return how many keys are under ``prefix``, without reading them."""
        ...

    async def delete(self, key: str) -> bool:
        """Delete ``key``; return whether it existed. Deleting an absent key changes
        nothing, not even the store revision.
        """
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``, at one revision; return how many there were."""
        ...

    async def compare_and_swap(
        self,
        key: str,
        value: bytes,
        *,
        expected_mod_revision: int,
        lease: Lease | int | None = None,
    ) -> CasResult:
        """Set ``key`` to ``value`` only if its ``mod_revision`` is
        ``expected_mod_revision`` (0: only if the key is absent), atomically.

        :param lease: the lease to put the key under (a :class:`Lease` or its id), if any
        :return: whether it was written, with the key as written, or as it is now
        :raises LeaseExpired: if the comparison held but ``lease`` is gone; nothing is
            written
        :raises ValueError: if ``expected_mod_revision`` is negative, or the value too large
        """
        ...

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[TxnOp] = (),
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        """Run a transaction, atomically: if every comparison in ``compare`` holds, run
        the operations of ``success``, else those of ``failure``, in order.

        All the writes of the branch that runs happen at one new revision; a txn that
        changes nothing leaves the revision as it is. A :class:`Get` sees the writes
        before it in its branch. An absent key's version, revisions and lease compare as
        0, and a comparison of its value is false. These are etcd's semantics.

        :param compare: the comparisons, at most 128
        :param success: the operations to run if they all hold, at most 128
        :param failure: the operations to run if one does not, at most 128
        :return: which branch ran, the revision after the txn, and each operation's answer
        :raises LeaseExpired: if a :class:`Put` of the branch that runs is under a gone
            lease; nothing is written
        :raises ValueError: if there are too many comparisons or operations, if a branch
            writes one key twice (two puts, or a put and a delete that covers it), or if
            the txn is over 1.5 MiB; checked before anything is sent or written
        :raises TypeError: if an argument is not a sequence of the right kind
        """
        ...


# What Heartbeat and the members functions call: check_store() checks these alone, so
# that a store made for heartbeats (a test fake, say) needs nothing else.
_LEASE_STORE_METHODS = ("grant", "keep_alive", "revoke", "put", "get_prefix", "watch_prefix")


def check_store(store: object) -> LeaseStore:
    """Return ``store`` if it has the methods of a :class:`LeaseStore` that heartbeats and
    the members functions call, else raise a ``TypeError``.

    Only those methods are checked (not the key-value ones, nor :meth:`LeaseStore.txn`),
    so a store written for heartbeats alone passes.
    """
    if isinstance(store, type):  # the class, not an instance: its methods are callable too
        raise TypeError(
            f"store must be a LeaseStore instance, such as MemoryStore(), "
            f"got the class {store.__qualname__}"
        )
    missing = [name for name in _LEASE_STORE_METHODS if not callable(getattr(store, name, None))]
    if missing:
        lacks = (
            f" (it has no {', '.join(name + '()' for name in missing)})"
            if len(missing) < len(_LEASE_STORE_METHODS)
            else ""
        )
        raise TypeError(
            f"store must be a LeaseStore such as MemoryStore or EtcdStore, "
            f"got {type_name(store)} {echo(store)}{lacks}"
        )
    return cast("LeaseStore", store)
