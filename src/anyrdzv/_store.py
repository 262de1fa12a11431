from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

from ._exceptions import (
    LeaseExpired,
    StoreCompacted,
    StoreConnectionError,
    StoreError,
    StorePermissionError,
    StoreProtocolError,
)
from ._util import check_str, type_name

# The errors live in _exceptions; these names stay importable from here too.
__all__ = (
    "MAX_VALUE_BYTES",
    "CasResult",
    "EventType",
    "KeyValue",
    "KeyValueStore",
    "Lease",
    "LeaseExpired",
    "LeaseStore",
    "StoreCompacted",
    "StoreConnectionError",
    "StoreError",
    "StoreEvent",
    "StorePermissionError",
    "StoreProtocolError",
    "WatchStream",
    "check_key",
    "check_mod_revision",
    "check_put",
    "check_store",
    "check_ttl",
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from ._txn import Compare, TxnOp, TxnResult


def check_ttl(ttl: object) -> int:
    """Return ``ttl`` if it is a whole number of seconds, at least 1."""
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise TypeError(f"ttl must be an int number of seconds, got {type(ttl).__qualname__}")
    if ttl < 1:
        raise ValueError(f"ttl must be at least 1 second, got {ttl}")
    return ttl


#: The most bytes a key and its value may hold together. etcd refuses a request over
#: 1.5 MiB (its default ``--max-request-bytes``, 1,572,864) with "request is too large";
#: 4 KiB are left for the rest of the request, so that every store refuses the same
#: writes, up front, with the same error.
MAX_VALUE_BYTES = 1_572_864 - 4096


def check_key(key: object) -> str:
    """Return ``key`` if it is a non-empty ``str``: etcd has no empty key.

    .. versionadded:: 0.2
    """
    text = check_str("key", key)
    if not text:
        raise ValueError("key must not be empty")
    return text


def check_put(key: object, value: object) -> None:
    """Check the arguments of :meth:`LeaseStore.put`: a non-empty ``str`` key and a ``bytes`` value,
    together no larger than :data:`MAX_VALUE_BYTES`."""
    text = check_key(key)
    if not isinstance(value, bytes):
        raise TypeError(f"value must be bytes, got {type(value).__qualname__}")
    if len(value) + 4 * len(text) > MAX_VALUE_BYTES:  # UTF-8 takes at most 4 bytes a character
        size = len(value) + len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_VALUE_BYTES:
            raise ValueError(
                f"value is too large: the key and value hold {size} bytes, and a store "
                f"takes at most {MAX_VALUE_BYTES} (etcd refuses requests over 1.5 MiB)"
            )


def check_mod_revision(name: str, revision: object) -> int:
    """Return ``revision`` if it is an ``int`` of at least 0 (``bool`` excluded)."""
    if isinstance(revision, bool) or not isinstance(revision, int):
        raise TypeError(f"{name} must be an int, got {type_name(revision)} {revision!r:.200}")
    if revision < 0:
        raise ValueError(f"{name} must be at least 0, got {revision}")
    return revision


class EventType(enum.Enum):
    """What happened to a key."""

    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True)
class Lease:
    """A lease granted by a store. Keys put under it vanish when it expires.

    :ivar id: the store's id for the lease
    :ivar ttl: the time to live it was granted with, in seconds
    """

    id: int
    ttl: int


@dataclass(frozen=True)
class KeyValue:
    """A key, its value, and etcd's bookkeeping for it.

    :ivar key: the key
    :ivar value: its value
    :ivar create_revision: the store revision at which the key was created (a key
        deleted and put again is created anew)
    :ivar mod_revision: the store revision of the key's last put: the token that
        :meth:`LeaseStore.compare_and_swap` compares
    :ivar version: how many puts the key has had since it was created (1 after the first)
    :ivar lease: the id of the lease the key lives under, or ``None``

    .. versionadded:: 0.2
    """

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int | None


@dataclass(frozen=True)
class CasResult:
    """What :meth:`LeaseStore.compare_and_swap` did.

    :ivar succeeded: whether the key was written
    :ivar kv: on success, the key as written (its ``mod_revision`` is the revision of the
        write); on failure, the key as it is now, or ``None`` if it is absent

    .. versionadded:: 0.2
    """

    succeeded: bool
    kv: KeyValue | None


@dataclass(frozen=True)
class StoreEvent:
    """A change to one key, as a watch reports it.

    :ivar type: ``PUT`` or ``DELETE``
    :ivar key: the key
    :ivar value: the new value (empty for ``DELETE``)
    :ivar revision: the store revision of the change: the key's new ``mod_revision``
        (also :attr:`mod_revision`)
    :ivar create_revision: for ``PUT``, the revision at which the key was created; 0 for
        ``DELETE``, as etcd sends it
    :ivar version: for ``PUT``, how many puts the key has had since it was created; 0
        for ``DELETE``
    :ivar lease: for ``PUT``, the id of the lease the key lives under, or ``None``;
        ``None`` for ``DELETE``

    .. versionchanged:: 0.2
       ``create_revision``, ``version``, ``lease`` and :attr:`mod_revision`.
    """

    type: EventType
    key: str
    value: bytes
    revision: int
    create_revision: int = 0
    version: int = 0
    lease: int | None = None

    @property
    def mod_revision(self) -> int:
        """The store revision of the change: the same as :attr:`revision`.

        .. versionadded:: 0.2
        """
        return self.revision


class WatchStream(Protocol):
    """What :meth:`LeaseStore.watch_prefix` returns: an async iterator of events that
    can be closed early (``contextlib.aclosing`` works with it)."""

    def __aiter__(self) -> AsyncIterator[StoreEvent]: ...

    def __anext__(self) -> Awaitable[StoreEvent]: ...

    def aclose(self) -> Awaitable[object]:
        """Stop watching and release the stream."""
        ...


class LeaseStore(Protocol):
    """An async key-value store with leases, watches, revisions and transactions, with
    etcd's semantics.

    :class:`MemoryStore` and :class:`EtcdStore` implement it, and pass one contract
    test suite. Heartbeats and the members functions need only :meth:`grant`,
    :meth:`keep_alive`, :meth:`revoke`, :meth:`put`, :meth:`get_prefix` and
    :meth:`watch_prefix`, and check only those (see :func:`check_store`).

    .. versionchanged:: 0.2
       :meth:`get`, :meth:`get_prefix_kv`, :meth:`delete`, :meth:`delete_prefix`,
       :meth:`compare_and_swap` and :meth:`txn`; ``KeyValueStore`` is this protocol too.
    """

    async def grant(self, ttl: int) -> Lease:
        """Grant a lease that lives ``ttl`` seconds unless kept alive."""
        ...

    async def keep_alive(self, lease: Lease) -> int:
        """Renew ``lease`` and return its remaining time to live, in seconds.

        :raises LeaseExpired: if the lease is gone
        """
        ...

    async def revoke(self, lease: Lease) -> None:
        """Revoke ``lease`` now, deleting its keys. Revoking a gone lease is not an error."""
        ...

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        """Set ``key`` to ``value``, under ``lease`` if given; return the new revision.

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

        ``on_open``, if given, is called each time the store confirms the watch (for
        etcd, again whenever the stream is made anew): a caller can tell a watch that
        works but is quiet from one that keeps failing.

        :raises StoreCompacted: if ``start_revision`` is older than the kept history
        :raises StoreConnectionError: if the stream breaks; resume from the next revision
        """
        ...

    async def get(self, key: str) -> KeyValue | None:
        """Return ``key`` with its value and revisions, or ``None`` if it is absent.

        .. versionadded:: 0.2
        """
        ...

    async def get_prefix_kv(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Return every key under ``prefix``, sorted by key, and the revision read at.

        .. versionadded:: 0.2
        """
        ...

    async def delete(self, key: str) -> bool:
        """Delete ``key``; return whether it existed. Deleting an absent key changes
        nothing, not even the store revision.

        .. versionadded:: 0.2
        """
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``, at one revision; return how many there were.

        .. versionadded:: 0.2
        """
        ...

    async def compare_and_swap(
        self,
        key: str,
        value: bytes,
        *,
        expected_mod_revision: int,
        lease: Lease | None = None,
    ) -> CasResult:
        """Set ``key`` to ``value`` only if its ``mod_revision`` is
        ``expected_mod_revision`` (0: only if the key is absent), atomically.

        :param lease: the lease to put the key under, if any
        :return: whether it was written, with the key as written, or as it is now
        :raises LeaseExpired: if the comparison held but ``lease`` is gone; nothing is
            written
        :raises ValueError: if ``expected_mod_revision`` is negative, or the value too large

        .. versionadded:: 0.2
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

        .. versionadded:: 0.2
        """
        ...


#: The same protocol as :class:`LeaseStore`, under the name it had while reading keys,
#: deleting and comparing-and-swapping were apart from it.
KeyValueStore = LeaseStore

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
            f"got {type_name(store)} {store!r:.200}{lacks}"
        )
    return cast("LeaseStore", store)
